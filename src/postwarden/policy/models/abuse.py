"""`abuse`: detection of internal spammers, bad SMTP sessions and outbound spam."""

from __future__ import annotations

import itertools
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from postwarden.policy.models.base import PolicyModel
from postwarden.policy.units import Duration, Percent, invalid


class InternalSpammer(PolicyModel):
    same_size_messages: Annotated[int, Field(ge=2)]
    """This many messages of about the same size from one sender ..."""
    within: Duration
    """... within this window trip the rule."""
    size_tolerance: Percent = 0.0
    """Messages whose sizes differ by at most this share count as the same size."""
    action: Literal["hold", "defer", "reject", "notify"] = "hold"

    @field_validator("size_tolerance")
    @classmethod
    def _tolerance_is_small(cls, value: float) -> float:
        if value > 50:
            raise invalid(
                "percent",
                f"a size tolerance of {value:g}% matches nearly every message",
                "use a few percent, like '2%'",
            )
        return value


class BadSmtpSessions(PolicyModel):
    invalid_recipients: Annotated[int, Field(ge=1)] | None = None
    """Unknown local recipients from one client IP ..."""
    auth_failures: Annotated[int, Field(ge=1)] | None = None
    """... or failed logins from one client IP ..."""
    within: Duration
    """... within this window ban the IP ..."""
    ban_for: Duration
    """... for this long."""

    @model_validator(mode="after")
    def _has_a_trigger(self) -> BadSmtpSessions:
        if self.invalid_recipients is None and self.auth_failures is None:
            raise invalid(
                "bad_smtp_sessions",
                "bad_smtp_sessions needs invalid_recipients, auth_failures or both",
            )
        return self


class OutboundSpam(PolicyModel):
    """rspamd scores for mail from authenticated senders."""

    add_header_score: float | None = None
    hold_score: float | None = None
    reject_score: float | None = None

    @model_validator(mode="after")
    def _ordered(self) -> OutboundSpam:
        named = [
            (n, s)
            for n, s in (
                ("add_header_score", self.add_header_score),
                ("hold_score", self.hold_score),
                ("reject_score", self.reject_score),
            )
            if s is not None
        ]
        if not named:
            raise invalid("outbound_spam", "outbound_spam needs at least one score")
        for (low_name, low), (high_name, high) in itertools.pairwise(named):
            if low >= high:
                raise invalid(
                    "outbound_spam",
                    f"{low_name} ({low:g}) must be below {high_name} ({high:g})",
                    "scores rise from add_header to hold to reject",
                    at=low_name,
                )
        return self


SignalKind = Literal["throttle", "same_size", "spam", "client_addresses"]
SIGNAL_KINDS: tuple[SignalKind, ...] = ("throttle", "same_size", "spam", "client_addresses")


class CompromisedLogin(PolicyModel):
    """Suspend a login whose signs of a stolen password line up. The signs, each
    counted once however often it shows: a throttle refused, held or flagged its mail;
    internal_spammer tripped on it; rspamd held or rejected its mail (outbound_spam);
    it logged in from more client addresses than ``client_addresses``."""

    within: Duration
    """The signals must all show within this window ..."""
    signals: Annotated[int, Field(ge=1, le=len(SIGNAL_KINDS))] = 2
    """... and this many different kinds of them suspend the login."""
    client_addresses: Annotated[int, Field(ge=1)] | None = None
    """Logins from more distinct client addresses than this within the window are a
    signal (unset: where a login comes from is not one)."""


class Abuse(PolicyModel):
    internal_spammer: InternalSpammer | None = None
    bad_smtp_sessions: BadSmtpSessions | None = None
    outbound_spam: OutboundSpam | None = None
    compromised_login: CompromisedLogin | None = None
