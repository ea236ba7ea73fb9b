"""`users`: mailboxes, their aliases and who may send as whom."""

from __future__ import annotations

from pydantic import Field

from postwarden.policy.models.base import EntryModel
from postwarden.policy.units import Address, DisplayName, Name, Size


class User(EntryModel):
    name: DisplayName | None = None
    """Display name; also refused inside the password when forbid_personal is on."""
    aliases: list[Address] = Field(default_factory=list)
    """Addresses delivered to this mailbox; the user may also send as them."""
    send_as: list[Address] = Field(default_factory=list)
    """Further addresses this user may use as sender (shared mailboxes, roles)."""
    quota: Size | None = None
    throttle: Name | None = None
    ip_pool: Name | None = None
    disabled: bool = False
    """A disabled user keeps the mailbox but cannot log in or send."""
    recovery_email: Address | None = None
    """An address of the user's outside this server's domains: told when the account
    is suspended (abuse.compromised_login), when its own mailbox cannot be read."""
