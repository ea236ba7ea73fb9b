"""Sizes, durations, rates, percentages and names: parsed exactly, refused clearly."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic_core import PydanticCustomError

from postwarden.policy import units


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("50MiB", 50 * 1024**2),
        ("2GiB", 2 * 1024**3),
        ("1.5KiB", 1536),
        ("10MB", 10_000_000),
        ("10 mb", 10_000_000),
        ("512", 512),
        (0, 0),
        (1024, 1024),
        ("7B", 7),
    ],
)
def test_sizes(text: Any, expected: int) -> None:
    assert units.parse_size(text) == expected


@pytest.mark.parametrize("text", ["lots", "50XB", "-1MiB", "MiB", True, None, [1], -5, "1,5MiB"])
def test_bad_sizes(text: Any) -> None:
    with pytest.raises(PydanticCustomError):
        units.parse_size(text)


def test_size_prints_as_written() -> None:
    assert str(units.parse_size("50MiB")) == "50MiB"
    assert str(units.parse_size("1000")) == "1000B"
    assert str(units.parse_size("1GiB")) == "1GiB"


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("10m", 600), ("1h", 3600), ("7d", 604800), ("1h30m", 5400), ("2w", 1209600), (0, 0)],
)
def test_durations(text: Any, seconds: int) -> None:
    assert units.parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["10", 600, "10 minutes", "h", "", "1.5h", False])
def test_bad_durations(text: Any) -> None:
    with pytest.raises(PydanticCustomError):
        units.parse_duration(text)


def test_duration_without_unit_hints_at_units() -> None:
    with pytest.raises(PydanticCustomError) as raised:
        units.parse_duration(600)
    assert "no unit" in raised.value.context["message"]  # type: ignore[index]
    assert "10m" in raised.value.context["hint"]  # type: ignore[index]


def test_duration_prints_compactly() -> None:
    assert str(units.parse_duration("90m")) == "1h30m"
    assert str(units.parse_duration("365d")) == "52w1d"


@pytest.mark.parametrize(
    ("text", "count", "window"),
    [("200/h", 200, 3600), ("1000/d", 1000, 86400), ("50/10m", 50, 600), ("5 / s", 5, 1)],
)
def test_rates(text: str, count: int, window: int) -> None:
    rate = units.parse_rate(text)
    assert (rate.count, rate.window) == (count, window)


@pytest.mark.parametrize("text", ["200/hour", "200", "/h", "200/0m", "x/h", 200])
def test_bad_rates(text: Any) -> None:
    with pytest.raises(PydanticCustomError):
        units.parse_rate(text)


def test_rate_prints_as_written() -> None:
    assert str(units.parse_rate("200/h")) == "200/h"
    assert str(units.parse_rate("50/10m")) == "50/10m"


def test_byte_rate() -> None:
    rate = units.parse_byte_rate("1GiB/d")
    assert (rate.size, rate.window) == (1024**3, 86400)
    assert str(rate) == "1GiB/d"
    with pytest.raises(PydanticCustomError):
        units.parse_byte_rate("1GiB")


@pytest.mark.parametrize(("text", "value"), [("2%", 2.0), ("90%", 90.0), ("2.5 %", 2.5)])
def test_percent(text: str, value: float) -> None:
    assert units.parse_percent(text) == value


@pytest.mark.parametrize("text", ["2", 2, "101%", "x%"])
def test_bad_percent(text: Any) -> None:
    with pytest.raises(PydanticCustomError):
        units.parse_percent(text)


@pytest.mark.parametrize(
    "address", ["alice@example.com", "a.b+tag@sub.example.co.uk", "x@xn--bcher-kva.example"]
)
def test_addresses(address: str) -> None:
    assert units.parse_address(address) == address


@pytest.mark.parametrize(
    ("address", "hint"),
    [
        ("Alice@example.com", "alice@example.com"),
        ("alice", "local-part@domain"),
        ("alice@localhost", None),
        (".alice@example.com", None),
        ("al..ice@example.com", None),
        ("alice@-example.com", None),
    ],
)
def test_bad_addresses(address: str, hint: str | None) -> None:
    with pytest.raises(PydanticCustomError) as raised:
        units.parse_address(address)
    if hint:
        assert hint in raised.value.context["hint"]  # type: ignore[index]


@pytest.mark.parametrize("ip", ["0.0.0.0", "::", "224.0.0.1", "ff02::1", "1.2.3", "x"])
def test_ips_that_cannot_send(ip: str) -> None:
    with pytest.raises(PydanticCustomError):
        units.parse_ip(ip)


def test_ipv6_is_canonical() -> None:
    assert units.parse_ip("2001:DB8:0:0::1") == "2001:db8::1"


@pytest.mark.parametrize("name", ["staff", "domain-default", "a_1"])
def test_names(name: str) -> None:
    assert units.parse_name(name) == name


@pytest.mark.parametrize("name", ["Staff", "1st", "", "has space", "x" * 64])
def test_bad_names(name: str) -> None:
    with pytest.raises(PydanticCustomError):
        units.parse_name(name)


@pytest.mark.parametrize("phone", ["15555550100", "+0555", "+1 555 555", 15555550100])
def test_bad_phones(phone: Any) -> None:
    with pytest.raises(PydanticCustomError):
        units.parse_phone(phone)


@pytest.mark.parametrize("url", ["ftp://x.example/", "https://", "not a url", "hooks.example"])
def test_bad_urls(url: str) -> None:
    with pytest.raises(PydanticCustomError):
        units.parse_url(url)


@pytest.mark.parametrize("path", ["relative/cert.pem", "/etc/../root/key", ""])
def test_bad_paths(path: str) -> None:
    with pytest.raises(PydanticCustomError):
        units.parse_absolute_path(path)
