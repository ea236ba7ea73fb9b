"""`notifications`: named channels that events and reports are sent to."""

from __future__ import annotations

from pydantic import Field, model_validator

from postwarden.policy.models.base import PolicyModel
from postwarden.policy.secrets import Secret
from postwarden.policy.units import Address, Phone, Url, invalid


class Webhook(PolicyModel):
    url: Url
    headers: dict[str, str | Secret] = Field(default_factory=dict)
    """Extra HTTP headers; use !secret for tokens."""


class Sms(PolicyModel):
    gateway: Url
    """HTTP endpoint of the SMS gateway; it receives a JSON POST."""
    to: Phone
    token: Secret | None = None
    """Bearer token for the gateway."""


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
