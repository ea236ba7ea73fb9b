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

from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Literal, NamedTuple

from postwarden.policy.models.lists import MailingList
from postwarden.policy.models.throttles import ThrottleAction
from postwarden.policyd.view import NamedThrottle, PolicyView

# ------------------------------------------------------------------ operations
#
# Operations, verdicts and rows are NamedTuples: several are made for every
# request, and a tuple is made several times faster than a frozen dataclass.


class BanCheck(NamedTuple):
    """Is the client banned? A ban ends the batch: nothing after it is counted."""

    client: str


class Take(NamedTuple):
    """Take ``weight`` from a budget of ``limit`` per ``window`` seconds, unless that
    would go over it. Result: whether it was taken."""

    key: str
    weight: int
    limit: int
    window: int


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


class Ban(NamedTuple):
    client: str
    seconds: int


Op = BanCheck | Take | Add | SimilarSizes | Ban
Result = bool | int | None
Decision = Generator[list[Op], list[Result], "Verdict"]

# --------------------------------------------------------------------- verdict

EventKind = Literal[
    "abuse.internal_spammer",
    "abuse.bad_smtp_session",
    "abuse.auth_failures",
    "throttle.hit",
    "list.post_held",
    "message.large",
    "ip.blacklisted",
    "system.store",
]


class Event(NamedTuple):
    kind: EventKind
    subject: str
    """What the event is about (a login, a client IP, a list); cooldowns are per subject."""
    detail: str


class UsageRow(NamedTuple):
    login: str
    sender: str
    recipients: int
    size: int
    client: str
    pool: str | None
    decision: str


class Verdict(NamedTuple):
    action: str
    events: tuple[Event, ...] = ()
    logs: tuple[str, ...] = ()
    usage: UsageRow | None = None


PASS = "DUNNO"
_SEVERITY = {"reject": 3, "defer": 2, "hold": 1, "notify": 0}


@dataclass
class _Outcome:
    """Collects what the rules said; the most severe action wins."""

    severity: int = -1
    action: str = PASS
    events: list[Event] = field(default_factory=list)
    logs: list[str] = field(default_factory=list)

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


def decide(request: dict[str, str], view: PolicyView) -> Decision:
    state = request.get("protocol_state", "").upper()
    if state == "RCPT":
        return (yield from _rcpt(request, view))
    if state == "END-OF-MESSAGE":
        return (yield from _end_of_message(request, view))
    return Verdict(PASS)


def sender_identity(request: dict[str, str], view: PolicyView) -> str:
    """Who is sending, for throttles, abuse rules and the usage log: the login; or,
    for mail relayed from the host's own networks without one (local applications,
    a classic source of spam from a compromised site), the envelope sender when it
    is a local address."""
    login = request.get("sasl_username", "").lower()
    if login:
        return login
    sender = request.get("sender", "").lower()
    if sender and view.is_local(sender) and view.is_trusted(request.get("client_address", "")):
        return sender
    return ""


def _rcpt(request: dict[str, str], view: PolicyView) -> Decision:
    client = request.get("client_address", "")
    login = request.get("sasl_username", "").lower()
    identity = sender_identity(request, view)
    sender = request.get("sender", "").lower()
    recipient = request.get("recipient", "").lower()
    outcome = _Outcome()

    ops: list[Op] = [BanCheck(client)] if client else []
    takes: list[tuple[Take, NamedThrottle, str]] = []
    invalid: Add | None = None
    bad = view.bad_sessions
    if bad is not None and client and not identity and view.is_unknown_local(recipient):
        invalid = Add(f"invalid:{client}", 1, bad.within)
        ops.append(invalid)
    user_throttle = view.user_throttles.get(identity) if identity else None
    if user_throttle is not None and user_throttle.throttle.recipients is not None:
        rate = user_throttle.throttle.recipients
        take = Take(f"user:{identity}:recipients", 1, rate.count, rate.window)
        takes.append((take, user_throttle, identity))
    list_throttle = view.list_throttles.get(recipient)
    if list_throttle is not None and list_throttle.throttle.messages is not None:
        rate = list_throttle.throttle.messages
        takes.append(
            (
                Take(f"list:{recipient}:messages", 1, rate.count, rate.window),
                list_throttle,
                recipient,
            )
        )
    ops += [take for take, _, _ in takes]
    if not ops:
        return outcome.verdict()

    results = yield ops
    if isinstance(ops[0], BanCheck) and results[0]:
        return Verdict("REJECT 5.7.1 this client is banned for abuse; try again later")
    by_op = _by_op(ops, results)

    if invalid is not None and bad is not None:
        count = by_op[id(invalid)]
        if (
            bad.invalid_recipients is not None
            and isinstance(count, int)
            and count >= bad.invalid_recipients
        ):
            yield [Ban(client, bad.ban_for)]
            outcome.logs.append(
                f"ban client={client} reason=invalid_recipients count={count} "
                f"within={int(bad.within)}s for={int(bad.ban_for)}s"
            )
            outcome.events.append(
                Event(
                    "abuse.bad_smtp_session",
                    client,
                    f"{count} unknown recipients within {bad.within}",
                )
            )
            outcome.act("reject", "too many unknown recipients: this client is banned")

    for take, named, subject in takes:
        if not by_op[id(take)]:
            _throttled(outcome, named, subject, f"{take.key.rsplit(':', 1)[-1]}")

    mailing_list = view.lists.get(recipient)
    if mailing_list is not None and not _may_post(mailing_list, login, sender):
        if mailing_list.denied_posts == "reject":
            outcome.act("reject", f"you may not post to {recipient}")
        else:
            outcome.act("hold", f"post to {recipient} awaits a moderator")
            outcome.events.append(
                Event("list.post_held", recipient, f"post from {login or sender or '<>'} held")
            )
    return outcome.verdict()


