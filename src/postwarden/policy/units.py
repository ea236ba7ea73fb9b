"""Typed values of the policy file: sizes, durations, rates, percentages, names.

Each type is an ``Annotated`` alias: a plain validator that parses the text the
administrator wrote, a serializer that writes it back in canonical form, and a
JSON schema fragment so that editors can check the file while it is typed.
Parsers raise ``PydanticCustomError`` so that the message and hint reach the
user unchanged (see ``postwarden.policy.problems``).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import PlainSerializer, PlainValidator, WithJsonSchema
from pydantic_core import PydanticCustomError

from postwarden.policy.secret_types import SecretRef, SecretValue


def invalid(
    kind: str, message: str, hint: str | None = None, at: str | None = None
) -> PydanticCustomError:
    """An error whose message is shown as written, with an optional hint. ``at``: the
    key of the model the error is about, for a check across its keys, so that the
    error points at that key rather than at the whole block."""
    context: dict[str, Any] = {"message": message}
    if hint:
        context["hint"] = hint
    if at:
        context["at"] = at
    return PydanticCustomError(kind, "{message}", context)


CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
"""Line breaks (also Unicode's), tabs and every other control character: no value that
reaches a config file may hold one, since each would end a line or a field there."""


def one_line(value: Any, what: str, example: str) -> str:
    if isinstance(value, bool) or not isinstance(value, str):
        raise invalid(what, f"expected {what} like '{example}', got {describe(value)}")
    text = value.strip()
    refuse_control(text, what)
    return text


def refuse_control(text: str, what: str) -> None:
    """Refuse a line break or any other control character inside ``text``."""
    found = CONTROL.search(text)
    if found is not None:
        raise invalid(
            "control_character",
            f"{what} cannot hold a line break or control character "
            f"({found.group()!r} in {describe(text)})",
            "write it on one line, without tabs or control characters",
        )


def describe(value: Any) -> str:
    """How a wrong value is named in messages, without echoing secrets or huge inputs."""
    if isinstance(value, SecretRef | SecretValue):
        return "a !secret value"
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, int | float):
        return f"the number {value}"
    if isinstance(value, str):
        shown = value if len(value) <= 60 else value[:57] + "..."
        return f"the text {shown!r}"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return type(value).__name__


# --------------------------------------------------------------------------- sizes

_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "m": 1000**2,
    "mb": 1000**2,
    "g": 1000**3,
    "gb": 1000**3,
    "t": 1000**4,
    "tb": 1000**4,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "tib": 1024**4,
}
_SIZE_RE = re.compile(r"(\d+(?:\.\d+)?)\s*([a-zA-Z]*)")
_SIZE_EXAMPLE = "50MiB"


class ByteSize(int):
    """A number of bytes that prints itself the way an administrator writes it."""

    def __str__(self) -> str:
        for unit, factor in (("TiB", 1024**4), ("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
            if self >= factor and self % factor == 0:
                return f"{self // factor}{unit}"
        return f"{int(self)}B"

    __repr__ = __str__


def parse_size(value: Any) -> ByteSize:
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 0:
            raise invalid("size", f"a size cannot be negative, got {value}")
        return ByteSize(value)
    text = one_line(value, "a size", _SIZE_EXAMPLE)
    match = _SIZE_RE.fullmatch(text)
    factor = _SIZE_UNITS.get(match.group(2).lower()) if match else None
    if match is None or factor is None:
        raise invalid(
            "size",
            f"{text!r} is not a size",
            "write a number and a unit: B, KiB, MiB, GiB, TiB (or KB, MB, GB, TB), "
            f"for example '{_SIZE_EXAMPLE}'",
        )
    return ByteSize(int(float(match.group(1)) * factor))


# ----------------------------------------------------------------------- durations

_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_DURATION_PART = re.compile(r"(\d+)\s*([smhdw])")
_DURATION_RE = re.compile(r"(?:\d+\s*[smhdw]\s*)+")
_DURATION_HINT = "write a number and a unit: s, m, h, d or w, for example '10m', '1h30m', '7d'"


class Seconds(int):
    """A duration in whole seconds that prints itself as '1h30m'."""

    def __str__(self) -> str:
        if self == 0:
            return "0s"
        left, parts = int(self), []
        for unit in ("w", "d", "h", "m", "s"):
            count, left = divmod(left, _DURATION_UNITS[unit])
            if count:
                parts.append(f"{count}{unit}")
        return "".join(parts)

    __repr__ = __str__


def parse_duration(value: Any) -> Seconds:
    if isinstance(value, Seconds):  # already parsed, e.g. copied from another model
        return value
    if isinstance(value, int) and not isinstance(value, bool) and value == 0:
        return Seconds(0)
    if isinstance(value, int | float) and not isinstance(value, bool):
        raise invalid("duration", f"the duration {value} has no unit", _DURATION_HINT)
    text = one_line(value, "a duration", "10m")
    if not _DURATION_RE.fullmatch(text):
        raise invalid("duration", f"{text!r} is not a duration", _DURATION_HINT)
    total = sum(int(n) * _DURATION_UNITS[u] for n, u in _DURATION_PART.findall(text))
    return Seconds(total)


# --------------------------------------------------------------------------- rates

_RATE_RE = re.compile(r"(\d+)\s*/\s*(\w+)")
_RATE_HINT = "write a count per window, for example '200/h', '1000/d' or '50/10m'"


@dataclass(frozen=True, slots=True)
class Rate:
    """At most ``count`` per ``window`` seconds."""

    count: int
    window: Seconds

    def __str__(self) -> str:
        return f"{self.count}/{_window_text(self.window)}"


@dataclass(frozen=True, slots=True)
class ByteRate:
    """At most ``size`` bytes per ``window`` seconds."""

    size: ByteSize
    window: Seconds

    def __str__(self) -> str:
        return f"{self.size}/{_window_text(self.window)}"


def _window_text(window: Seconds) -> str:
    text = str(window)
    return text[1:] if text[0] == "1" and text[1:] in _DURATION_UNITS else text


def _parse_window(text: str, whole: str) -> Seconds:
    unit_only = text if text in _DURATION_UNITS else None
    try:
        window = parse_duration(f"1{unit_only}" if unit_only else text)
    except PydanticCustomError:
        raise invalid("rate", f"{whole!r} has no valid window after '/'", _RATE_HINT) from None
    if window == 0:
        raise invalid("rate", f"{whole!r} has a window of zero", _RATE_HINT)
    return window


def parse_rate(value: Any) -> Rate:
    text = one_line(value, "a rate", "200/h")
    match = _RATE_RE.fullmatch(text)
    if match is None:
        raise invalid("rate", f"{text!r} is not a rate", _RATE_HINT)
    return Rate(int(match.group(1)), _parse_window(match.group(2), text))


def parse_byte_rate(value: Any) -> ByteRate:
    text = one_line(value, "a byte rate", "1GiB/d")
    amount, slash, window = text.partition("/")
    if not slash:
        raise invalid("byte_rate", f"{text!r} is not a byte rate", "for example '1GiB/d'")
    return ByteRate(parse_size(amount.strip()), _parse_window(window.strip(), text))


# --------------------------------------------------------------------- percentages

_PERCENT_RE = re.compile(r"(\d+(?:\.\d+)?)\s*%")


def parse_percent(value: Any) -> float:
    text = one_line(value, "a percentage", "90%")
    match = _PERCENT_RE.fullmatch(text)
    if match is None:
        raise invalid("percent", f"{text!r} is not a percentage", "write it with a %, like '2%'")
    percent = float(match.group(1))
    if percent > 100:
        raise invalid("percent", f"{text} is more than 100%")
    return percent


def _percent_text(value: float) -> str:
    return f"{value:g}%"


# ------------------------------------------------------------------ names, addresses

_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_DOMAIN_RE = re.compile(rf"(?:{_LABEL}\.)+(?:[a-z]{{2,63}}|xn--[a-z0-9-]{{1,59}})")
_ATEXT = r"[a-z0-9!#$%&'*+/=?^_`{|}~-]+"
_LOCAL_RE = re.compile(rf"{_ATEXT}(?:\.{_ATEXT})*")
_NAME_RE = re.compile(r"[a-z][a-z0-9_-]{0,62}")
_LABEL_RE = re.compile(_LABEL)
_PHONE_RE = re.compile(r"\+[1-9][0-9]{6,14}")
_LOCAL_PART_SYNTAX = {"|": "a command to run", "/": "a file to write", "#": "a comment"}
"""Characters RFC 5322 allows to start a local part but that aliases(5) and every
lookup table read as syntax: a list member "|cmd@x" would be a command."""
_SYNTAX_IN_LOCAL_PART = frozenset("!#$%&*/?^`{|}~")
"""Characters RFC 5322 allows in a local part that some target reads as syntax: a
mailbox's home is .../%Ld/%Ln, Dovecot expands %, Alertmanager's to: is a template."""
_PATH_RE = re.compile(r"/[A-Za-z0-9._@+/-]*")
_URL_UNSAFE = re.compile(r"[\s\"<>\\^`{|}]")
_HEADER_NAME_RE = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


def _lower_case_hint(text: str) -> str | None:
    return f"write it in lower case: '{text.lower()}'" if text != text.lower() else None


def parse_domain(value: Any) -> str:
    text = one_line(value, "a domain name", "example.com")
    if len(text) <= 253 and _DOMAIN_RE.fullmatch(text):
        return text
    hint = _lower_case_hint(text)
    if hint is None and not text.isascii():
        hint = "write internationalised names in their xn-- (punycode) form"
    if hint is None and "." not in text:
        hint = "a fully qualified name has at least one dot, like 'mail.example.com'"
    raise invalid("domain", f"{text!r} is not a valid domain name", hint)


def parse_address(value: Any) -> str:
    text = one_line(value, "an email address", "alice@example.com")
    local, at, domain = text.rpartition("@")
    if local[:1] in _LOCAL_PART_SYNTAX:
        raise invalid(
            "address",
            f"{text!r} starts with {local[0]!r}, which Postfix reads as "
            f"{_LOCAL_PART_SYNTAX[local[0]]} in its tables",
            "no mailbox needs such a name; give the address another local part",
        )
    syntax = next((c for c in local if c in _SYNTAX_IN_LOCAL_PART), None)
    if syntax is not None:
        raise invalid(
            "address",
            f"{text!r} holds {syntax!r}, which the files an address lands in read as syntax "
            "(a mailbox path, Dovecot's %variables, Alertmanager's {{templates}})",
            "use letters, digits and . _ + = ' - in the local part",
        )
    if (
        at
        and len(text) <= 254
        and len(local) <= 64
        and _LOCAL_RE.fullmatch(local)
        and _DOMAIN_RE.fullmatch(domain)
    ):
        return text
    hint = _lower_case_hint(text)
    if hint is None and not at:
        hint = "an address has the form local-part@domain"
    raise invalid("address", f"{text!r} is not a valid email address", hint)


def parse_name(value: Any) -> str:
    text = one_line(value, "a name", "staff")
    if _NAME_RE.fullmatch(text):
        return text
    raise invalid(
        "name",
        f"{text!r} is not a valid name",
        "names start with a lower-case letter and use only a-z, 0-9, '-' and '_'",
    )


def parse_dns_label(value: Any) -> str:
    text = one_line(value, "a DNS label", "s2026")
    if _LABEL_RE.fullmatch(text):
        return text
    raise invalid(
        "dns_label",
        f"{text!r} is not a valid DNS label",
        _lower_case_hint(text) or "use a-z, 0-9 and '-', at most 63 characters",
    )


def parse_ip(value: Any) -> str:
    text = one_line(value, "an IP address", "203.0.113.10")
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        raise invalid("ip", f"{text!r} is not an IP address") from None
    if address.is_unspecified or address.is_multicast:
        raise invalid("ip", f"{text} cannot send mail", "give a unicast address")
    return str(address)


def parse_url(value: Any) -> str:
    text = one_line(value, "a URL", "https://hooks.example.net/mail")
    unsafe = _URL_UNSAFE.search(text)
    if unsafe is not None:
        raise invalid(
            "url",
            f"{text!r} holds {unsafe.group()!r}, which a URL may not hold unescaped",
            "percent-encode it, for example a space as %20",
        )
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 - raises ValueError on a port that is not a number
    except ValueError:
        parts = None
    if parts and parts.scheme in ("http", "https") and parts.hostname:
        return text
    raise invalid(
        "url", f"{text!r} is not an http(s) URL", "for example 'https://example.net/hook'"
    )


def parse_phone(value: Any) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        raise invalid(
            "phone",
            f"expected a phone number like '+15555550100', got the number {value}",
            f'YAML reads an unquoted +{value} as a number; quote it: "+{value}"',
        )
    text = one_line(value, "a phone number", "+15555550100")
    if _PHONE_RE.fullmatch(text):
        return text
    raise invalid(
        "phone",
        f"{text!r} is not a phone number in international form",
        "write it as '+' and country code and number, quoted: \"+15555550100\"",
    )


def parse_absolute_path(value: Any) -> str:
    text = one_line(value, "an absolute path", "/etc/ssl/mail.crt")
    if not text.startswith("/"):
        raise invalid(
            "path", f"{text!r} is not an absolute path", "paths on the mail host start with /"
        )
    if ".." in text.split("/") or not _PATH_RE.fullmatch(text):
        raise invalid(
            "path",
            f"{text!r} is not a plain path",
            "use letters, digits and . _ - + @ between the slashes, no '..': "
            "other characters are syntax in the files that name the path",
        )
    return text


def parse_text(value: Any) -> str:
    """Free text on one line: a display name, a header value."""
    return one_line(value, "a text", "Alice Example")


def parse_display_name(value: Any) -> str:
    text = parse_text(value)
    if ":" in text:
        raise invalid(
            "display_name",
            f"{text!r} holds ':', which separates the fields of the user files",
            "leave the ':' out of the name",
        )
    return text


def parse_login(value: Any) -> str:
    """A user name to log in with elsewhere (a relay): printable, no spaces."""
    text = one_line(value, "a login name", "alerts@example.com")
    if not text or any(c.isspace() for c in text):
        raise invalid("login", f"{text!r} is not a login name", "write it without spaces")
    return text


def parse_header_name(value: Any) -> str:
    text = one_line(value, "an HTTP header name", "X-Token")
    if _HEADER_NAME_RE.fullmatch(text):
        return text
    raise invalid(
        "header_name",
        f"{text!r} is not an HTTP header name",
        "use letters, digits and '-', for example 'X-Api-Key'",
    )


def _json(schema: dict[str, Any]) -> WithJsonSchema:
    return WithJsonSchema(schema)


_STR = PlainSerializer(str, return_type=str)

Size = Annotated[
    ByteSize,
    PlainValidator(parse_size),
    _STR,
    _json(
        {
            "anyOf": [
                {"type": "string", "pattern": r"^\d+(\.\d+)?\s*([KMGT]i?B|[KMGTkmgt]|B)?$"},
                {"type": "integer", "minimum": 0},
            ],
            "description": "a size, like 50MiB or 2GiB",
        }
    ),
]
Duration = Annotated[
    Seconds,
    PlainValidator(parse_duration),
    _STR,
    _json(
        {
            "type": "string",
            "pattern": r"^(\d+\s*[smhdw]\s*)+$",
            "description": "a duration, like 10m, 1h or 7d",
        }
    ),
]
MessageRate = Annotated[
    Rate,
    PlainValidator(parse_rate),
    _STR,
    _json(
        {
            "type": "string",
            "pattern": r"^\d+\s*/\s*\w+$",
            "description": "a count per window, like 200/h or 1000/d",
        }
    ),
]
SizeRate = Annotated[
    ByteRate,
    PlainValidator(parse_byte_rate),
    _STR,
    _json({"type": "string", "description": "bytes per window, like 1GiB/d"}),
]
Percent = Annotated[
    float,
    PlainValidator(parse_percent),
    PlainSerializer(_percent_text, return_type=str),
    _json({"type": "string", "pattern": r"^\d+(\.\d+)?\s*%$", "description": "like 90%"}),
]
DomainName = Annotated[
    str,
    PlainValidator(parse_domain),
    _json({"type": "string", "format": "hostname", "description": "a lower-case domain name"}),
]
Hostname = DomainName
Address = Annotated[
    str,
    PlainValidator(parse_address),
    _json({"type": "string", "format": "email", "description": "a lower-case email address"}),
]
Name = Annotated[
    str,
    PlainValidator(parse_name),
    _json({"type": "string", "pattern": "^[a-z][a-z0-9_-]{0,62}$"}),
]
DnsLabel = Annotated[
    str,
    PlainValidator(parse_dns_label),
    _json({"type": "string", "pattern": "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"}),
]
IPAddress = Annotated[
    str,
    PlainValidator(parse_ip),
    _json({"type": "string", "anyOf": [{"format": "ipv4"}, {"format": "ipv6"}]}),
]
Url = Annotated[str, PlainValidator(parse_url), _json({"type": "string", "format": "uri"})]
Phone = Annotated[
    str, PlainValidator(parse_phone), _json({"type": "string", "pattern": r"^\+[1-9][0-9]{6,14}$"})
]
AbsolutePath = Annotated[
    str,
    PlainValidator(parse_absolute_path),
    _json({"type": "string", "pattern": "^/[A-Za-z0-9._@+/-]*$"}),
]
Text = Annotated[
    str,
    PlainValidator(parse_text),
    _json({"type": "string", "pattern": "^[^\\x00-\\x1f\\x7f]*$"}),
]
DisplayName = Annotated[
    str,
    PlainValidator(parse_display_name),
    _json({"type": "string", "pattern": "^[^\\x00-\\x1f\\x7f:]*$"}),
]
Login = Annotated[
    str,
    PlainValidator(parse_login),
    _json({"type": "string", "pattern": "^\\S+$"}),
]
HeaderName = Annotated[
    str,
    PlainValidator(parse_header_name),
    _json({"type": "string", "pattern": "^[!#$%&'*+.^_`|~0-9A-Za-z-]+$"}),
]


def parse_host(value: Any) -> str:
    """A host name, or an IP address written as such."""
    if isinstance(value, str):
        try:
            return str(ipaddress.ip_address(value.strip()))
        except ValueError:
            pass
    return parse_domain(value)


HostOrAddress = Annotated[
    str,
    PlainValidator(parse_host),
    _json({"type": "string", "description": "a host name or an IP address"}),
]
