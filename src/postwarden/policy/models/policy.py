"""The whole policy file: one typed root with a field per section."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from postwarden.policy.models.abuse import Abuse
from postwarden.policy.models.base import PolicyModel
from postwarden.policy.models.domains import Domain
from postwarden.policy.models.events import Event
from postwarden.policy.models.ip_pools import IpPool
from postwarden.policy.models.lists import MailingList
from postwarden.policy.models.notifications import Channel
from postwarden.policy.models.password_policy import PasswordPolicy
from postwarden.policy.models.reports import Report
from postwarden.policy.models.server import Server
from postwarden.policy.models.throttles import Throttle
from postwarden.policy.models.users import User
from postwarden.policy.units import Address, DomainName, Name


class Policy(PolicyModel):
    """A postwarden policy: everything a mail host enforces, in one file."""

    version: Literal[1] = 1
    server: Server
    password_policy: PasswordPolicy = Field(default_factory=PasswordPolicy)
    domains: dict[DomainName, Domain] = Field(min_length=1)
    users: dict[Address, User] = Field(default_factory=dict)
    lists: dict[Address, MailingList] = Field(default_factory=dict)
    throttles: dict[Name, Throttle] = Field(default_factory=dict)
    abuse: Abuse = Field(default_factory=Abuse)
    ip_pools: dict[Name, IpPool] = Field(default_factory=dict)
    notifications: dict[Name, Channel] = Field(default_factory=dict)
    events: list[Event] = Field(default_factory=list)
    reports: dict[Name, Report] = Field(default_factory=dict)


SECTIONS: tuple[str, ...] = tuple(Policy.model_fields)
