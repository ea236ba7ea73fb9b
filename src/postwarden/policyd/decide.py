"""Decisions for policy requests, without I/O.

``decide`` is a generator: it yields a batch of counter operations, receives
their results from a store, and finally returns a ``Verdict``. The store runs
each batch atomically (one Redis round trip, one lock for the local store), so
counts stay exact when many SMTP sessions ask at once; everything else here is
a pure function of the request, the policy and the results.

Precedence, when several rules speak about one request: a banned client is
refused before anything else; otherwise the most severe action wins,
reject > defer > hold > pass, and every rule that tripped raises its event.
A sender's own throttle replaces the throttle of their domain; a list's
throttle applies in addition to the poster's.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Generator
from typing import Literal, NamedTuple

from postwarden.policy.models.abuse import BadSmtpSessions, SignalKind
from postwarden.policy.models.lists import MailingList
from postwarden.policy.models.throttles import ThrottleAction
from postwarden.policyd.view import NamedThrottle, PolicyView, without_extension

# ------------------------------------------------------------------ operations
#
# Operations, verdicts and rows are NamedTuples: several are made for every
# request, and a tuple is made several times faster than a frozen dataclass.


class BanCheck(NamedTuple):
    """Is the client banned? A ban ends the batch: nothing after it is counted."""

    client: str


class Take(NamedTuple):
    """Take ``weight`` from a budget of ``limit`` per ``window`` seconds, unless that
    would go over it. Result: whether it fitted.

    A batch's budgets are all or nothing when mail is refused: if a ``refuses`` Take
    does not fit, no Take of the batch is counted and no size is recorded, because
    refused mail was not sent and will be offered again."""

    key: str
    weight: int
    limit: int
    window: int
    refuses: bool = True


def invalid_key(client: str) -> str:
    """The count of a client's unknown recipients."""
    return f"invalid:{client}"


def auth_failures_key(client: str) -> str:
    """The count of a client's failed logins."""
    return f"authfail:{client}"


def suspension_key(login: str) -> str:
    """A suspended login is kept as a ban under this name, beside the clients' bans:
    one check in the same round trip, shared by every MTA of the store, kept across
    restarts, and lifted the same way."""
    return f"login:{login}"


SUSPENDED_FOR = 10 * 365 * 86400
"""A suspension lasts until it is released; the store keeps it this long at most."""


def is_suspension(name: str) -> bool:
    return name.startswith("login:")


def sizes_key(sasl_login: str, identity: str) -> str:
    """The message sizes the same-size rule compares: a login's own, and apart from
    them those of mail the host's own applications relay under its addresses (so
    that an application's mail never makes a sign of a stolen password)."""
    return f"sizes:{sasl_login}" if sasl_login else f"sizes:relayed:{identity}"


def signals_key(login: str) -> str:
    """The kinds of sign of a stolen password a login showed (compromised_login)."""
    return f"signals:{login}"


def clients_key(login: str) -> str:
    """The client addresses a login logged in from."""
    return f"clients:{login}"


def abuse_keys(name: str) -> tuple[str, ...]:
    """What a lifted ban or a released suspension forgets with it, so that the next
    mistake does not ban (or suspend) again at once."""
    if is_suspension(name):
        login = name.removeprefix("login:")
        return (signals_key(login), clients_key(login), sizes_key(login, login))
    return (invalid_key(name), auth_failures_key(name))


class Add(NamedTuple):
    """Count ``weight`` in the window. Result: the count in the window, this included."""

    key: str
    weight: int
    window: int


class SimilarSizes(NamedTuple):
    """Record a message size. Result: how many sizes in the window are within
    ``tolerance`` (a fraction) of this one, this one included."""

    key: str
    size: int
    window: int
    tolerance: float


class Distinct(NamedTuple):
    """Note ``member`` as seen now. Result: how many different members were seen
    within the window, this one included."""

    key: str
    member: str
    window: int


