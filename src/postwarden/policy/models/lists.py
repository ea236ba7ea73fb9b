"""`lists`: mailing lists, who may post, and how their mail leaves."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from postwarden.policy.models.base import PolicyModel
from postwarden.policy.units import Address, Name


class MailingList(PolicyModel):
    members: list[Address] = Field(min_length=1)
    moderators: list[Address] = Field(default_factory=list)
    posting: Literal["moderators", "members", "anyone"] = "members"
    """Who may post without moderation."""
    denied_posts: Literal["hold", "reject"] = "hold"
    """What happens to a post from someone who may not post."""
    priority: Literal["low", "normal"] = "normal"
    """Low-priority lists leave through a transport of their own with less concurrency."""
    throttle: Name | None = None