def _may_post(mailing_list: MailingList, login: str, sender: str) -> bool:
    if mailing_list.posting == "anyone":
        return True
    if mailing_list.posting == "moderators":
        # moderators are local users: only a login proves who they are
        return bool(login) and login in mailing_list.moderators
    poster = login or sender
    return poster in mailing_list.members or poster in mailing_list.moderators


def _throttled(outcome: _Outcome, named: NamedThrottle, subject: str, what: str) -> None:
    throttle = named.throttle
    limit = getattr(throttle, what)
    text = f"sending limit reached: {what} {limit} ({named.name})"
    outcome.act(throttle.action, text)
    outcome.events.append(Event("throttle.hit", f"{subject}/{named.name}", text))


def _end_of_message(request: dict[str, str], view: PolicyView) -> Decision:
    login = sender_identity(request, view)
    sender = request.get("sender", "").lower()
    client = request.get("client_address", "")
    size = _int(request.get("size"))
    recipients = _int(request.get("recipient_count"))
    outcome = _Outcome()

    if view.large_message_above is not None and size > view.large_message_above:
        outcome.events.append(
            Event("message.large", login or sender or client, f"{size} bytes from {sender or '<>'}")
        )
    if not login:
        return outcome.verdict()

    ops: list[Op] = []
    takes: list[tuple[Take, str]] = []
    named = view.user_throttles.get(login)
    if named is not None:
        if named.throttle.messages is not None:
            rate = named.throttle.messages
            takes.append((Take(f"user:{login}:messages", 1, rate.count, rate.window), "messages"))
        if named.throttle.bytes is not None:
            budget = named.throttle.bytes
            takes.append(
                (Take(f"user:{login}:bytes", size, int(budget.size), budget.window), "bytes")
            )
    ops += [take for take, _ in takes]
    spammer = view.internal_spammer
    sizes = (
        SimilarSizes(f"sizes:{login}", size, spammer.within, spammer.size_tolerance / 100)
        if spammer is not None and size > 0
        else None
    )
    if sizes is not None:
        ops.append(sizes)

    by_op: dict[int, Result] = {}
    if ops:
        results = yield ops
        by_op = _by_op(ops, results)
    for take, what in takes:
        if not by_op[id(take)]:
            assert named is not None
            _throttled(outcome, named, login, what)
    if sizes is not None and spammer is not None:
        similar = by_op[id(sizes)]
        if isinstance(similar, int) and similar >= spammer.same_size_messages:
            text = f"{similar} messages of about {size} bytes within {spammer.within}"
            outcome.act(spammer.action, f"looks like bulk mail from an account: {text}")
            outcome.events.append(Event("abuse.internal_spammer", login, text))

    usage = UsageRow(
        login, sender, recipients, size, client, view.user_pools.get(login), outcome.action
    )
    return outcome.verdict(usage)


def _by_op(ops: list[Op], results: list[Result]) -> dict[int, Result]:
    """Results by operation, by identity: two operations may be equal, never the same."""
    return {id(op): result for op, result in zip(ops, results, strict=True)}


def _int(value: str | None) -> int:
    try:
        return max(0, int(value or 0))
    except ValueError:
        return 0


# --------------------------------------------------------- Dovecot's auth policy

AUTH_REJECT = "REJECT"


def decide_auth(command: str, request: dict[str, object], view: PolicyView) -> Decision:
    """Dovecot asks before a login (``allow``) and reports its outcome (``report``):
    a banned client may not even try, and failed logins count towards a ban on every
    host that shares the store. A REJECT verdict is Dovecot's status -1."""
    client = str(request.get("remote") or "")
    if not client:
        return Verdict(PASS)
    if command == "allow":
        results = yield [BanCheck(client)]
        return Verdict(f"{AUTH_REJECT} banned for abuse" if results[0] else PASS)
    bad = view.bad_sessions
    if command != "report" or request.get("success") is not False:
        return Verdict(PASS)
    if bad is None or bad.auth_failures is None:
        return Verdict(PASS)
    (count,) = yield [Add(f"authfail:{client}", 1, bad.within)]
    if not isinstance(count, int) or count < bad.auth_failures:
        return Verdict(PASS)
    yield [Ban(client, bad.ban_for)]
    return Verdict(
        f"{AUTH_REJECT} too many failed logins",
        (Event("abuse.auth_failures", client, f"{count} failed logins within {bad.within}"),),
        (
            f"ban client={client} reason=auth_failures count={count} "
            f"within={int(bad.within)}s for={int(bad.ban_for)}s",
        ),
    )
