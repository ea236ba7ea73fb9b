"""SPF (RFC 7208) as a receiver evaluates it, for the questions the preflight asks:
does the domain's record authorize this address, and does the whole record stay
within the 10 DNS lookups a receiver allows?

Written here rather than taken from a library: the one SPF library for Python
(pyspf) resolves through a deprecated dnspython call and global state, and the
preflight needs neither SPF's macros nor its explanations. Mechanisms that depend
on the sender or on macros (``exists``, ``ptr``, a ``%{`` in a domain) cannot be
decided for "mail from this address" in general: they are counted as lookups,
match nothing, and are named, so that a "not authorized" is never a guess.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Literal

from postwarden.deliverability.lookups import LookupFailed, Lookups, NotAName

MAX_LOOKUPS = 10
"""Mechanisms and modifiers that cost a DNS lookup, over the whole evaluation."""
MAX_VOID_LOOKUPS = 2
MAX_MX_NAMES = 10

Result = Literal["pass", "fail", "softfail", "neutral", "none", "permerror", "temperror"]
QUALIFIERS: dict[str, Result] = {"+": "pass", "-": "fail", "~": "softfail", "?": "neutral"}
COSTS_A_LOOKUP = frozenset({"include", "a", "mx", "ptr", "exists"})

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class PermError(Exception):
    """The record is broken for every receiver."""


class TempError(Exception):
    """A lookup failed: nothing is known."""


def spf_records(texts: list[str]) -> list[str]:
    return [t for t in texts if t.lower() == "v=spf1" or t.lower().startswith("v=spf1 ")]


@dataclass
class _Walk:
    family: int = 4
    """The sender's address family when no address is given (counting lookups)."""
    lookups: int = 0
    void: int = 0
    undecided: list[str] = field(default_factory=list)

    def spend(self) -> None:
        self.lookups += 1
        if self.lookups > MAX_LOOKUPS:
            raise PermError(f"more than {MAX_LOOKUPS} DNS lookups")

    def answered(self, found: list[str]) -> list[str]:
        if not found:
            self.void += 1
            if self.void > MAX_VOID_LOOKUPS:
                raise PermError(f"more than {MAX_VOID_LOOKUPS} lookups found nothing")
        return found


@dataclass(frozen=True)
class Evaluation:
    result: Result
    reason: str = ""
    """Why a permerror or temperror, or which mechanism matched."""
    undecided: tuple[str, ...] = ()


def _record(domain: str, lookups: Lookups) -> str | None:
    try:
        records = spf_records(lookups.txt(domain))
    except LookupFailed as error:
        raise TempError(str(error)) from None
    except NotAName as error:
        raise PermError(str(error)) from None
    if len(records) > 1:
        raise PermError(f"{domain} has {len(records)} SPF records; receivers refuse them all")
    return records[0] if records else None


def _network(text: str, default_v4: int, default_v6: int, ip6: bool) -> IPNetwork:
    """ip4:/ip6: networks; a ValueError when it is none, or of the other family."""
    address, _, prefix = text.partition("/")
    bits = int(prefix) if prefix else (default_v6 if ip6 else default_v4)
    network = ipaddress.ip_network(f"{address}/{bits}", strict=False)
    if network.version != (6 if ip6 else 4):
        raise ValueError(f"{text} is an IPv{network.version} network")
    return network


def _prefixes(argument: str) -> tuple[str, int, int]:
    """a:domain/24//64 -> (domain, 24, 64)."""
    domain, v4, v6 = argument, 32, 128
    try:
        if "//" in domain:
            domain, _, six = domain.partition("//")
            v6 = int(six)
        if "/" in domain:
            domain, _, four = domain.partition("/")
            v4 = int(four)
    except ValueError:
        raise PermError(f"{argument}: not a prefix length") from None
    if not (0 <= v4 <= 32 and 0 <= v6 <= 128):
        raise PermError(f"{argument}: not a prefix length")
    return domain, v4, v6


def _matches_host(
    address: ipaddress.IPv4Address | ipaddress.IPv6Address | None,
    names: list[str],
    v4: int,
    v6: int,
    lookups: Lookups,
    walk: _Walk,
) -> bool:
    # a receiver asks for the sender's family only (A for IPv4, AAAA for IPv6)
    version = address.version if address is not None else walk.family
    for name in names:
        try:
            found = walk.answered(lookups.family(name, version))
        except LookupFailed as error:
            raise TempError(str(error)) from None
        except NotAName as error:
            raise PermError(str(error)) from None
        for other in found:
            ip = ipaddress.ip_address(other)
            prefix = v4 if ip.version == 4 else v6
            network = ipaddress.ip_network(f"{ip}/{prefix}", strict=False)
            if address is not None and address.version == ip.version and address in network:
                return True
    return False


