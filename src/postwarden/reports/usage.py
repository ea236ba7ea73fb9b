"""Reading postwarden-policyd's usage log for a period: no I/O beyond the query."""

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


def read_sent(path: str, start: float, end: float) -> list[Sent]:
    """The rows of [start, end), through the log's time index; read-only."""
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5.0)
    except sqlite3.Error as error:
        raise UsageLogUnreadable(f"{path}: {error}") from None
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
