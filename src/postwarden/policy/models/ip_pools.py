"""`ip_pools`: outbound addresses grouped in pools that can fail over."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from postwarden.policy.models.base import PolicyModel
from postwarden.policy.units import Hostname, IPAddress, Name

AddressState = Literal["active", "draining", "quarantined"]


class PoolAddress(PolicyModel):
    address: IPAddress
    state: AddressState = "active"
    """draining and quarantined addresses take no new mail."""
    helo: Hostname | None = None
    """HELO name for this address when it differs from the pool's."""


class IpPool(PolicyModel):
    helo: Hostname
    """HELO name; its A record must point at the pool's addresses (PTR too)."""
    addresses: list[PoolAddress] = Field(min_length=1)
    failover: Name | None = None
    """Pool that carries this pool's mail when none of its addresses is active."""
