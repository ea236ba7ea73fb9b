"""`password_policy`: what a password must be, how it is hashed and audited."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from postwarden.policy.models.base import PolicyModel
from postwarden.policy.units import Duration, Seconds

Schedule = Literal["daily", "weekly", "monthly"]


class PasswordAudit(PolicyModel):
    schedule: Schedule = "weekly"
    notify_users: bool = False
    """Tell users whose password fails the audit, not only the administrators."""


class PasswordPolicy(PolicyModel):
    min_length: Annotated[int, Field(ge=8, le=128)] = 12
    min_character_classes: Annotated[int, Field(ge=1, le=4)] = 3
    """Of lower case, upper case, digits and symbols."""
    forbid_common: bool = True
    """Refuse the 10,000 most common passwords."""
    forbid_personal: bool = True
    """Refuse passwords containing the local part, the name or the domain."""
    max_age: Duration | None = None
    """A password older than this stops working at login (IMAP, POP3 and SMTP AUTH),
    ``max_age_grace`` later."""
    max_age_grace: Duration = Seconds(7 * 86400)
    """How long an expired password still works: time to set a new one."""
    max_age_warning: Duration = Seconds(14 * 86400)
    """The password audit tells a user this long before the password expires (with
    ``audit.notify_users``)."""
    hash_scheme: Literal["argon2id", "bcrypt", "sha512-crypt"] = "argon2id"
    audit: PasswordAudit | None = None
