"""`domains`: the mail domains this server is the destination for."""

from __future__ import annotations

from postwarden.policy.models.base import EntryModel
from postwarden.policy.units import Address, DnsLabel, Name


class Domain(EntryModel):
    dkim_selector: DnsLabel | None = None
    """Sign outgoing mail with DKIM under this selector."""
    throttle: Name | None = None
    """Each sender of this domain that has no throttle of its own gets this one, with a
    budget of its own: declared users, and addresses nobody declared that local
    applications send from (relayed from mynetworks)."""
    shared_throttle: Name | None = None
    """One budget for the whole domain: every sender of it together, logged in or
    relayed from mynetworks, counted in addition to each sender's own throttle."""
    ip_pool: Name | None = None
    """Outbound IP pool for senders of this domain that have none of their own."""
    catch_all: Address | None = None
    """Where mail to unknown local parts goes; absent means it is rejected."""