def _parse(term: str, domain: str) -> tuple[str, str, str]:
    """A mechanism as (qualifier, kind, argument): "-ip4:192.0.2.0/24" gives
    ("-", "ip4", "192.0.2.0/24"), "a/24" gives ("+", "a", "DOMAIN/24")."""
    qualifier = term[0] if term[0] in QUALIFIERS else "+"
    mechanism = term[1:] if term[0] in QUALIFIERS else term
    kind, _, argument = mechanism.partition(":")
    if "/" in kind:
        kind, _, rest = kind.partition("/")
        argument = f"{argument}/{rest}" if argument else f"{domain}/{rest}"
    return qualifier, kind.lower(), argument


def _matches(
    address: ipaddress.IPv4Address | ipaddress.IPv6Address | None,
    kind: str,
    argument: str,
    domain: str,
    lookups: Lookups,
    walk: _Walk,
) -> bool:
    if kind in ("ip4", "ip6"):
        try:
            network = _network(argument, 32, 128, kind == "ip6")
        except ValueError:
            raise PermError(f"{kind}:{argument}: not a network") from None
        return address is not None and address.version == network.version and address in network
    if kind == "include":
        if not argument:
            raise PermError("include needs a domain")
        inner = _check_host(address, argument, lookups, walk)
        if inner == "none":
            raise PermError(f"include:{argument} has no SPF record")
        return inner == "pass"
    target, v4, v6 = _prefixes(argument or domain)
    target = target or domain
    if kind == "a":
        return _matches_host(address, [target], v4, v6, lookups, walk)
    try:
        exchanges = walk.answered([h for _, h in lookups.mx(target)])
    except LookupFailed as error:
        raise TempError(str(error)) from None
    except NotAName as error:
        raise PermError(str(error)) from None
    if len(exchanges) > MAX_MX_NAMES:
        raise PermError(f"mx:{target}: more than {MAX_MX_NAMES} MX names")
    return _matches_host(address, exchanges, v4, v6, lookups, walk)


def _check_host(
    address: ipaddress.IPv4Address | ipaddress.IPv6Address | None,
    domain: str,
    lookups: Lookups,
    walk: _Walk,
) -> Result:
    """RFC 7208 check_host(); with ``address`` None, every mechanism is walked (none
    matches), which counts the lookups the whole record costs."""
    record = _record(domain, lookups)
    if record is None:
        return "none"
    redirect: str | None = None
    for term in record.split()[1:]:
        name, equals, value = term.partition("=")
        if equals and ":" not in name and "/" not in name:
            if name.lower() == "redirect":
                redirect = value
            continue  # exp= and unknown modifiers change no result
        qualifier, kind, argument = _parse(term, domain)
        if kind not in (*COSTS_A_LOOKUP, "all", "ip4", "ip6"):
            raise PermError(f"{term}: unknown mechanism")
        if kind in COSTS_A_LOOKUP:
            walk.spend()
        if "%{" in argument or kind in ("ptr", "exists"):
            walk.undecided.append(term)
        elif kind == "all":
            # nothing after "all" is ever evaluated, a redirect= included
            return QUALIFIERS[qualifier] if address is not None else "neutral"
        elif _matches(address, kind, argument, domain, lookups, walk):
            return QUALIFIERS[qualifier]
    if redirect is not None:
        walk.spend()
        inner = _check_host(address, redirect, lookups, walk)
        if inner == "none":
            raise PermError(f"redirect={redirect} has no SPF record")
        return inner
    return "neutral"


def _evaluated(
    address: ipaddress.IPv4Address | ipaddress.IPv6Address | None,
    domain: str,
    lookups: Lookups,
    walk: _Walk,
) -> Evaluation:
    try:
        result = _check_host(address, domain, lookups, walk)
    except PermError as error:
        return Evaluation("permerror", str(error), tuple(walk.undecided))
    except TempError as error:
        return Evaluation("temperror", str(error), tuple(walk.undecided))
    return Evaluation(result, "", tuple(walk.undecided))


def evaluate(address: str, domain: str, lookups: Lookups) -> Evaluation:
    """The result a receiver gets for mail from ``address`` with a sender of ``domain``."""
    return _evaluated(ipaddress.ip_address(address), domain, lookups, _Walk())


def lookups_needed(domain: str, lookups: Lookups, family: int = 4) -> tuple[int, Evaluation]:
    """How many of the 10 lookups the whole record costs, walked to its end, for a
    sender of this address family."""
    walk = _Walk(family)
    evaluation = _evaluated(None, domain, lookups, walk)
    return walk.lookups, evaluation


def direct_networks(record: str) -> list[IPNetwork]:
    """The ip4:/ip6: networks a record authorizes itself (not through include)."""
    found = []
    for term in record.split()[1:]:
        qualifier, kind, argument = _parse(term, "")
        if qualifier == "+" and kind in ("ip4", "ip6"):
            try:
                found.append(_network(argument, 32, 128, kind == "ip6"))
            except ValueError:
                continue
    return found
