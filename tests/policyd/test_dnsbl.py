"""Blocklist lookups against a real (tiny) DNS server."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from postwarden.policyd.dnsbl import (
    BlocklistWatch,
    LookupFailed,
    listing,
    make_resolver,
    query_name,
)
from tests.fake_dns import FakeDns


@pytest.fixture
def dns_server() -> Iterator[FakeDns]:
    server = FakeDns()
    yield server
    server.close()


def test_query_names() -> None:
    assert query_name("203.0.113.10", "zen.example") == "10.113.0.203.zen.example"
    assert query_name("2001:db8::1", "bl.example") == (
        "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.bl.example"
    )


async def test_listed_and_not_listed(dns_server: FakeDns) -> None:
    dns_server.answers["10.113.0.203.bl.test."] = "127.0.0.2"
    resolver = make_resolver(dns_server.address, timeout=2)
    assert await listing(resolver, "203.0.113.10", "bl.test") == "127.0.0.2"
    assert await listing(resolver, "203.0.113.11", "bl.test") is None


async def test_a_refused_query_is_no_listing(dns_server: FakeDns) -> None:
    dns_server.answers["10.113.0.203.zen.test."] = "127.255.255.254"
    resolver = make_resolver(dns_server.address, timeout=2)
    with pytest.raises(LookupFailed, match="refused"):
        await listing(resolver, "203.0.113.10", "zen.test")


async def test_a_silent_resolver_is_a_failed_lookup(dns_server: FakeDns) -> None:
    dns_server.silent = True
    resolver = make_resolver(dns_server.address, timeout=0.5)
    with pytest.raises(LookupFailed):
        await listing(resolver, "203.0.113.10", "bl.test")


async def test_the_watch_reports_each_listed_address_once(dns_server: FakeDns) -> None:
    dns_server.answers["11.113.0.203.two.test."] = "127.0.0.3"
    found: list[tuple[str, str, str]] = []
    watch = BlocklistWatch(
        ("one.test", "two.test"),
        make_resolver(dns_server.address, timeout=2),
        lambda: ["203.0.113.10", "203.0.113.11"],
        lambda address, zone, answer: found.append((address, zone, answer)),
    )
    assert await watch.check_all() == 1
    assert found == [("203.0.113.11", "two.test", "127.0.0.3")]
    assert "10.113.0.203.one.test." in dns_server.queries