class Ban(NamedTuple):
    """Ban the client. Result: whether it is a new ban (none was in force): only a new
    ban is logged and raises its event, when hosts race to ban the same client."""

    client: str
    seconds: int


Op = BanCheck | Take | Add | SimilarSizes | Distinct | Ban
Result = bool | int | None
Decision = Generator[list[Op], list[Result], "Verdict"]

# --------------------------------------------------------------------- verdict

EventKind = Literal[
    "abuse.internal_spammer",
    "abuse.bad_smtp_session",
    "abuse.auth_failures",
    "abuse.compromised_login",
    "throttle.hit",
    "list.post_held",
    "message.large",
    "ip.blacklisted",
    "spam.outbound",
    "system.store",
]


class Event(NamedTuple):
    kind: EventKind
    subject: str
    """What the event is about (a login, a client IP, a list); cooldowns are per subject."""
    detail: str
    size: int = 0
    """The message's size, for events with a threshold of their own (message.large)."""
    client: str = ""
    login: str = ""
    """The client address and login of the request that raised it (the engine fills
    them in): the abuse report names who was involved."""


class UsageRow(NamedTuple):
    login: str
    sender: str
    recipients: int
    size: int
    client: str
    pool: str | None
    decision: str
    queue_id: str = ""
    """Postfix's; rspamd's verdict, which comes after the decision, names it (spam.py)."""


class Verdict(NamedTuple):
    action: str
    events: tuple[Event, ...] = ()
    logs: tuple[str, ...] = ()
    usage: UsageRow | None = None


PASS = "DUNNO"
PASSED = Verdict(PASS)
# a permanent code, and words that say so: the ban ends on its own, but a client
# that was banned has nothing to retry (a wrong ban is lifted with `postwarden ban lift`)
BANNED = Verdict("REJECT 5.7.1 this client is banned for abuse")
SUSPENDED_TEXT = "this account is suspended: ask your mail administrator"
SUSPENDED = Verdict(f"REJECT 5.7.1 {SUSPENDED_TEXT}")
_SEVERITY = {"reject": 3, "defer": 2, "hold": 1, "notify": 0}


class _Outcome:
    """Collects what the rules said; the most severe action wins."""

    __slots__ = ("action", "events", "logs", "severity")

    def __init__(self) -> None:
        self.severity = -1
        self.action = PASS
        self.events: list[Event] = []
        self.logs: list[str] = []

    def act(self, kind: ThrottleAction, text: str) -> None:
        severity = _SEVERITY[kind]
        if severity > self.severity:
            self.severity = severity
            self.action = _postfix_action(kind, text)

    def verdict(self, usage: UsageRow | None = None) -> Verdict:
        return Verdict(self.action, tuple(self.events), tuple(self.logs), usage)


def _postfix_action(kind: ThrottleAction, text: str) -> str:
    if kind == "reject":
        return f"REJECT 5.7.1 {text}"
    if kind == "defer":
        return f"DEFER 4.7.1 {text}"
    if kind == "hold":
        return f"HOLD {text}"
    return PASS


# ------------------------------------------------------------------- decisions
#
# These run for every RCPT and END-OF-MESSAGE, so they are written for speed:
# results are matched to operations by position, and a request that trips no rule
# (nearly all of them) makes no _Outcome at all.


def decide(request: dict[str, str], view: PolicyView) -> Decision:
    state = request.get("protocol_state", "").upper()
    if state == "RCPT":
        return _rcpt(request, view)
    if state == "END-OF-MESSAGE":
        return _end_of_message(request, view)
    return _passed()


def _passed() -> Decision:
    return PASSED
    yield []  # unreachable: makes this a generator that asks the store nothing


