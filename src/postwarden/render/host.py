"""Settings of one mail host that are not policy: where it listens, its name.

They come from the inventory (Ansible host variables) or from `--host-vars
FILE`; the defaults suit an all-in-one host.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, Field

from postwarden.policy.endpoints import (
    Milter,
    Nameserver,
    Port,
    RelayHost,
    TcpListen,
    check_redis_url,
)
from postwarden.policy.models.base import PolicyModel
from postwarden.policy.units import (
    AbsolutePath,
    DomainName,
    Duration,
    Hostname,
    Seconds,
    invalid,
)

LOOPBACK_NETWORKS = ("127.0.0.0/8", "[::1]/128")


def _relaying_network(entry: str) -> str:
    """One of Postfix's mynetworks, in its notation: 192.0.2.0/24 or [2001:db8::]/32."""
    bare = entry
    if entry.startswith("["):
        host, bracket, prefix = entry[1:].partition("]")
        bare = host + prefix if bracket else entry
    try:
        network = ipaddress.ip_network(bare, strict=False)
    except ValueError:
        raise invalid(
            "network", f"{entry!r} is not a network", "write 192.0.2.0/24, or [2001:db8::]/32"
        ) from None
    bracketed = f"[{network.network_address}]/{network.prefixlen}"
    if network.version == 6 and not entry.startswith("["):
        raise invalid("network", "Postfix wants IPv6 networks in brackets", f"write {bracketed}")
    if network.version == 4 and entry.startswith("["):
        raise invalid("network", "only IPv6 networks go in brackets", f"write {network}")
    if network.prefixlen == 0:
        raise invalid(
            "network",
            f"{entry!r} lets every client on the Internet relay: an open relay",
            "list only the host itself and the networks of its own applications",
        )
    return entry


RelayingNetwork = Annotated[str, AfterValidator(_relaying_network)]


class HostSettings(PolicyModel):
    name: Hostname | None = None
    """The host's own name; defaults to server.hostname."""
    mynetworks: list[RelayingNetwork] = Field(default_factory=lambda: list(LOOPBACK_NETWORKS))
    """Clients that may relay without logging in: keep this to the host itself."""
    relayhost: RelayHost | None = None
    """Send all outbound mail through this relay, e.g. '[127.0.0.1]:2525' in a lab."""
    policyd_listen: TcpListen = "127.0.0.1:10040"
    """Where postwarden-policyd answers Postfix's policy requests."""
    policyd_metrics_listen: TcpListen = "127.0.0.1:9466"
    policyd_socketmap_listen: TcpListen = "127.0.0.1:10046"
    runtime_pools: bool = True
    """Postfix asks postwarden-policyd for each sender's outbound transport, so that an
    address can be quarantined without a reload; off, the static table is used."""
    rspamd_milter: Milter = "inet:127.0.0.1:11332"
    smtpd_ports: list[Port] = Field(default_factory=lambda: [25])
    """Ports where other servers deliver mail (port 25)."""
    submission_port: Port | None = 587
    submissions_port: Port | None = 465
    mail_root: AbsolutePath = "/var/vmail"
    """Where Dovecot keeps the mailboxes."""
    dnsbl_zones: list[DomainName] = Field(
        default_factory=lambda: ["zen.spamhaus.org", "bl.spamcop.net", "b.barracudacentral.org"]
    )
    """Blocklists postwarden-policyd watches the outbound addresses on."""
    dnsbl_nameserver: Nameserver | None = None
    """HOST or HOST:PORT of the resolver for those lookups (a local one: Spamhaus refuses
    queries from big public resolvers)."""
    dnsbl_interval: Duration = Seconds(15 * 60)
    policyd_store: Literal["sqlite", "redis"] = "sqlite"
    """sqlite keeps counters on this host; redis shares them between MTAs."""
    redis_url: Annotated[str | None, AfterValidator(check_redis_url)] = None
    policyd_fail_mode: Literal["open", "closed"] = "closed"
    rspamd_fuzzy: bool = True
    """Ask rspamd's public fuzzy servers; turn off where the host cannot reach them."""
    rspamd_test_patterns: bool = False
    """Let rspamd act on the GTUBE-style test strings for add-header and subject rewrite."""


def load_host_settings(path: Path | None) -> HostSettings:
    if path is None:
        return HostSettings()
    from postwarden.policy.settings_file import load_settings_file

    # an inventory's host_vars file as it is: the settings under postwarden_host_settings
    return load_settings_file(path, HostSettings, inventory_key="postwarden_host_settings")
