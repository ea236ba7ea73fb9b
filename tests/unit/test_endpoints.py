"""Listen addresses, relay hosts, milters and name servers in host and daemon settings:
each is parsed whole and written back in one canonical form, or refused with a hint."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from postwarden.cli import app
from postwarden.policy.endpoints import (
    parse_listen,
    parse_milter,
    parse_nameserver,
    parse_relayhost,
    parse_tcp_listen,
)
from postwarden.policyd.settings import PolicydSettings
from postwarden.render.host import HostSettings

GOOD = [
    (parse_tcp_listen, "127.0.0.1:10040", "127.0.0.1:10040"),
    (parse_tcp_listen, " [::1]:9466 ", "[::1]:9466"),
    (parse_tcp_listen, "[0:0::1]:9466", "[::1]:9466"),
    (parse_tcp_listen, "0.0.0.0:9466", "0.0.0.0:9466"),
    (parse_listen, "unix:/run/postwarden/policy.sock", "unix:/run/postwarden/policy.sock"),
    (parse_relayhost, "[127.0.0.1]:2525", "[127.0.0.1]:2525"),
    (parse_relayhost, "smtp.example.net", "smtp.example.net"),
    (parse_relayhost, "smtp.example.net:587", "smtp.example.net:587"),
    (parse_relayhost, "[localhost]", "[localhost]"),
    (parse_milter, "inet:127.0.0.1:11332", "inet:127.0.0.1:11332"),
    (parse_milter, "inet:localhost:11332", "inet:localhost:11332"),
    (parse_milter, "unix:/run/rspamd/milter.sock", "unix:/run/rspamd/milter.sock"),
    (parse_nameserver, "127.0.0.53", "127.0.0.53"),
    (parse_nameserver, "127.0.0.1:5353", "127.0.0.1:5353"),
    (parse_nameserver, "[::1]:53", "[::1]:53"),
]


@pytest.mark.parametrize(("parse", "text", "canonical"), GOOD)
def test_good_addresses_are_read_whole(parse: Any, text: str, canonical: str) -> None:
    assert parse(text) == canonical


BAD = [
    (parse_tcp_listen, "localhost:10040", "does not name one address"),
    (parse_tcp_listen, ":10040", "does not name one address"),
    (parse_tcp_listen, "*:10040", "does not name one address"),
    (parse_tcp_listen, "127.0.0.1", "is not HOST:PORT"),
    (parse_tcp_listen, "::1:10040", "is not HOST:PORT"),
    (parse_tcp_listen, "127.0.0.1:0", "no valid port"),
    (parse_tcp_listen, "127.0.0.1:65536", "no valid port"),
    (parse_tcp_listen, "127.0.0.1:10040\nx", "line break"),
    (parse_tcp_listen, "mail.example.com:10040", "not an IP address"),
    (parse_listen, "unix:run/policy.sock", "not an absolute path"),
    (parse_listen, "unix:/run/a b.sock", "not a plain path"),
    (parse_relayhost, "[127.0.0.1]x", "not a relay host"),
    (parse_relayhost, "[127.0.0.1]:25 relay_domains=static:ALL", "no valid port"),
    (parse_relayhost, "relay,other.example.net", "not a valid domain name"),
    (parse_milter, "127.0.0.1:11332", "not a milter address"),
    (parse_milter, "inet:127.0.0.1:11332, inet:10.0.0.1:1", "is not HOST:PORT"),
    (parse_nameserver, "dns.example.net", "not an IP address"),
]


@pytest.mark.parametrize(("parse", "text", "message"), BAD)
def test_bad_addresses_are_refused_with_a_reason(parse: Any, text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse(text)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("policyd_listen", "localhost:10040"),
        ("policyd_metrics_listen", ":9466"),
        ("relayhost", "[x]\nrelay_domains = static:ALL"),
        ("rspamd_milter", "inet:127.0.0.1:11332\nsmtpd_milters ="),
        ("mail_root", "/var/vmail\nmail_uid = root"),
        ("mail_root", "/var/v mail"),
        ("dnsbl_zones", ["zen.spamhaus.org bad"]),
        ("redis_url", "redis://:pw@10.0.0.5:6379/0\nx"),
        ("smtpd_ports", [0]),
        ("submission_port", 70000),
        ("mynetworks", ["[10.0.0.0]/8"]),
    ],
)
def test_host_settings_refuse_what_would_land_badly(key: str, value: object) -> None:
    with pytest.raises(ValidationError):
        HostSettings.model_validate({key: value})


def test_the_daemons_settings_refuse_a_listen_address_that_means_everything() -> None:
    with pytest.raises(ValidationError, match="does not name one address"):
        PolicydSettings.model_validate({"socketmap_listen": ":10046"})
    with pytest.raises(ValidationError):
        PolicydSettings.model_validate({"listen": []})


def test_the_command_line_refuses_a_bad_listen_address_without_a_traceback() -> None:
    result = CliRunner().invoke(app, ["policyd", "--listen", "localhost:10040", "--check"])
    assert result.exit_code == 2
    assert "--listen: 'localhost:10040' does not name one address to listen on" in result.output
    assert "Traceback" not in result.output