def sender_identity(login: str, sender: str, client: str, view: PolicyView) -> str:
    """Who is sending, for throttles, abuse rules and the usage log: the login; or,
    for mail relayed from the host's own networks without one (local applications,
    a classic source of spam from a compromised site), the envelope sender when it
    is a local address."""
    if login:
        return login
    if sender and view.is_local(sender) and view.is_trusted(client):
        # bob+1@, bob+2@ ... are all bob: an extension must not buy a fresh budget;
        # and an alias is its user's: info@ must not either
        address = without_extension(sender)
        return view.owners.get(address, address)
    return ""


def _budgets(
    view: PolicyView, identity: str, sender: str, what: str
) -> list[tuple[NamedThrottle, str, str, str]]:
    """The budgets a sender's mail counts against for ``what``: its own (its user's, or
    its domain's for each sender), and the shared one of the envelope sender's domain
    (a login sending as another domain's address spends that domain's). Each as
    (throttle, subject, what, counter key)."""
    found = []
    own = view.throttle_of(identity)
    if own is not None and getattr(own.throttle, what) is not None:
        found.append((own, identity, what, f"user:{identity}:{what}"))
    if view.shared_throttles:
        domain = (sender or identity).rpartition("@")[2]
        shared = view.shared_throttles.get(domain)
        if shared is not None and getattr(shared.throttle, what) is not None:
            found.append((shared, domain, what, f"domain:{domain}:{what}"))
    return found


def _rcpt(request: dict[str, str], view: PolicyView) -> Decision:
    client = request.get("client_address", "")
    login = request.get("sasl_username", "").lower()
    sender = request.get("sender", "").lower()
    identity = sender_identity(login, sender, client, view)
    recipient = request.get("recipient", "").lower()

    ops: list[Op] = [BanCheck(client)] if client else []
    if login:
        ops.append(BanCheck(suspension_key(login)))
    invalid: int | None = None
    bad = view.bad_sessions
    if (
        bad is not None
        and client
        and not identity
        and view.is_unknown_local(recipient)
        # the host's own applications mistyping an address must not ban the host
        and not view.is_trusted(client)
    ):
        invalid = len(ops)
        ops.append(Add(invalid_key(client), 1, bad.within))
    first_take = len(ops)
    takes: list[tuple[NamedThrottle, str, str]] = []
    if identity:
        for named, subject, what, key in _budgets(view, identity, sender, "recipients"):
            rate = named.throttle.recipients
            assert rate is not None
            ops.append(Take(key, 1, rate.count, rate.window, _refuses(named)))
            takes.append((named, subject, what))
    # Postfix delivers list+anything@ to the list (recipient_delimiter): so do the rules
    list_address = recipient
    if "+" in recipient and recipient not in view.lists:
        list_address = without_extension(recipient)
    list_throttle = view.list_throttles.get(list_address)
    if list_throttle is not None and list_throttle.throttle.messages is not None:
        rate = list_throttle.throttle.messages
        refuses = _refuses(list_throttle)
        ops.append(Take(f"list:{list_address}:messages", 1, rate.count, rate.window, refuses))
        takes.append((list_throttle, list_address, "messages"))
    mailing_list = view.lists.get(list_address)
    if not ops and mailing_list is None:
        return PASSED

    results: list[Result] = (yield ops) if ops else []
    if client and results[0]:
        return BANNED
    if login and results[1 if client else 0]:
        return SUSPENDED
    taken = results[first_take:]
    if invalid is None and mailing_list is None and all(taken):
        return PASSED

    outcome = _Outcome()
    if invalid is not None and bad is not None:
        yield from _ban_harvester(outcome, bad, client, results[invalid])

    for (named, subject, what), took in zip(takes, taken, strict=True):
        if not took:
            _throttled(outcome, named, subject, what)
    if _own_budget_tripped(takes, taken, login):
        yield from suspect(outcome, login, ("throttle",), view)

    if mailing_list is not None and not _may_post(mailing_list, login, sender):
        _denied_post(outcome, mailing_list, list_address, login or sender or "<>")
    return outcome.verdict()


