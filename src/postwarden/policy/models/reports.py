"""`reports`: what is reported, how often, and to whom."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from postwarden.policy.models.base import PolicyModel
from postwarden.policy.units import Name

ReportKind = Literal["smtp_out_usage", "smtp_out_connections", "outgoing_spam", "abuse_detection"]


class Report(PolicyModel):
    include: list[ReportKind] = Field(min_length=1)
    schedule: Literal["daily", "weekly", "monthly"] = "weekly"
    send_to: list[Name] = Field(min_length=1)
    """Email notification channels that receive the report."""
