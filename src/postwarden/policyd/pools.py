"""Outbound IP pools at run time: which transport a sender's mail leaves through,
with addresses quarantined or released while Postfix keeps running.

Postfix asks through its socketmap table (sender_dependent_default_transport_maps)
and caches an answer for 30 s, so a quarantine takes effect within 30 s, no reload.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from postwarden.policy.models import Policy
from postwarden.policy.models.ip_pools import AddressState
from postwarden.render.postfix import (
    active_transports,
    list_alias,
    list_pool,
    list_transport_name,
    pick,
)

STATES: tuple[AddressState, ...] = ("active", "draining", "quarantined")


@dataclass
class PoolRuntime:
    policy: Policy
    hostname: str
    overrides: dict[str, str] = field(default_factory=dict)
    """Address -> state set at run time; it wins over the policy's state."""
    user_pools: dict[str, str] | None = None
    """Login -> the pool of the user's own mail, for a policy given without its users
    (the daemon's); read from the policy's users when None."""

    def __post_init__(self) -> None:
        if self.user_pools is None:
            self.user_pools = {
                address: user.ip_pool for address, user in self.policy.users.items() if user.ip_pool
            }
        self._list_owners = {
            f"owner-{list_alias(address)}@{self.hostname}": address for address in self.policy.lists
        }

    def addresses(self) -> dict[str, dict[str, str]]:
        """Every pool address with its pool, its policy state and its state now."""
        return {
            member.address: {
                "pool": name,
                "policy": member.state,
                "state": self.overrides.get(member.address, member.state),
            }
            for name, pool in self.policy.ip_pools.items()
            for member in pool.addresses
        }

    def set_state(self, address: str, state: str) -> None:
        if address not in self.addresses():
            raise KeyError(address)
        if state not in STATES:
            raise ValueError(state)
        self.overrides[address] = state

    def lookup(self, key: str) -> str | None:
        """The transport for a sender address or '@domain', or None to fall through.
        A pool with no address left to send from defers its mail: it must not leak out
        through the host's own address."""
        key = key.lower()
        if key.startswith("@"):
            domain = self.policy.domains.get(key[1:])
            return self._transport(domain.ip_pool, key[1:]) if domain else None
        owner_of = self._list_owners.get(key)
        if owner_of is not None:
            pool = list_pool(self.policy, owner_of)
            if pool is None:
                return None
            if self.policy.lists[owner_of].priority != "low":
                return self._transport(pool, key)
            # the low-priority transport is bound to the pool's first address: while that
            # address is quarantined, list mail takes the pool's other addresses instead
            now = active_transports(self.policy, pool, self.overrides)
            as_rendered = active_transports(self.policy, pool)
            if now and as_rendered and now[0] == as_rendered[0]:
                return list_transport_name(pool)
            return self._transport(pool, key)
        local, _, domain_name = key.rpartition("@")
        # Postfix asks for user+extension@domain first; it is the user's mail all the same
        sender = f"{local.partition('+')[0]}@{domain_name}"
        assert self.user_pools is not None
        own_pool = self.user_pools.get(sender)
        if own_pool:
            return self._transport(own_pool, sender)
        domain = self.policy.domains.get(domain_name)
        if domain is not None and domain.ip_pool:
            # spread a domain's senders over its pool, not one address per domain
            return self._transport(domain.ip_pool, sender)
        return None

    def _transport(self, pool: str | None, key: str) -> str | None:
        if pool is None:
            return None
        active = active_transports(self.policy, pool, self.overrides)
        if not active:
            return f"retry:4.7.0 pool {pool} has no active outbound address"
        return pick(active, key).name
