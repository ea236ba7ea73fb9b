"""Watch the outbound addresses on DNS blocklists; quarantine one that gets listed.

Every interval each pool address that still sends is looked up in each zone
(``10.113.0.203.zen.spamhaus.org``). A listing quarantines the address at run
time, so Postfix stops using it within 30 s, and raises ``ip.blacklisted``.
Releasing it again is the administrator's call (``postwarden pool activate``):
being delisted takes a request to the list's operator, not a timer.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable
from dataclasses import dataclass

import dns.asyncresolver
import dns.exception
import dns.resolver

log = logging.getLogger("postwarden.policyd")

DEFAULT_ZONES = ("zen.spamhaus.org", "bl.spamcop.net", "b.barracudacentral.org")
REFUSED = ipaddress.ip_network("127.255.255.0/24")
"""Spamhaus answers from this range when it refuses a query (e.g. from a public
resolver): an error, not a listing."""


class LookupFailed(Exception):
    """The zone could not be asked; nothing is known about the address."""


def query_name(address: str, zone: str) -> str:
    ip = ipaddress.ip_address(address)
    if ip.version == 4:
        return ".".join(reversed(str(ip).split("."))) + f".{zone}"
    nibbles = ip.exploded.replace(":", "")
    return ".".join(reversed(nibbles)) + f".{zone}"


def make_resolver(nameserver: str | None, timeout: float = 5.0) -> dns.asyncresolver.Resolver:
    """The system's resolver, or one server given as HOST or HOST:PORT."""
    if nameserver is None:
        resolver = dns.asyncresolver.Resolver()
    else:
        resolver = dns.asyncresolver.Resolver(configure=False)
        host, port = nameserver, ""
        if nameserver.count(":") == 1:  # HOST:PORT; an IPv6 address has more colons
            host, _, port = nameserver.partition(":")
        resolver.nameservers = [host]
        if port:
            resolver.port = int(port)
    resolver.lifetime = timeout
    return resolver


async def listing(resolver: dns.asyncresolver.Resolver, address: str, zone: str) -> str | None:
    """The zone's answer when the address is listed, None when it is not."""
    try:
        answer = await resolver.resolve(query_name(address, zone), "A")
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        return None
    except dns.exception.DNSException as error:
        raise LookupFailed(f"{zone}: {type(error).__name__}") from None
    codes = [str(record) for record in answer]
    if all(ipaddress.ip_address(code) in REFUSED for code in codes):
        raise LookupFailed(f"{zone} refused the query ({', '.join(codes)})")
    return ", ".join(codes)


@dataclass
class BlocklistWatch:
    zones: tuple[str, ...]
    resolver: dns.asyncresolver.Resolver
    addresses: Callable[[], list[str]]
    """The addresses to watch now: those still taking mail."""
    on_listed: Callable[[str, str, str], None]
    """(address, zone, answer)"""

    async def check_all(self) -> int:
        """One round over every address and zone; returns how many were listed."""
        listed = 0
        for address in self.addresses():
            for zone in self.zones:
                try:
                    answer = await listing(self.resolver, address, zone)
                except LookupFailed as error:
                    log.warning("blocklist check of %s: %s", address, error)
                    continue
                if answer is not None:
                    listed += 1
                    self.on_listed(address, zone, answer)
                    break
        return listed
