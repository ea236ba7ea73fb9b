"""`notifications`: named channels that events and reports are sent to."""

from __future__ import annotations

from pydantic import Field, model_validator

from postwarden.policy.models.base import PolicyModel
from postwarden.policy.secret_types import SecretValue
from postwarden.policy.secrets import Secret, TextOrSecret
from postwarden.policy.units import (
    Address,
    HeaderName,
    Phone,
    Url,
    invalid,
    refuse_control,
)


def _fits_a_header(value: SecretValue | None) -> None:
    """A secret sent as an HTTP header value: a line break there would add headers."""
    if value is not None:
        try:
            refuse_control(value.reveal(), "a secret sent in an HTTP header")
        except ValueError:
            # the message must not show the value: name the secret only
            raise invalid(
                "control_character",
                f"secret {value.name!r} holds a line break or control character, "
                "and is sent in an HTTP header",
                "store the token on one line in the secrets file",
            ) from None


class Webhook(PolicyModel):
    url: Url
    headers: dict[HeaderName, TextOrSecret] = Field(default_factory=dict)
    """Extra HTTP headers; use !secret for tokens."""

    @model_validator(mode="after")
    def _secrets_fit_headers(self) -> Webhook:
        for value in self.headers.values():
            if isinstance(value, SecretValue):
                _fits_a_header(value)
        return self


class Sms(PolicyModel):
    gateway: Url
    """HTTP endpoint of the SMS gateway; it receives a JSON POST."""
    to: Phone
    token: Secret | None = None
    """Bearer token for the gateway."""

    @model_validator(mode="after")
    def _token_fits_a_header(self) -> Sms:
        _fits_a_header(self.token)
        return self


class Channel(PolicyModel):
    email: list[Address] | None = Field(default=None, min_length=1)
    webhook: Webhook | None = None
    sms: Sms | None = None

    @model_validator(mode="after")
    def _exactly_one_kind(self) -> Channel:
        kinds = [k for k in ("email", "webhook", "sms") if getattr(self, k) is not None]
        if not kinds:
            raise invalid(
                "channel", "a channel needs one of email, webhook or sms", "add one of them"
            )
        if len(kinds) > 1:
            raise invalid(
                "channel",
                f"a channel is exactly one of email, webhook or sms, not {' and '.join(kinds)}",
                "declare one channel per kind and name each in notify:",
            )
        return self

    @property
    def kind(self) -> str:
        return "email" if self.email else "webhook" if self.webhook else "sms"
