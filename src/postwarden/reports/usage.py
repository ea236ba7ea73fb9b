"""Reading postwarden-policyd's usage log, read-only, beside the daemon that writes it:
the messages of a period (reports), and why messages are held (moderation)."""

from __future__ import annotations

import sqlite3
from collections import Counter
from dataclasses import dataclass, field

from postwarden.reports.peaks import LONGEST_STEP, Budgets, Counts, Peak, PeakFinder


class UsageLogUnreadable(Exception):
    """The usage log is missing or not a usage log."""


@dataclass(frozen=True)
class SenderTotals:
    """One login's mail under the envelope senders of one domain in a period: what
    left, and the messages held (for a moderator) or refused (deferred or rejected)."""

    login: str
    domain: str
    """The envelope sender's domain; empty for the null sender."""
    messages: int
    recipients: int
    bytes: int
    held: int
    refused: int


@dataclass(frozen=True)
class SpamTotals:
    """The messages of one login that rspamd acted on in one way."""

    login: str
    action: str
    messages: int
    highest: float


@dataclass(frozen=True)
class UsageTotals:
    senders: list[SenderTotals]
    spam: list[SpamTotals]
    symbols: dict[str, Counter[str]] = field(default_factory=dict)
    """Per login: how often each rspamd symbol was among the heaviest of a verdict."""
    peaks: list[Peak] | None = None
    """How close each throttle came to its limit; None when the policy was not known."""


# Totals are summed by SQLite, not in Python: a week of a busy server is millions of
# rows, and a Python object per row costs several times the query. Reading a column
# is what costs SQLite most here, so the pass over every row of the period reads only
# login, time and the counts, grouped by login and step (what the throttles' peaks are
# counted in), and two partial indexes, which cover their few rows whole, give the
# rest: the rows whose sender is of another domain than the login (send-as grants,
# the null sender), and the rows that were not simply passed (deferred, held,
# rejected, or acted on by rspamd). A query's WHERE must repeat its index's condition
# word for word for SQLite to use it (policyd/usage.py holds both).
SENDER_DOMAIN = "substr(sender, instr(sender, '@') + 1)"
LOGIN_DOMAIN = "substr(login, instr(login, '@') + 1)"
ALL_ROWS = """
SELECT login, CAST(time AS INTEGER) / ?, count(*), sum(recipients), sum(size)
FROM usage WHERE time >= ? AND time < ?
GROUP BY 1, 2 ORDER BY 1, 2
"""
OTHER_DOMAIN = f"""
SELECT login, {SENDER_DOMAIN}, CAST(time AS INTEGER) / ?, count(*), sum(recipients), sum(size)
FROM usage WHERE ({SENDER_DOMAIN} <> {LOGIN_DOMAIN}) AND time >= ? AND time < ?
GROUP BY 1, 2, 3
"""
NOT_PASSED = f"""
SELECT login, {SENDER_DOMAIN}, CAST(time AS INTEGER) / ?, substr(decision, 1, 2), spam_action,
       count(*), sum(recipients), sum(size), max(spam_score), group_concat(spam_symbols, ' ')
FROM usage WHERE (decision <> 'DUNNO' OR spam_action IS NOT NULL) AND time >= ? AND time < ?
GROUP BY 1, 2, 3, 4, 5
"""
HELD, REFUSED = ("HO",), ("DE", "RE")
"""What the first two letters of a decision say: HOLD; DEFER or REJECT. Anything
else (DUNNO) passed."""


