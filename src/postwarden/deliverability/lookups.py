"""DNS lookups for the preflight, through dnspython: each answer once per run.

An answer that says "nothing here" (NXDOMAIN, no record of the type) is an empty
list: that is what the checks judge. A lookup that fails (timeout, SERVFAIL,
REFUSED) raises ``LookupFailed``: nothing is known, and the check says so rather
than guess.
"""

from __future__ import annotations

import ipaddress

import dns.exception
import dns.name
import dns.resolver
import dns.reversename

TIMEOUT = 5.0


class LookupFailed(Exception):
    """The name could not be looked up; its words say which and why."""


class NotAName(ValueError):
    """The text is no domain name: nothing to look up (a broken record, not a
    failed lookup)."""


class Lookups:
    def __init__(self, nameserver: str | None = None, timeout: float = TIMEOUT) -> None:
        """``nameserver``: HOST or HOST:PORT of the server to ask; the system's
        resolver when None."""
        if nameserver is None:
            self.resolver = dns.resolver.Resolver()
        else:
            self.resolver = dns.resolver.Resolver(configure=False)
            host, port = nameserver, ""
            if nameserver.count(":") == 1:  # HOST:PORT; an IPv6 address has more colons
                host, _, port = nameserver.partition(":")
            try:
                ipaddress.ip_address(host.strip("[]"))
                self.resolver.nameservers = [host.strip("[]")]
                if port:
                    self.resolver.port = int(port)
            except ValueError:
                raise ValueError(
                    f"{nameserver!r} is not ADDRESS or ADDRESS:PORT of a DNS server"
                ) from None
        self.resolver.lifetime = timeout
        self._answers: dict[tuple[str, str], list[str]] = {}

    def _ask(self, name: str, kind: str) -> list[str]:
        key = (name.lower().rstrip("."), kind)
        cached = self._answers.get(key)
        if cached is not None:
            return cached
        try:
            query = dns.name.from_text(key[0] + ".")
        except (dns.exception.SyntaxError, dns.exception.FormError):
            raise NotAName(f"{key[0]!r} is not a domain name") from None
        try:
            answer = self.resolver.resolve(query, kind, search=False)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            found: list[str] = []
        except dns.resolver.NoNameservers:
            raise LookupFailed(f"{kind} {key[0]}: no server answered (refused or failed)") from None
        except dns.exception.Timeout:
            raise LookupFailed(
                f"{kind} {key[0]}: no answer within {self.resolver.lifetime:g} s"
            ) from None
        except dns.exception.DNSException as error:
            raise LookupFailed(f"{kind} {key[0]}: {type(error).__name__}") from None
        else:
            if kind == "TXT":
                found = [b"".join(r.strings).decode("utf-8", "replace") for r in answer]
            elif kind == "MX":
                found = [
                    f"{r.preference} {r.exchange.to_text().rstrip('.').lower()}" for r in answer
                ]
            else:
                found = [r.to_text().rstrip(".").lower() for r in answer]
        self._answers[key] = found
        return found

    def txt(self, name: str) -> list[str]:
        return self._ask(name, "TXT")

    def mx(self, name: str) -> list[tuple[int, str]]:
        pairs = (line.split(" ", 1) for line in self._ask(name, "MX"))
        return sorted((int(preference), host) for preference, host in pairs)

    def addresses(self, name: str) -> list[str]:
        """A and AAAA, as addresses in their normal form."""
        return self.family(name, 4) + self.family(name, 6)

    def family(self, name: str, version: int) -> list[str]:
        """A (4) or AAAA (6) only: what SPF asks for a sender of that family."""
        found = self._ask(name, "A" if version == 4 else "AAAA")
        return [str(ipaddress.ip_address(a)) for a in found]

    def ptr(self, address: str) -> list[str]:
        return self._ask(dns.reversename.from_address(address).to_text(), "PTR")

    def a(self, name: str) -> list[str]:
        return self._ask(name, "A")
