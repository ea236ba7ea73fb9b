"""Secret values: `!secret NAME` references in the policy, resolved from secrets.yml.

A resolved secret is a ``SecretValue`` whose ``repr`` and ``str`` never show the
value, so that it cannot leak into logs, error messages or summaries by accident.
Only code that writes a config file on purpose calls ``reveal()``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any

from pydantic import PlainValidator, ValidationInfo, WithJsonSchema

from postwarden.policy.secret_types import SecretRef, SecretValue
from postwarden.policy.suggest import did_you_mean
from postwarden.policy.units import describe, invalid, parse_text

PASSWORD_HASHES = "password_hashes"
PASSWORD_SET = "password_set"
"""When each user's password was set (postwarden passwd writes it): what max_age counts from."""
TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


@dataclass(frozen=True)
class Secrets:
    """The decrypted secrets file: named values and the users' password hashes."""

    values: dict[str, str] = field(default_factory=dict)
    password_hashes: dict[str, str] = field(default_factory=dict)
    path: str | None = None
    damaged: bool = False
    """The file could not be read whole; its own errors say why, so references are not
    reported again as unknown."""
    password_set: dict[str, float] = field(default_factory=dict)
    """By address (lower case): when its password was set, epoch seconds."""


def _resolve_secret(value: Any, info: ValidationInfo) -> SecretValue:
    if not isinstance(value, SecretRef):
        got = "plain text" if isinstance(value, str) else describe(value)
        raise invalid(
            "secret",
            f"expected a !secret reference, got {got}",
            "keep the value in the secrets file and write '!secret NAME' here",
        )
    secrets: Secrets | None = (info.context or {}).get("secrets")
    if secrets is not None and secrets.damaged and value.name not in secrets.values:
        return SecretValue(value.name, "")  # the secrets file's own errors say why
    if secrets is None or secrets.path is None:
        raise invalid(
            "secret",
            f"secret {value.name!r} is referenced but no secrets file was found",
            "create secrets.yml beside the policy or pass --secrets FILE",
        )
    if value.name not in secrets.values:
        hint = did_you_mean(value.name, secrets.values) or f"add {value.name!r} to {secrets.path}"
        raise invalid("secret", f"unknown secret {value.name!r}", hint)
    return SecretValue(value.name, secrets.values[value.name])


Secret = Annotated[
    SecretValue,
    PlainValidator(_resolve_secret),
    WithJsonSchema({"type": "string", "description": "a !secret NAME reference to secrets.yml"}),
]


def _text_or_secret(value: Any, info: ValidationInfo) -> str | SecretValue:
    if isinstance(value, SecretRef):
        return _resolve_secret(value, info)
    return parse_text(value)


TextOrSecret = Annotated[
    str | SecretValue,
    PlainValidator(_text_or_secret),
    WithJsonSchema(
        {"type": "string", "description": "text on one line, or a !secret NAME reference"}
    ),
]
"""A value that may be written in the policy or kept in secrets.yml (an HTTP header)."""