def totals_of(
    db: sqlite3.Connection, start: float, end: float, budgets: Budgets | None = None
) -> UsageTotals:
    """Raises sqlite3.Error."""
    step = budgets.step() if budgets is not None else LONGEST_STEP
    finder = PeakFinder(budgets, step) if budgets is not None else None
    sent: dict[tuple[str, str], list[int]] = {}
    """(login, sender domain) -> messages, recipients, bytes, held, refused"""
    refused: dict[tuple[str, int], Counts] = {}
    """(login, step) -> what the throttles did not count"""
    spam: dict[tuple[str, str], list[float]] = {}
    symbols: dict[str, Counter[str]] = {}
    params = (step, start, end)
    db.execute("BEGIN")  # one snapshot for the three queries while the daemon writes on
    try:
        for login, domain, at, messages, rcpts, size in db.execute(OTHER_DOMAIN, params):
            _add(_slot(sent, login, _domain(login)), -messages, -rcpts, -size)
            _add(_slot(sent, login, domain), messages, rcpts, size)
            if finder is not None:
                finder.add_shared(_domain(login), at, [-messages, -rcpts, -size])
                finder.add_shared(domain, at, [messages, rcpts, size])
        for login, domain, at, decided, action, messages, rcpts, size, highest, named in db.execute(
            NOT_PASSED, params
        ):
            if decided in HELD or decided in REFUSED:
                counts = _slot(sent, login, domain)
                _add(counts, -messages, -rcpts, -size)
                counts[3 if decided in HELD else 4] += messages
            if decided in REFUSED:
                _add(refused.setdefault((login, at), [0, 0, 0]), messages, rcpts, size)
                if finder is not None:
                    finder.add_shared(domain, at, [-messages, -rcpts, -size])
            if action:
                acted = spam.setdefault((login, action), [0, 0.0])
                acted[0] += messages
                acted[1] = max(acted[1], highest or 0.0)
                if named:
                    symbols.setdefault(login, Counter()).update(named.split())
        nothing = (0, 0, 0)
        for login, at, messages, rcpts, size in db.execute(ALL_ROWS, params):
            domain = _domain(login)
            _add(_slot(sent, login, domain), messages, rcpts, size)
            if finder is not None:
                # what the throttles counted: all but the refused
                out = refused.get((login, at), nothing)
                counted = [messages - out[0], rcpts - out[1], size - out[2]]
                finder.add_own(login, at, counted)
                finder.add_shared(domain, at, [messages, rcpts, size])
    finally:
        db.execute("COMMIT")
    return UsageTotals(
        [
            SenderTotals(login, domain, *counts)
            for (login, domain), counts in sent.items()
            if any(counts)  # a login's own domain, when it sent only as another
        ],
        [
            SpamTotals(login, action, int(acted[0]), acted[1])
            for (login, action), acted in spam.items()
        ],
        symbols,
        finder.finish() if finder is not None else None,
    )


def _domain(address: str) -> str:
    return address[address.find("@") + 1 :]


def _slot(sent: dict[tuple[str, str], list[int]], login: str, domain: str) -> list[int]:
    counts = sent.get((login, domain))
    if counts is None:
        counts = sent[(login, domain)] = [0, 0, 0, 0, 0]
    return counts


def _add(counts: list[int], messages: int, rcpts: int, size: int) -> None:
    counts[0] += messages
    counts[1] += rcpts
    counts[2] += size


def _open(path: str) -> sqlite3.Connection:
    try:
        # autocommit: totals_of opens its own read transaction
        return sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5.0, isolation_level=None)
    except sqlite3.Error as error:
        raise UsageLogUnreadable(f"{path}: {error}") from None


def read_totals(path: str, start: float, end: float, budgets: Budgets | None = None) -> UsageTotals:
    """The totals of [start, end), through the log's time index."""
    db = _open(path)
    try:
        return totals_of(db, start, end, budgets)
    except sqlite3.Error as error:
        raise UsageLogUnreadable(f"{path}: {error}") from None
    finally:
        db.close()


@dataclass(frozen=True)
class Raised:
    """One event as the daemon raised it."""

    time: float
    kind: str
    subject: str
    detail: str
    client: str
    login: str
    host: str = ""


def read_events(path: str, start: float, end: float) -> list[Raised]:
    """The events of [start, end). A log written before events were kept has none."""
    db = _open(path)
    try:
        rows = db.execute(
            "SELECT time, kind, subject, detail, client, login FROM events "
            "WHERE time >= ? AND time < ? ORDER BY time",
            (start, end),
        ).fetchall()
    except sqlite3.OperationalError as error:
        if "no such table: events" in str(error):
            return []
        raise UsageLogUnreadable(f"{path}: {error}") from None
    except sqlite3.Error as error:
        raise UsageLogUnreadable(f"{path}: {error}") from None
    finally:
        db.close()
    return [Raised(*row) for row in rows]


def read_holds(path: str, queue_ids: list[str]) -> dict[str, tuple[str, str, str]]:
    """Why each of these messages is held: queue ID -> (reason, login, sender), the
    latest word on each. An absent or unreadable log gives nothing rather than an
    error: the held messages are listed all the same."""
    if not queue_ids:
        return {}
    found: dict[str, tuple[str, str, str]] = {}
    try:
        db = _open(path)
    except UsageLogUnreadable:
        return {}
    try:
        marks = ",".join("?" * len(queue_ids))
        for queue_id, reason, login, sender in db.execute(
            f"SELECT queue_id, reason, login, sender FROM holds WHERE queue_id IN ({marks}) "
            "ORDER BY time",
            queue_ids,
        ):
            found[queue_id] = (reason, login, sender)
    except sqlite3.Error:
        return {}
    finally:
        db.close()
    return found