def _denied_post(outcome: _Outcome, mailing_list: MailingList, address: str, poster: str) -> None:
    if mailing_list.denied_posts == "reject":
        outcome.act("reject", f"you may not post to {address}")
    else:
        outcome.act("hold", f"post to {address} awaits a moderator")
        outcome.events.append(Event("list.post_held", address, f"post from {poster} held"))


def _ban_harvester(
    outcome: _Outcome, bad: BadSmtpSessions, client: str, count: Result
) -> Generator[list[Op], list[Result], None]:
    if bad.invalid_recipients is None or not isinstance(count, int):
        return
    if count < bad.invalid_recipients:
        return
    (new,) = yield [Ban(client, bad.ban_for)]
    if new:
        outcome.logs.append(
            f"ban client={client} reason=invalid_recipients count={count} "
            f"within={int(bad.within)}s for={int(bad.ban_for)}s"
        )
        text = f"{count} unknown recipients within {bad.within}"
        outcome.events.append(Event("abuse.bad_smtp_session", client, text))
    outcome.act("reject", "too many unknown recipients: this client is banned")


def _own_budget_tripped(
    takes: list[tuple[NamedThrottle, str, str]], results: list[Result], login: str
) -> bool:
    """Did the login's own throttle refuse, hold or flag it? Only that trip is a sign of
    the login's: the domain's shared budget (its subject is the domain) and a list's
    are spent by other senders too. Worked out here, off the path of passing mail."""
    return bool(login) and any(
        subject == login and not took for (_, subject, _), took in zip(takes, results, strict=False)
    )


def suspect(
    outcome: _Outcome, login: str, kinds: tuple[SignalKind, ...], view: PolicyView
) -> Generator[list[Op], list[Result], None]:
    """Note signs of a stolen password that ``login`` showed, and suspend it when
    enough different kinds of them line up within the window (compromised_login).
    A login suspended here gets its request refused at once."""
    rule = view.compromised_login
    if rule is None or not login or not kinds:
        return
    seen = yield [Distinct(signals_key(login), kind, rule.within) for kind in kinds]
    lined_up = max((n for n in seen if isinstance(n, int)), default=0)
    if lined_up < rule.signals:
        return
    outcome.act("reject", SUSPENDED_TEXT)
    # a Ban lengthens one in force: its "since" would move with every late sign
    (already,) = yield [BanCheck(suspension_key(login))]
    if already:
        return
    (new,) = yield [Ban(suspension_key(login), SUSPENDED_FOR)]
    if new:
        outcome.logs.append(
            f"suspend login={login} reason=compromised_login signals={lined_up} "
            f"now={','.join(kinds)} within={int(rule.within)}s"
        )
        outcome.events.append(
            Event(
                "abuse.compromised_login",
                login,
                f"{login} suspended: {lined_up} kinds of sign of a stolen password within "
                f"{rule.within} (the last: {', '.join(kinds)}); "
                f"lift it with: postwarden account release {login}",
            )
        )


def compromise_sign(login: str, kind: SignalKind, view: PolicyView) -> Decision:
    """A sign that comes apart from a request (rspamd's verdict on outbound mail)."""
    outcome = _Outcome()
    yield from suspect(outcome, login, (kind,), view)
    return Verdict(PASS, tuple(outcome.events), tuple(outcome.logs))


def _may_post(mailing_list: MailingList, login: str, sender: str) -> bool:
    if mailing_list.posting == "anyone":
        return True
    if mailing_list.posting == "moderators":
        # moderators are local users: only a login proves who they are
        return bool(login) and login in mailing_list.moderators
    poster = login or sender
    return poster in mailing_list.members or poster in mailing_list.moderators


def _refuses(named: NamedThrottle) -> bool:
    """Held mail is accepted (and sent once released), as is mail past a notify limit."""
    return named.throttle.action in ("defer", "reject")


