"""`throttles`: named outbound limits, referenced by domains, users and lists."""

from __future__ import annotations

from typing import Literal

from pydantic import model_validator

from postwarden.policy.models.base import PolicyModel
from postwarden.policy.units import MessageRate, SizeRate, invalid

ThrottleAction = Literal["defer", "reject", "hold", "notify"]


class Throttle(PolicyModel):
    messages: MessageRate | None = None
    recipients: MessageRate | None = None
    bytes: SizeRate | None = None
    action: ThrottleAction = "defer"
    """defer (4xx, the client retries), reject (5xx), hold (for review) or notify only."""

    @model_validator(mode="after")
    def _has_a_limit(self) -> Throttle:
        if self.messages is None and self.recipients is None and self.bytes is None:
            raise invalid(
                "throttle",
                "a throttle needs at least one limit",
                "set messages, recipients or bytes, for example 'messages: 200/h'",
            )
        return self
