"""Reading postwarden-policyd's usage log, read-only, beside the daemon that writes it:
the messages of a period (reports), and why messages are held (moderation)."""

from __future__ import annotations

import sqlite3
from collections import Counter
from dataclasses import dataclass, field


class UsageLogUnreadable(Exception):
    """The usage log is missing or not a usage log."""


@dataclass(frozen=True)
class SenderTotals:
    """One login's mail under one envelope sender in a period: what left, and the
    messages held (for a moderator) or refused (deferred or rejected)."""

    login: str
    sender: str
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


# Totals are summed by SQLite, not in Python: a week of a busy server is millions of
# rows, and a Python object per row costs several times the query. One pass over the
# period's rows serves both reports, grouped by login, sender and one short key that
# is empty for the common case (passed, no spam verdict): SQLite's sorter is the cost,
# and a narrow key is what keeps it close to a bare GROUP BY (bench/report_bench.py).
TOTALS = """
SELECT login, sender,
       CASE WHEN decision = 'DUNNO' AND spam_action IS NULL THEN ''
            ELSE substr(decision, 1, 2) || coalesce(spam_action, '') END AS kind,
       count(*), sum(recipients), sum(size), max(spam_score), group_concat(spam_symbols, ' ')
FROM usage WHERE time >= ? AND time < ?
GROUP BY login, sender, kind
"""
HELD, REFUSED = ("HO",), ("DE", "RE")
"""What the first two letters of a decision say: HOLD; DEFER or REJECT. Anything
else (DUNNO) passed."""


def totals_of(db: sqlite3.Connection, start: float, end: float) -> UsageTotals:
    """Raises sqlite3.Error."""
    senders: dict[tuple[str, str], list[int]] = {}
    spam: dict[tuple[str, str], list[float]] = {}
    symbols: dict[str, Counter[str]] = {}
    for login, sender, kind, messages, recipients, size, highest, named in db.execute(
        TOTALS, (start, end)
    ):
        counts = senders.setdefault((login, sender), [0, 0, 0, 0, 0])
        decided, action = kind[:2], kind[2:]
        if decided in HELD:
            counts[3] += messages
        elif decided in REFUSED:
            counts[4] += messages
        else:
            counts[0] += messages
            counts[1] += recipients
            counts[2] += size
        if action:
            acted = spam.setdefault((login, action), [0, 0.0])
            acted[0] += messages
            acted[1] = max(acted[1], highest or 0.0)
            if named:
                symbols.setdefault(login, Counter()).update(named.split())
    return UsageTotals(
        [SenderTotals(login, sender, *counts) for (login, sender), counts in senders.items()],
        [
            SpamTotals(login, action, int(acted[0]), acted[1])
            for (login, action), acted in spam.items()
        ],
        symbols,
    )


def _open(path: str) -> sqlite3.Connection:
    try:
        return sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5.0)
    except sqlite3.Error as error:
        raise UsageLogUnreadable(f"{path}: {error}") from None


def read_totals(path: str, start: float, end: float) -> UsageTotals:
    """The totals of [start, end), through the log's time index."""
    db = _open(path)
    try:
        return totals_of(db, start, end)
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