def _throttled(outcome: _Outcome, named: NamedThrottle, subject: str, what: str) -> None:
    throttle = named.throttle
    limit = getattr(throttle, what)
    text = f"sending limit reached: {what} {limit} ({named.name})"
    outcome.act(throttle.action, text)
    outcome.events.append(Event("throttle.hit", f"{subject}/{named.name}", text))


def _end_of_message(request: dict[str, str], view: PolicyView) -> Decision:
    sender = request.get("sender", "").lower()
    client = request.get("client_address", "")
    sasl = request.get("sasl_username", "").lower()
    login = sender_identity(sasl, sender, client, view)
    size = _int(request.get("size"))
    large = view.large_message_above is not None and size > view.large_message_above
    if not login:
        if not large:
            return PASSED
        return Verdict(PASS, (_large_message(login, sender, client, size),))
    recipients = _int(request.get("recipient_count"))

    # a login suspended since its RCPT (on another session, or another MTA) sends no more
    ops: list[Op] = [BanCheck(suspension_key(sasl))] if sasl else []
    takes: list[tuple[NamedThrottle, str, str]] = []
    for named, subject, what, key in _budgets(view, login, sender, "messages"):
        rate = named.throttle.messages
        assert rate is not None
        ops.append(Take(key, 1, rate.count, rate.window, _refuses(named)))
        takes.append((named, subject, what))
    for named, subject, what, key in _budgets(view, login, sender, "bytes"):
        budget = named.throttle.bytes
        assert budget is not None
        ops.append(Take(key, size, int(budget.size), budget.window, _refuses(named)))
        takes.append((named, subject, what))
    spammer = view.internal_spammer
    measured = spammer is not None and size > 0
    if spammer is not None and measured:
        tolerance = spammer.size_tolerance / 100
        ops.append(SimilarSizes(sizes_key(sasl, login), size, spammer.within, tolerance))

    results: list[Result] = (yield ops) if ops else []
    if sasl:
        if results[0]:
            return SUSPENDED
        results = results[1:]
    pool = view.user_pools.get(login)
    if not large and all(results[: len(takes)]) and not _looks_like_bulk(results, takes, view):
        return Verdict(
            PASS,
            usage=UsageRow(
                login, sender, recipients, size, client, pool, PASS, request.get("queue_id", "")
            ),
        )

    outcome = _Outcome()
    if large:
        outcome.events.append(_large_message(login, sender, client, size))
    for (named, subject, what), took in zip(takes, results, strict=False):
        if not took:
            _throttled(outcome, named, subject, what)
    signals: tuple[SignalKind, ...] = ()
    if _own_budget_tripped(takes, results, sasl):
        signals += ("throttle",)
    if spammer is not None and _looks_like_bulk(results, takes, view):
        similar = results[len(takes)]
        text = f"{similar} messages of about {size} bytes within {spammer.within}"
        outcome.act(spammer.action, f"looks like bulk mail from an account: {text}")
        outcome.events.append(Event("abuse.internal_spammer", login, text))
        signals += ("same_size",)
    # only a login can be suspended: mail relayed from the host's own networks has none
    yield from suspect(outcome, sasl, signals, view)
    return outcome.verdict(
        UsageRow(
            login,
            sender,
            recipients,
            size,
            client,
            pool,
            outcome.action,
            request.get("queue_id", ""),
        )
    )


def _looks_like_bulk(
    results: list[Result], takes: list[tuple[NamedThrottle, str, str]], view: PolicyView
) -> bool:
    """Did the same-size count (the operation after the throttles) reach the limit?"""
    spammer = view.internal_spammer
    if spammer is None or len(results) <= len(takes):
        return False
    similar = results[len(takes)]
    return isinstance(similar, int) and similar >= spammer.same_size_messages


def _large_message(login: str, sender: str, client: str, size: int) -> Event:
    return Event(
        "message.large", login or sender or client, f"{size} bytes from {sender or '<>'}", size
    )


def _int(value: str | None) -> int:
    try:
        return max(0, int(value or 0))
    except ValueError:
        return 0


# --------------------------------------------------------- Dovecot's auth policy

