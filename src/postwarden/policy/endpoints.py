"""Where a host listens and what it connects to: typed addresses for host settings and
the daemon's settings.

Each of these lands in a config file (main.cf, master.cf, dovecot.conf,
prometheus.yml) or is bound by the daemon, so each is parsed whole: a literal IP
address (never a name that resolves to every interface), a port in range, a path
of plain characters. ``localhost:PORT`` and ``:PORT`` are refused with a hint
rather than guessed at.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import Field, PlainValidator, WithJsonSchema

from postwarden.policy.units import invalid, one_line, parse_absolute_path, parse_host

Port = Annotated[int, Field(ge=1, le=65535)]

_PORT_RE = re.compile(r"[0-9]{1,5}")


def _port(text: str, whole: str, example: str) -> int:
    if not _PORT_RE.fullmatch(text) or not 1 <= int(text) <= 65535:
        raise invalid("port", f"{whole!r} has no valid port", f"for example '{example}'")
    return int(text)


def split_host_port(text: str, example: str) -> tuple[str, str]:
    """'192.0.2.1:25' or '[2001:db8::1]:25' -> (host, port text); the host unbracketed."""
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket or not rest.startswith(":"):
            raise invalid("address", f"{text!r} is not HOST:PORT", f"for example '{example}'")
        return host, rest[1:]
    host, colon, port = text.rpartition(":")
    if not colon or ":" in host:
        raise invalid(
            "address",
            f"{text!r} is not HOST:PORT",
            f"for example '{example}'; write IPv6 addresses in brackets: '[::1]:10040'",
        )
    return host, port


def _ip_literal(
    host: str, whole: str, example: str
) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    if host in ("", "*", "localhost"):
        raise invalid(
            "listen",
            f"{whole!r} does not name one address to listen on",
            f"write the address itself, for example '{example}' (loopback) "
            "or '0.0.0.0:PORT' to listen on every interface on purpose",
        )
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        raise invalid(
            "listen", f"{whole!r}: {host!r} is not an IP address", f"for example '{example}'"
        ) from None


def parse_tcp_listen(value: Any) -> str:
    """IP:PORT or [IPv6]:PORT, in canonical form."""
    example = "127.0.0.1:9466"
    text = one_line(value, "a listen address", example)
    host, port = split_host_port(text, example)
    address = _ip_literal(host, text, example)
    number = _port(port, text, example)
    return f"[{address}]:{number}" if address.version == 6 else f"{address}:{number}"


def parse_listen(value: Any) -> str:
    """A TCP listen address, or unix:/PATH."""
    if isinstance(value, str) and value.strip().startswith("unix:"):
        return "unix:" + parse_absolute_path(value.strip().removeprefix("unix:"))
    return parse_tcp_listen(value)


def _connect_host(host: str) -> str:
    """A host to connect to: a name (localhost too) or an IP address."""
    return "localhost" if host == "localhost" else parse_host(host)


def _bracketed(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def parse_relayhost(value: Any) -> str:
    """Postfix's relayhost: HOST, [HOST] (no MX lookup), either with :PORT."""
    example = "[smtp.example.net]:587"
    text = one_line(value, "a relay host", example)
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise invalid("relayhost", f"{text!r} is not a relay host", f"for example '{example}'")
        port = f":{_port(rest[1:], text, example)}" if rest else ""
        return f"[{_connect_host(host)}]{port}"
    host, colon, port = text.partition(":")
    return _connect_host(host) + (f":{_port(port, text, example)}" if colon else "")


def parse_milter(value: Any) -> str:
    """A milter: inet:HOST:PORT or unix:/PATH."""
    example = "inet:127.0.0.1:11332"
    text = one_line(value, "a milter address", example)
    if text.startswith("unix:"):
        return "unix:" + parse_absolute_path(text.removeprefix("unix:"))
    if text.startswith("inet:"):
        host, port = split_host_port(text.removeprefix("inet:"), example)
        return f"inet:{_bracketed(_connect_host(host))}:{_port(port, text, example)}"
    raise invalid("milter", f"{text!r} is not a milter address", f"for example '{example}'")


def parse_nameserver(value: Any) -> str:
    """A resolver: an IP address, optionally with :PORT ([IPv6]:PORT)."""
    example = "127.0.0.53"
    text = one_line(value, "a name server", example)
    if text.startswith("[") or text.count(":") == 1:
        host, port = split_host_port(text, f"{example}:53")
        address = _ip_literal(host, text, example)
        return f"{_bracketed(str(address))}:{_port(port, text, '127.0.0.53:53')}"
    return str(_ip_literal(text, text, example))


def check_redis_url(value: str | None) -> str | None:
    """``value`` if the daemon can connect with it, else a settings error. Shared so
    that the host settings rendering policyd.yml can refuse the same URLs."""
    if value is None:
        return value
    if not isinstance(value, str) or any(c.isspace() or c in "\x00\x7f" for c in value):
        # never repeated: it may hold the password
        raise invalid("redis_url", "not a valid Redis URL: it holds a space or a line break")
    # the messages never repeat the URL: it may hold the password
    example = "use redis://[:PASSWORD@]HOST[:PORT][/DB]"
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError on a port that is not a number
    except ValueError:
        raise invalid("redis_url", "not a valid Redis URL", example) from None
    if parts.scheme == "rediss":
        raise invalid(
            "redis_url",
            "rediss:// (Redis over TLS) is not supported",
            "reach Redis over a private network or a TLS tunnel (stunnel, spiped) "
            "and point redis:// at its local end",
        )
    if parts.scheme != "redis":
        scheme = f"{parts.scheme}://" if parts.scheme else "a URL without a scheme"
        raise invalid("redis_url", f"{scheme} is not supported", example)
    if not parts.hostname:
        raise invalid("redis_url", "the Redis URL has no host", example)
    database = parts.path.strip("/")
    if database and not database.isdigit():
        raise invalid("redis_url", "the database after the host must be a number", example)
    return value


TcpListen = Annotated[
    str,
    PlainValidator(parse_tcp_listen),
    WithJsonSchema({"type": "string", "description": "IP:PORT or [IPv6]:PORT"}),
]
Listen = Annotated[
    str,
    PlainValidator(parse_listen),
    WithJsonSchema({"type": "string", "description": "IP:PORT, [IPv6]:PORT or unix:/PATH"}),
]
RelayHost = Annotated[
    str,
    PlainValidator(parse_relayhost),
    WithJsonSchema({"type": "string", "description": "HOST or [HOST], with an optional :PORT"}),
]
Milter = Annotated[
    str,
    PlainValidator(parse_milter),
    WithJsonSchema({"type": "string", "description": "inet:HOST:PORT or unix:/PATH"}),
]
Nameserver = Annotated[
    str,
    PlainValidator(parse_nameserver),
    WithJsonSchema({"type": "string", "description": "an IP address, optionally with :PORT"}),
]
