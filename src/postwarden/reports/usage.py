"""Reading postwarden-policyd's usage log, read-only, beside the daemon that writes it:
the messages of a period (reports), and why messages are held (moderation)."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass


class UsageLogUnreadable(Exception):
    """The usage log is missing or not a usage log."""


@dataclass(frozen=True)
class Sent:
    """One outbound message as the daemon logged it."""

    time: float
    login: str
    sender: str
    recipients: int
    size: int
    decision: str
    spam_action: str | None
    spam_score: float | None


def _open(path: str) -> sqlite3.Connection:
    try:
        return sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5.0)
    except sqlite3.Error as error:
        raise UsageLogUnreadable(f"{path}: {error}") from None


def read_sent(path: str, start: float, end: float) -> list[Sent]:
    """The rows of [start, end), through the log's time index."""
    db = _open(path)
    try:
        rows = db.execute(
            "SELECT time, login, sender, recipients, size, decision, spam_action, spam_score "
            "FROM usage WHERE time >= ? AND time < ? ORDER BY time",
            (start, end),
        ).fetchall()
    except sqlite3.Error as error:
        raise UsageLogUnreadable(f"{path}: {error}") from None
    finally:
        db.close()
    return [Sent(*row) for row in rows]


@dataclass(frozen=True)
class Raised:
    """One event as the daemon raised it."""

    time: float
    kind: str
    subject: str
    detail: str
    client: str
    login: str


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
