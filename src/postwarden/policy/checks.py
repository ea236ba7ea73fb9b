"""Checks across sections: references resolve, addresses are unique and local,
lists do not loop, pools can fail over, events can fire and reach someone.

Each check names the sections it reads. When a section failed validation, the
checks that read it are skipped rather than reporting follow-on noise, while
every other check still runs: one run shows every independent problem.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

from postwarden.policy.enforcement import not_enforced
from postwarden.policy.models import Policy
from postwarden.policy.models.events import LargeMessageEvent, ListPostHeldEvent
from postwarden.policy.models.lists import MailingList
from postwarden.policy.problems import Finding
from postwarden.policy.secrets import PASSWORD_HASHES, Secrets
from postwarden.policy.suggest import did_you_mean
from postwarden.policy.units import Seconds

Check = Callable[[Policy, Secrets], Iterator[Finding]]


@dataclass(frozen=True)
class _Registered:
    function: Check
    sections: frozenset[str]


CHECKS: list[_Registered] = []


def check(*sections: str) -> Callable[[Check], Check]:
    def register(function: Check) -> Check:
        CHECKS.append(_Registered(function, frozenset(sections)))
        return function

    return register


def run_checks(policy: Policy, secrets: Secrets, valid_sections: set[str]) -> list[Finding]:
    findings: list[Finding] = []
    for registered in CHECKS:
        if registered.sections <= valid_sections:
            findings.extend(registered.function(policy, secrets))
    return findings


def _unknown(kind: str, name: str, known: Mapping[str, object] | list[str]) -> tuple[str, str]:
    names = list(known)
    hint = did_you_mean(name, names) or (
        f"declared {kind}s: {', '.join(sorted(names)[:10])}"
        if names
        else f"no {kind}s are declared"
    )
    return f"unknown {kind} {name!r}", hint


def _domain_of(address: str) -> str:
    return address.rpartition("@")[2]


# ---------------------------------------------------------------- references


@check("domains", "throttles", "ip_pools")
def domain_references(policy: Policy, secrets: Secrets) -> Iterator[Finding]:
    for name, domain in policy.domains.items():
        yield from _ref(
            ("domains", name, "throttle"), domain.throttle, "throttle", policy.throttles
        )
        yield from _ref(
            ("domains", name, "shared_throttle"),
            domain.shared_throttle,
            "throttle",
            policy.throttles,
        )
        yield from _ref(("domains", name, "ip_pool"), domain.ip_pool, "ip pool", policy.ip_pools)


@check("users", "throttles", "ip_pools")
def user_references(policy: Policy, secrets: Secrets) -> Iterator[Finding]:
    for address, user in policy.users.items():
        yield from _ref(("users", address, "throttle"), user.throttle, "throttle", policy.throttles)
        yield from _ref(("users", address, "ip_pool"), user.ip_pool, "ip pool", policy.ip_pools)


@check("lists", "throttles")
def list_references(policy: Policy, secrets: Secrets) -> Iterator[Finding]:
    for address, mailing_list in policy.lists.items():
        yield from _ref(
            ("lists", address, "throttle"), mailing_list.throttle, "throttle", policy.throttles
        )


@check("events", "notifications")
def event_channels(policy: Policy, secrets: Secrets) -> Iterator[Finding]:
    for index, event in enumerate(policy.events):
        for position, channel in enumerate(event.notify):
            yield from _ref(
                ("events", index, "notify", position),
                channel,
                "notification channel",
                policy.notifications,
            )


@check("reports", "notifications")
def report_channels(policy: Policy, secrets: Secrets) -> Iterator[Finding]:
    for name, report in policy.reports.items():
        for position, channel_name in enumerate(report.send_to):
            path = ("reports", name, "send_to", position)
            channel = policy.notifications.get(channel_name)
            if channel is None:
                yield from _ref(path, channel_name, "notification channel", policy.notifications)
            elif channel.kind != "email":
                yield Finding(
                    path,
                    f"reports are sent by email, but channel {channel_name!r} is a {channel.kind}",
                    "name an email channel here",
                )


def _ref(
    path: tuple[str | int, ...], name: str | None, kind: str, known: Mapping[str, object]
) -> Iterator[Finding]:
    if name is not None and name not in known:
        message, hint = _unknown(kind, name, known)
        yield Finding(path, message, hint)


# ----------------------------------------------------------------- addresses


@check("users", "lists", "domains")
def addresses_are_local(policy: Policy, secrets: Secrets) -> Iterator[Finding]:
    domains = policy.domains
    declared = sorted(domains)

    def outside(address: str) -> bool:
        return _domain_of(address) not in domains

    hint = f"declare the domain under domains:, or use one of: {', '.join(declared[:5])}"
    for address, user in policy.users.items():
        if outside(address):
            yield Finding(
                ("users", address), "user is not in a declared domain", hint, point_at="key"
            )
        for index, alias in enumerate(user.aliases):
            if outside(alias):
                yield Finding(
                    ("users", address, "aliases", index),
                    "an alias must be in a declared domain",
                    hint,
                )
        for index, grant in enumerate(user.send_as):
            if outside(grant):
                yield Finding(
                    ("users", address, "send_as", index),
                    "send_as may only grant addresses in declared domains",
                    "sending as a foreign domain's address is spoofing and fails its DMARC",
                )
    for address in policy.lists:
        if outside(address):
            yield Finding(
                ("lists", address), "list is not in a declared domain", hint, point_at="key"
            )
    for address, user in policy.users.items():
        if user.recovery_email is not None and not outside(user.recovery_email):
            yield Finding(
                ("users", address, "recovery_email"),
                "a recovery address must be outside this server's domains",
                "a suspended user cannot log in to read mail here: name an address "
                "elsewhere, or leave it out",
            )


@check("users", "lists")
def addresses_are_unique(policy: Policy, secrets: Secrets) -> Iterator[Finding]:
    owner: dict[str, str] = {}
    for address in policy.users:
        owner[address] = f"user {address}"
    for address, user in policy.users.items():
        for index, alias in enumerate(user.aliases):
            first = owner.get(alias)
            if first is not None:
                where = "this user" if first == f"user {address}" else first
                yield Finding(
                    ("users", address, "aliases", index),
                    f"{alias} is already defined as {where}",
                    "an address belongs to one user, alias or list",
                )
            else:
                owner[alias] = f"an alias of {address}"
    for address in policy.lists:
        first = owner.get(address)
        if first is not None:
            yield Finding(
                ("lists", address),
                f"{address} is already defined as {first}",
                "an address belongs to one user, alias or list",
                point_at="key",
            )


@check("domains", "users", "lists")
def catch_all_targets(policy: Policy, secrets: Secrets) -> Iterator[Finding]:
    for name, domain in policy.domains.items():
        target = domain.catch_all
        if target is None or _domain_of(target) not in policy.domains:
            continue
        if not _receives(policy, target):
            yield Finding(
                ("domains", name, "catch_all"),
                f"{target} is in a local domain but no user, alias or list receives it",
            )


def _receives(policy: Policy, address: str) -> bool:
    if address in policy.users or address in policy.lists:
        return True
    return any(address in user.aliases for user in policy.users.values())


@check("server", "users", "lists", "domains")
def postmaster_is_deliverable(policy: Policy, secrets: Secrets) -> Iterator[Finding]:
    postmaster = policy.server.postmaster
    if _domain_of(postmaster) in policy.domains and not _receives(policy, postmaster):
        yield Finding(
            ("server", "postmaster"),
            f"{postmaster} is in a local domain but no user, alias or list receives it",
            f"add it as an alias of an administrator, for example aliases: [{postmaster}]",
            severity="warning",
        )


# --------------------------------------------------------------------- lists


@check("lists")
def lists_do_not_loop(policy: Policy, secrets: Secrets) -> Iterator[Finding]:
    lists = policy.lists
    in_reported_loop: set[str] = set()
    for address, mailing_list in lists.items():
        for index, member in enumerate(mailing_list.members):
            if member == address:
                yield Finding(("lists", address, "members", index), "a list cannot contain itself")
                continue
            if address in in_reported_loop or member not in lists:
                continue
            loop = _path_to(lists, member, address)
            if loop is not None:
                in_reported_loop.update(loop)
                yield Finding(
                    ("lists", address, "members", index),
                    "the lists form a loop: " + " -> ".join([address, *loop]),
                    "a loop of lists sends every post around forever",
                )


def _path_to(lists: Mapping[str, MailingList], start: str, target: str) -> list[str] | None:
    """The chain of lists from start to target through list members, if there is one."""
    came_from: dict[str, str | None] = {start: None}
    todo = [start]
    while todo:
        current = todo.pop(0)
        for member in lists[current].members:
            if member == target:
                chain = [target]
                step: str | None = current
                while step is not None:
                    chain.append(step)
                    step = came_from[step]
                return chain[::-1]
            if member in lists and member not in came_from:
                came_from[member] = current
                todo.append(member)
    return None


@check("lists", "users")
def list_moderators(policy: Policy, secrets: Secrets) -> Iterator[Finding]:
    for address, mailing_list in policy.lists.items():
        if mailing_list.posting == "moderators" and not mailing_list.moderators:
            yield Finding(
                ("lists", address, "posting"),
                "posting is 'moderators' but the list has no moderators",
                "add moderators: [...] or choose posting: members",
            )
        for index, moderator in enumerate(mailing_list.moderators):
            user = policy.users.get(moderator)
            if user is None:
                yield Finding(
                    ("lists", address, "moderators", index),
                    f"moderator {moderator} is not a local user",
                    "moderators must log in to post, so they must be users here",
                )
            elif user.disabled:
                yield Finding(
                    ("lists", address, "moderators", index),
                    f"moderator {moderator} is disabled",
                    severity="warning",
                )


# ------------------------------------------------------------------ ip pools


@check("ip_pools")
def pool_failover(policy: Policy, secrets: Secrets) -> Iterator[Finding]:
    pools = policy.ip_pools
    in_reported_loop: set[str] = set()
    for name, pool in pools.items():
        path = ("ip_pools", name, "failover")
        if pool.failover is None:
            if all(a.state != "active" for a in pool.addresses):
                yield Finding(
                    ("ip_pools", name, "addresses"),
                    "no address of this pool is active and it has no failover",
                    "mark an address 'active' or add failover: OTHER_POOL",
                )
            continue
        if pool.failover not in pools:
            yield from _ref(path, pool.failover, "ip pool", pools)
            continue
        chain: list[str] = [name]
        current: str | None = pool.failover
        while current is not None and current in pools and current not in chain:
            chain.append(current)
            current = pools[current].failover
        if current == name and name not in in_reported_loop:
            in_reported_loop.update(chain)
            yield Finding(
                path,
                "failover loops back to this pool: " + " -> ".join([*chain, name]),
                "the last pool of a failover chain has no failover",
            )


@check("ip_pools")
def pool_addresses_unique(policy: Policy, secrets: Secrets) -> Iterator[Finding]:
    seen: dict[str, str] = {}
    for name, pool in policy.ip_pools.items():
        for index, member in enumerate(pool.addresses):
            if ipaddress.ip_address(member.address).is_loopback:
                yield Finding(
                    ("ip_pools", name, "addresses", index, "address"),
                    f"{member.address} is a loopback address: mail from it reaches no other host",
                    "fine for a lab; a production pool needs public addresses",
                    severity="warning",
                )
            first = seen.get(member.address)
            if first is not None:
                yield Finding(
                    ("ip_pools", name, "addresses", index, "address"),
                    f"{member.address} is already in pool {first!r}",
                    "an outbound address belongs to one pool",
                )
            else:
                seen[member.address] = name


# -------------------------------------------------------- events, notifications

_EVENT_NEEDS: dict[str, tuple[str, Callable[[Policy], bool]]] = {
    "abuse.internal_spammer": (
        "abuse.internal_spammer",
        lambda p: p.abuse.internal_spammer is not None,
    ),
    "abuse.bad_smtp_session": (
        "abuse.bad_smtp_sessions",
        lambda p: p.abuse.bad_smtp_sessions is not None,
    ),
    "abuse.auth_failures": (
        "abuse.bad_smtp_sessions.auth_failures",
        lambda p: (
            p.abuse.bad_smtp_sessions is not None
            and p.abuse.bad_smtp_sessions.auth_failures is not None
        ),
    ),
    "abuse.compromised_login": (
        "abuse.compromised_login",
        lambda p: p.abuse.compromised_login is not None,
    ),
    "throttle.hit": ("throttles", lambda p: bool(p.throttles)),
    "list.post_held": ("lists", lambda p: bool(p.lists)),
    "password.audit_failed": (
        "password_policy.audit",
        lambda p: p.password_policy.audit is not None,
    ),
}


@check("events", "abuse", "throttles", "lists", "password_policy", "server")
def events_can_fire(policy: Policy, secrets: Secrets) -> Iterator[Finding]:
    for index, event in enumerate(policy.events):
        need = _EVENT_NEEDS.get(event.on)
        if need is not None and not need[1](policy):
            yield Finding(
                ("events", index, "on"),
                f"{event.on} never fires: {need[0]} is not configured",
                severity="warning",
            )
        if isinstance(event, LargeMessageEvent) and event.above >= policy.server.message_size_limit:
            yield Finding(
                ("events", index, "above"),
                f"never fires: {event.above} is not below server.message_size_limit "
                f"({policy.server.message_size_limit})",
                severity="warning",
            )


@check("server", "notifications", "events", "reports", "password_policy", "users")
def email_needs_relay(policy: Policy, secrets: Secrets) -> Iterator[Finding]:
    if policy.server.notification_relay is not None:
        return
    used = {c for e in policy.events for c in e.notify} | {
        c for r in policy.reports.values() for c in r.send_to
    }
    for name, channel in policy.notifications.items():
        if channel.kind == "email" and name in used:
            yield Finding(
                ("notifications", name, "email"),
                "email notifications need server.notification_relay",
                "alerts must not wait in the queue of the server they are about",
            )
            return
    for index, event in enumerate(policy.events):
        if isinstance(event, ListPostHeldEvent) and event.notify_moderators:
            yield Finding(
                ("events", index, "notify_moderators"),
                "moderators are told by email, which needs server.notification_relay",
                "alerts must not wait in the queue of the server they are about",
            )
            return
    audit = policy.password_policy.audit
    if audit is not None and audit.notify_users:
        yield Finding(
            ("password_policy", "audit", "notify_users"),
            "users are told by email, which needs server.notification_relay",
            "set server.notification_relay, or notify_users: false",
        )
    for address, user in policy.users.items():
        if user.recovery_email is not None:
            yield Finding(
                ("users", address, "recovery_email"),
                "a suspended user is told by email, which needs server.notification_relay",
                "set server.notification_relay, or leave recovery_email out",
            )
            return


@check("notifications")
def webhooks_use_tls(policy: Policy, secrets: Secrets) -> Iterator[Finding]:
    for name, channel in policy.notifications.items():
        urls = []
        if channel.webhook is not None:
            urls.append((("notifications", name, "webhook", "url"), channel.webhook.url))
        if channel.sms is not None:
            urls.append((("notifications", name, "sms", "gateway"), channel.sms.gateway))
        for path, url in urls:
            if url.startswith("http://"):
                yield Finding(
                    path,
                    "notifications would travel unencrypted",
                    "use an https:// URL",
                    severity="warning",
                )


# ------------------------------------------------------------------- secrets

_HASH_SCHEMES = {
    "argon2id": re.compile(
        r"(\{ARGON2ID\})?\$argon2id\$v=\d+\$m=\d+,t=\d+,p=\d+\$[A-Za-z0-9+/]+\$[A-Za-z0-9+/]+"
    ),
    "bcrypt": re.compile(r"(\{BLF-CRYPT\})?\$2[aby]\$\d\d\$[./A-Za-z0-9]{53}"),
    "sha512-crypt": re.compile(
        r"(\{SHA512-CRYPT\})?\$6\$(rounds=\d+\$)?[./A-Za-z0-9]{1,16}\$[./A-Za-z0-9]{86}"
    ),
}


def hash_scheme_of(password_hash: str) -> str | None:
    return next(
        (scheme for scheme, pattern in _HASH_SCHEMES.items() if pattern.fullmatch(password_hash)),
        None,
    )


@check("users", "password_policy")
def password_hashes(policy: Policy, secrets: Secrets) -> Iterator[Finding]:
    if secrets.path is None:
        return
    for address, password_hash in secrets.password_hashes.items():
        path = (PASSWORD_HASHES, address)
        if address not in policy.users:
            yield Finding(
                path,
                f"password hash for {address}, who is not a user",
                did_you_mean(address, policy.users),
                severity="warning",
                source="secrets",
                point_at="key",
            )
        scheme = hash_scheme_of(password_hash)
        if scheme is None:
            yield Finding(
                path,
                "this is not a password hash postwarden accepts (argon2id, bcrypt, sha512-crypt)",
                "store a hash such as $argon2id$..., never the password itself",
                source="secrets",
            )
        elif scheme != policy.password_policy.hash_scheme:
            yield Finding(
                path,
                f"hashed with {scheme}, not {policy.password_policy.hash_scheme}",
                "it keeps working; rehash it at the next password change",
                severity="warning",
                source="secrets",
            )


AUDIT_PERIODS = {"daily": 86400.0, "weekly": 7 * 86400.0, "monthly": 31 * 86400.0}
"""The longest time between two runs of the password audit on each schedule."""


@check("password_policy")
def password_expiry(policy: Policy, secrets: Secrets) -> Iterator[Finding]:
    rules = policy.password_policy
    if rules.max_age is None:
        for key in ("max_age_grace", "max_age_warning"):
            if key in rules.model_fields_set:
                yield Finding(
                    ("password_policy", key),
                    f"{key} has no effect without max_age",
                    "set max_age, or remove it",
                    severity="warning",
                )
        return
    if rules.max_age <= rules.max_age_warning:
        yield Finding(
            ("password_policy", "max_age_warning"),
            f"{rules.max_age_warning} is not shorter than max_age ({rules.max_age}): every "
            "password is always about to expire",
            "warn a few weeks ahead, like 14d",
            severity="warning",
        )
    audit = rules.audit
    if audit is None or not audit.notify_users:
        yield Finding(
            ("password_policy", "max_age"),
            "expired passwords stop working at login, and nobody tells their users ahead",
            "set password_policy.audit.notify_users: true (the audit mails them "
            "max_age_warning before)",
            severity="warning",
        )
    elif rules.max_age_warning < AUDIT_PERIODS[audit.schedule]:
        yield Finding(
            ("password_policy", "max_age_warning"),
            f"the {audit.schedule} audit may never run within {rules.max_age_warning} of a "
            "password's expiry: its user would not be told",
            f"make max_age_warning at least {Seconds(AUDIT_PERIODS[audit.schedule])}",
            severity="warning",
        )


def compromise_signs(policy: Policy) -> list[str]:
    """The kinds of sign of a stolen password this policy can show (compromised_login)."""
    abuse, rule = policy.abuse, policy.abuse.compromised_login
    throttled = any(user.throttle for user in policy.users.values()) or any(
        domain.throttle or domain.shared_throttle for domain in policy.domains.values()
    )
    spam = abuse.outbound_spam
    available = {
        "throttle": throttled,
        "same_size": abuse.internal_spammer is not None,
        "spam": spam is not None and (spam.hold_score is not None or spam.reject_score is not None),
        "client_addresses": rule is not None and rule.client_addresses is not None,
    }
    return [kind for kind, shows in available.items() if shows]


@check("abuse", "users", "domains", "events")
def compromised_login_can_trip(policy: Policy, secrets: Secrets) -> Iterator[Finding]:
    rule = policy.abuse.compromised_login
    if rule is None:
        return
    signs = compromise_signs(policy)
    if rule.signals > len(signs):
        yield Finding(
            ("abuse", "compromised_login", "signals"),
            f"never suspends anyone: it needs {rule.signals} kinds of sign and this policy "
            f"shows {len(signs)} ({', '.join(signs) or 'none'})",
            "lower signals, or add what shows one: a throttle, abuse.internal_spammer, "
            "abuse.outbound_spam with a hold or reject score, client_addresses",
        )
    if not any(event.on == "abuse.compromised_login" for event in policy.events):
        yield Finding(
            ("abuse", "compromised_login"),
            "a login is suspended and nobody is told",
            "add an event on abuse.compromised_login that notifies the administrators",
            severity="warning",
        )


MAX_REPEATED_WARNINGS = 10


@check("users")
def users_have_passwords(policy: Policy, secrets: Secrets) -> Iterator[Finding]:
    if secrets.path is None:
        return
    missing = [
        address
        for address, user in policy.users.items()
        if not user.disabled and address not in secrets.password_hashes
    ]
    for address in missing[:MAX_REPEATED_WARNINGS]:
        yield Finding(
            ("users", address),
            "no password hash in the secrets file: this user cannot log in",
            f"add its hash under password_hashes: {address}: $argon2id$...",
            severity="warning",
            point_at="key",
        )
    if len(missing) > MAX_REPEATED_WARNINGS:
        yield Finding(
            ("users",),
            f"{len(missing) - MAX_REPEATED_WARNINGS} more users have no password hash",
            severity="warning",
            point_at="key",
        )


# ------------------------------------------------------------ not enforced yet


@check("password_policy", "users", "reports", "events")
def settings_not_enforced(policy: Policy, secrets: Secrets) -> Iterator[Finding]:
    """Valid settings that this version does not act on: said plainly, as warnings."""
    yield from not_enforced(policy)
