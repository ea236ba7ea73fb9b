"""The policy as the daemon needs it: lookups by address, ready for every request."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field

from postwarden.policy.models import Policy
from postwarden.policy.models.abuse import BadSmtpSessions, CompromisedLogin, InternalSpammer
from postwarden.policy.models.events import LargeMessageEvent
from postwarden.policy.models.lists import MailingList
from postwarden.policy.models.throttles import Throttle

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class NamedThrottle:
    name: str
    throttle: Throttle


@dataclass(frozen=True)
class PasswordExpiry:
    expired: float
    """When the password passed max_age."""
    refused_from: float
    """When it stops working at login: max_age_grace later."""


@dataclass(frozen=True)
class PolicyView:
    local_domains: frozenset[str]
    known_addresses: frozenset[str]
    """Users, aliases and lists: every address that takes mail here."""
    catch_all_domains: frozenset[str]
    user_throttles: dict[str, NamedThrottle]
    """By login: the user's own throttle, else the one of the user's domain."""
    sender_throttles: dict[str, NamedThrottle]
    """By domain: the throttle each sender of it gets when it has none of its own."""
    shared_throttles: dict[str, NamedThrottle]
    """By domain: the one budget of all its senders together."""
    owners: dict[str, str]
    """Aliases and send_as grants with a single user: mail relayed under them counts
    for that user."""
    user_pools: dict[str, str]
    lists: dict[str, MailingList]
    list_throttles: dict[str, NamedThrottle]
    internal_spammer: InternalSpammer | None
    bad_sessions: BadSmtpSessions | None
    large_message_above: int | None
    trusted_networks: tuple[IPNetwork, ...] = ()
    """The host's own networks (Postfix's mynetworks): they relay without a login."""
    logins: frozenset[str] = frozenset()
    """The users: who may log in (and be suspended)."""
    password_expiry: dict[str, PasswordExpiry] = field(default_factory=dict)
    """By login (lower case): when its password expired and stops working, for the
    logins whose password has a recorded age under ``password_policy.max_age``."""
    compromised_login: CompromisedLogin | None = None
    recovery_emails: dict[str, str] = field(default_factory=dict)
    """By login: the user's address elsewhere, told when the login is suspended (the
    daemon keeps no users of the policy but what the view holds)."""

    def longest_window(self) -> int:
        """The longest window anything is counted in, in seconds: counts idle for
        longer can be forgotten, and none sooner (a 30-day throttle keeps 30 days)."""
        throttles = {n.name: n.throttle for n in self.user_throttles.values()}
        for named in (self.list_throttles, self.sender_throttles, self.shared_throttles):
            throttles.update((n.name, n.throttle) for n in named.values())
        windows = [
            rate.window
            for throttle in throttles.values()
            for rate in (throttle.messages, throttle.recipients, throttle.bytes)
            if rate is not None
        ]
        windows += [
            rule.within
            for rule in (self.internal_spammer, self.bad_sessions, self.compromised_login)
            if rule
        ]
        return int(max(windows, default=0))

    def is_local(self, address: str) -> bool:
        return address.rpartition("@")[2] in self.local_domains

    def throttle_of(self, identity: str) -> NamedThrottle | None:
        """The sender's own budget: the user's, else its domain's for each sender."""
        named = self.user_throttles.get(identity)
        if named is None and self.sender_throttles:
            named = self.sender_throttles.get(identity.rpartition("@")[2])
        return named

    def is_unknown_local(self, address: str) -> bool:
        """A local-domain address nobody receives: what harvesters probe for."""
        domain = address.rpartition("@")[2]
        return (
            domain in self.local_domains
            and domain not in self.catch_all_domains
            and address not in self.known_addresses
            and without_extension(address) not in self.known_addresses
        )

    def is_trusted(self, client: str) -> bool:
        try:
            address = ipaddress.ip_address(client)
        except ValueError:
            return False
        return any(address in network for network in self.trusted_networks)


def networks(entries: list[str]) -> tuple[IPNetwork, ...]:
    """Postfix's notation ("127.0.0.0/8", "[::1]/128") as networks."""
    return tuple(
        ipaddress.ip_network(entry.replace("[", "").replace("]", ""), strict=False)
        for entry in entries
    )


def without_extension(address: str) -> str:
    local, _, domain = address.rpartition("@")
    return f"{local.partition('+')[0]}@{domain}"


def compile_view(
    policy: Policy,
    trusted: list[str] | None = None,
    password_set: Mapping[str, float] | None = None,
) -> PolicyView:
    """``password_set``: when each user's password was set (the secrets' record), by
    lower-case address; a password with no record has no expiry the daemon can
    enforce (the password audit names it)."""
    throttles = policy.throttles

    # one object per throttle, shared by all its users: not one per user
    by_name = {name: NamedThrottle(name, throttle) for name, throttle in throttles.items()}

    def named(name: str | None) -> NamedThrottle | None:
        return by_name.get(name) if name else None

    user_throttles = {}
    user_pools = {}
    known = set(policy.users) | set(policy.lists)
    for address, user in policy.users.items():
        known.update(user.aliases)
        domain = policy.domains.get(address.rpartition("@")[2])
        chosen = named(user.throttle) or named(domain.throttle if domain else None)
        if chosen is not None:
            user_throttles[address] = chosen
        pool = user.ip_pool or (domain.ip_pool if domain else None)
        if pool:
            user_pools[address] = pool
    list_throttles = {
        address: chosen
        for address, mailing_list in policy.lists.items()
        if (chosen := named(mailing_list.throttle)) is not None
    }
    grants: dict[str, set[str]] = {}
    for address, user in policy.users.items():
        for sender in (*user.aliases, *user.send_as):
            grants.setdefault(sender, set()).add(address)
    owners = {sender: next(iter(users)) for sender, users in grants.items() if len(users) == 1}
    large = [int(e.above) for e in policy.events if isinstance(e, LargeMessageEvent)]
    return PolicyView(
        local_domains=frozenset(policy.domains),
        known_addresses=frozenset(known),
        catch_all_domains=frozenset(d for d, s in policy.domains.items() if s.catch_all),
        user_throttles=user_throttles,
        sender_throttles={
            name: chosen for name, d in policy.domains.items() if (chosen := named(d.throttle))
        },
        shared_throttles={
            name: chosen
            for name, d in policy.domains.items()
            if (chosen := named(d.shared_throttle))
        },
        owners=owners,
        user_pools=user_pools,
        lists=dict(policy.lists),
        list_throttles=list_throttles,
        internal_spammer=policy.abuse.internal_spammer,
        bad_sessions=policy.abuse.bad_smtp_sessions,
        large_message_above=min(large) if large else None,
        trusted_networks=networks(trusted or []),
        logins=frozenset(policy.users),
        password_expiry=password_expiry(policy, password_set or {}),
        compromised_login=policy.abuse.compromised_login,
        recovery_emails={
            address.lower(): user.recovery_email
            for address, user in policy.users.items()
            if user.recovery_email is not None
        },
    )


def password_expiry(policy: Policy, password_set: Mapping[str, float]) -> dict[str, PasswordExpiry]:
    rules = policy.password_policy
    if rules.max_age is None:
        return {}
    return {
        address.lower(): PasswordExpiry(
            set_at + rules.max_age, set_at + rules.max_age + rules.max_age_grace
        )
        for address, user in policy.users.items()
        if not user.disabled and (set_at := password_set.get(address.lower())) is not None
    }