AUTH_REJECT = "REJECT"


def decide_auth(command: str, request: dict[str, object], view: PolicyView, now: float) -> Decision:
    """Dovecot asks before a login (``allow``) and reports its outcome (``report``):
    a banned client may not even try, a login whose password is past max_age and its
    grace may not either, and failed logins count towards a ban on every host that
    shares the store. A REJECT verdict is Dovecot's status -1: the login fails as a
    wrong password would (Dovecot tells the client no reason; this daemon logs it)."""
    client = str(request.get("remote") or "")
    if command == "allow":
        login = str(request.get("login") or "").lower()
        expiry = view.password_expiry.get(login)
        if expiry is not None and now >= expiry.refused_from:
            return Verdict(
                f"{AUTH_REJECT} password of {login} expired on {_day(expiry.expired)} "
                "(password_policy.max_age): set a new one with postwarden passwd",
                (),
                (
                    f"refused login={login} client={client or '-'} reason=password_expired "
                    f"expired={_day(expiry.expired)}",
                ),
            )
    if command == "allow":
        login = str(request.get("login") or "").lower()
        checks: list[Op] = [
            BanCheck(name) for name in (client, login and suspension_key(login)) if name
        ]
        if not checks:
            return Verdict(PASS)
        results = yield checks
        if client and results[0]:
            return Verdict(f"{AUTH_REJECT} banned for abuse")
        if login and results[-1]:
            return Verdict(
                f"{AUTH_REJECT} account suspended",
                (),
                (f"refused login={login} client={client or '-'} reason=suspended",),
            )
        return Verdict(PASS)
    if not client:
        return Verdict(PASS)
    if request.get("policy_reject") is True:
        # refused by this daemon before the password was checked (a ban, an expired
        # password): no guess was made, and an expired user's phone retrying every
        # minute must not get the office's address banned
        return Verdict(PASS)
    if command == "report" and request.get("success") is True:
        return (yield from _logged_in(view, str(request.get("login") or "").lower(), client))
    bad = view.bad_sessions
    if command != "report" or request.get("success") is not False:
        return Verdict(PASS)
    if bad is None or bad.auth_failures is None:
        return Verdict(PASS)
    if view.is_trusted(client):
        # webmail on the host itself logs users in: banning it would lock out everyone
        return Verdict(PASS)
    (count,) = yield [Add(auth_failures_key(client), 1, bad.within)]
    if not isinstance(count, int) or count < bad.auth_failures:
        return Verdict(PASS)
    (new,) = yield [Ban(client, bad.ban_for)]
    if not new:
        return Verdict(f"{AUTH_REJECT} too many failed logins")
    return Verdict(
        f"{AUTH_REJECT} too many failed logins",
        (Event("abuse.auth_failures", client, f"{count} failed logins within {bad.within}"),),
        (
            f"ban client={client} reason=auth_failures count={count} "
            f"within={int(bad.within)}s for={int(bad.ban_for)}s",
        ),
    )


def client_network(client: str) -> str:
    """An IPv4 client as itself, an IPv6 client as its /64: a phone's privacy
    addresses change within its network all day."""
    if ":" not in client:
        return client
    try:
        return str(ipaddress.ip_network(f"{client}/64", strict=False))
    except ValueError:
        return client


def _logged_in(view: PolicyView, login: str, client: str) -> Decision:
    """A login from one more client address than compromised_login allows is a sign."""
    rule = view.compromised_login
    if rule is None or rule.client_addresses is None or not login:
        return Verdict(PASS)
    (count,) = yield [Distinct(clients_key(login), client_network(client), rule.within)]
    if not isinstance(count, int) or count <= rule.client_addresses:
        return Verdict(PASS)
    outcome = _Outcome()
    yield from suspect(outcome, login, ("client_addresses",), view)
    return Verdict(PASS, tuple(outcome.events), tuple(outcome.logs))


def _day(moment: float) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(moment))
