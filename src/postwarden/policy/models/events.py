"""`events`: what raises a notification, and to which channels.

Each event kind takes exactly the fields that make sense for it: a threshold
where the kind measures something, nothing extra where it does not. The kinds
form a closed set; a new kind is added here deliberately, with its fields.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from postwarden.policy.models.base import PolicyModel
from postwarden.policy.units import ByteSize, Duration, Name, Percent, Seconds, Size, invalid

DEFAULT_COOLDOWN = Seconds(15 * 60)
DEFAULT_FOR = Seconds(5 * 60)

Notify = Annotated[list[Name], Field(min_length=1)]


class _Event(PolicyModel):
    notify: Notify
    """Notification channels, by name."""
    cooldown: Duration = DEFAULT_COOLDOWN
    """The same event for the same subject is sent at most once per cooldown."""


class SimpleEvent(_Event):
    on: Literal[
        "abuse.internal_spammer",
        "abuse.bad_smtp_session",
        "abuse.auth_failures",
        "abuse.compromised_login",
        "throttle.hit",
        "spam.outbound",
        "ip.blacklisted",
        "password.audit_failed",
        "system.store",
    ]


class ListPostHeldEvent(_Event):
    on: Literal["list.post_held"]
    notify: list[Name] = Field(default_factory=list)
    notify_moderators: bool = False
    """Email the held list's own moderators too (through server.notification_relay)."""

    @model_validator(mode="after")
    def _someone_is_told(self) -> ListPostHeldEvent:
        if not self.notify and not self.notify_moderators:
            raise invalid(
                "event",
                "list.post_held notifies nobody",
                "name channels in notify:, or set notify_moderators: true",
            )
        return self


class LargeMessageEvent(_Event):
    on: Literal["message.large"]
    above: Size
    """Messages larger than this raise the event."""


class QueueSizeEvent(_Event):
    on: Literal["queue.size"]
    above: Annotated[int, Field(ge=1)]
    """Messages in the queue."""
    for_: Duration = Field(default=DEFAULT_FOR, alias="for")
    """How long the queue must stay above the threshold."""


class SystemUsageEvent(_Event):
    on: Literal["system.memory", "system.disk"]
    above: Percent
    for_: Duration = Field(default=DEFAULT_FOR, alias="for")


Event = Annotated[
    SimpleEvent | ListPostHeldEvent | LargeMessageEvent | QueueSizeEvent | SystemUsageEvent,
    Field(discriminator="on"),
]

EVENT_KINDS: tuple[str, ...] = (
    *SimpleEvent.model_fields["on"].annotation.__args__,  # type: ignore[union-attr]
    "list.post_held",
    "message.large",
    "queue.size",
    "system.memory",
    "system.disk",
)

__all__ = ["EVENT_KINDS", "ByteSize", "Event"]
