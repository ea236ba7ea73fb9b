"""The usage log: one row per accepted outbound message, the raw material of reports,
and every event the daemon raised (the abuse report).

rspamd scans a message after the daemon's END-OF-MESSAGE decision; its verdict on
outbound mail arrives a moment later (spam.py) and corrects the message's row by
its queue ID: REJECT or HOLD, with rspamd's action and score.

Rows are buffered and written in batches; rows older than the retention are
deleted once an hour, a slice at a time.

The table has one index, on time: rows arrive in time order, so it only ever grows
at its end. An index on the login would take every row into a random place of a
B-tree that outgrows the cache, and each insert slows as the log grows (3.5 us a row
empty, 10.6 us at 1.2 million rows); reports read a period, grouped by login, which
the time index serves.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable

from postwarden.policyd.decide import Event, UsageRow
from postwarden.policyd.sqlite_files import open_with_schema
from postwarden.policyd.usage_stream import UsageStream

log = logging.getLogger("postwarden.policyd")

SCHEMA = """
CREATE TABLE IF NOT EXISTS usage (
    time REAL NOT NULL,
    login TEXT NOT NULL,
    sender TEXT NOT NULL,
    recipients INTEGER NOT NULL,
    size INTEGER NOT NULL,
    client TEXT NOT NULL,
    pool TEXT,
    decision TEXT NOT NULL,
    queue_id TEXT NOT NULL DEFAULT '',
    spam_action TEXT,
    spam_score REAL,
    spam_symbols TEXT
);
CREATE INDEX IF NOT EXISTS usage_time ON usage (time);
DROP INDEX IF EXISTS usage_login;
CREATE TABLE IF NOT EXISTS holds (
    time REAL NOT NULL,
    queue_id TEXT NOT NULL,
    reason TEXT NOT NULL,
    login TEXT NOT NULL,
    sender TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS holds_queue_id ON holds (queue_id);
CREATE TABLE IF NOT EXISTS events (
    time REAL NOT NULL,
    kind TEXT NOT NULL,
    subject TEXT NOT NULL,
    detail TEXT NOT NULL,
    client TEXT NOT NULL,
    login TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_time ON events (time);
"""
REPORT_INDEXES = """
CREATE INDEX IF NOT EXISTS usage_other_domain
    ON usage (time, login, sender, recipients, size)
    WHERE substr(sender, instr(sender, '@') + 1) <> substr(login, instr(login, '@') + 1);
CREATE INDEX IF NOT EXISTS usage_not_passed
    ON usage (time, login, sender, decision, spam_action, recipients, size, spam_score,
              spam_symbols)
    WHERE decision <> 'DUNNO' OR spam_action IS NOT NULL;
"""
"""The few rows the reports read more of than login and counts (reports/usage.py):
those sent under another domain's address, and those not simply passed. Partial
indexes cost a write only for those rows; holding every column the reports read,
they spare the reports a second pass over all the others."""
ADDED_COLUMNS = {
    "queue_id": "TEXT NOT NULL DEFAULT ''",
    "spam_action": "TEXT",
    "spam_score": "REAL",
    "spam_symbols": "TEXT",
}
"""Columns a log written by an earlier version lacks: added when it is opened."""
VERDICT_WITHIN = 3600.0
"""How far back a verdict looks for its message's row: rspamd answers in seconds, and
the time index keeps the search to the last hour's rows."""
PURGE_EVERY = 3600.0
PURGE_SLICE = 2000
"""Rows deleted by one flush: about a millisecond of the event loop's time. A million
expired rows in one statement held every reply for half a second."""


class UsageLog:
    def __init__(self, path: str, retention: int, clock: Callable[[], float] = time.time) -> None:
        self.path = path
        # rows go to the end of the table and of its index: a few pages are all it touches
        # an unreadable file is moved aside, not deleted: reports are made from it
        self.db = open_with_schema(path, cache_mb=2, schema=SCHEMA)
        self._add_columns()
        self.retention = retention
        self.clock = clock
        self._pending: list[tuple[object, ...]] = []
        self._pending_holds: list[tuple[object, ...]] = []
        self._pending_events: list[tuple[object, ...]] = []
        self._purged = 0.0
        self._purge_before: float | None = None
        """While a purge is under way: rows older than this are still to go."""
        self.mirror: UsageStream | None = None
        """Where the MTAs sharing a Redis store meet: everything written here, there too."""

    @property
    def purging(self) -> bool:
        """A purge is under way: call ``flush`` again (after yielding) to go on."""
        return self._purge_before is not None

    def add(self, row: UsageRow) -> None:
        now = self.clock()
        if self.mirror is not None:
            self.mirror.add(row, now)
        # the table's columns: the row's fields in order, then rspamd's verdict, later
        self._pending.append((now, *row, None, None, None))

    def add_hold(self, queue_id: str, reason: str, login: str, sender: str) -> None:
        """Why message ``queue_id`` went to the hold queue (few: written with the rows)."""
        self._pending_holds.append((self.clock(), queue_id, reason, login, sender))

    def add_event(self, event: Event) -> None:
        """An event the daemon raised, for the abuse report: every one, before the
        cooldown that spares the notification channels."""
        now = self.clock()
        if self.mirror is not None:
            self.mirror.add_event(event, now)
        self._pending_events.append(
            (now, event.kind, event.subject, event.detail, event.client, event.login)
        )

    def mark_spam(
        self,
        queue_id: str,
        decision: str | None,
        action: str,
        score: float,
        symbols: tuple[str, ...] = (),
    ) -> bool:
        """Record rspamd's verdict on the row of message ``queue_id``; ``decision``
        replaces the row's when rspamd refused or held it. False when no row has that
        queue ID (the message was not one the daemon logs)."""
        if not queue_id:
            return False
        if self.mirror is not None:
            self.mirror.mark_spam(queue_id, decision, action, score, symbols, self.clock())
        named = " ".join(symbols) or None
        for index in range(len(self._pending) - 1, -1, -1):
            row = self._pending[index]
            if row[8] == queue_id:
                self._pending[index] = (
                    *row[:7],
                    decision if decision is not None else row[7],
                    queue_id,
                    action,
                    score,
                    named,
                )
                return True
        try:
            with self.db:
                changed = self.db.execute(
                    "UPDATE usage SET decision = coalesce(?, decision), spam_action = ?, "
                    "spam_score = ?, spam_symbols = ? WHERE time >= ? AND queue_id = ?",
                    (decision, action, score, named, self.clock() - VERDICT_WITHIN, queue_id),
                ).rowcount
        except sqlite3.Error as error:
            log.error("cannot write the usage log: %s", error)
            return False
        return changed > 0

    def _add_columns(self) -> None:
        present = {row[1] for row in self.db.execute("PRAGMA table_info(usage)")}
        for name, kind in ADDED_COLUMNS.items():
            if name not in present:
                self.db.execute(f"ALTER TABLE usage ADD COLUMN {name} {kind}")
        # after the columns it names: an older log gets them first
        self.db.executescript(REPORT_INDEXES)

    def flush(self, limit: int | None = None) -> int:
        """Write pending rows (at most ``limit``); return how many were written."""
        if limit is None or len(self._pending) <= limit:
            rows, self._pending = self._pending, []
        else:
            rows, self._pending = self._pending[:limit], self._pending[limit:]
        holds, self._pending_holds = self._pending_holds, []
        events, self._pending_events = self._pending_events, []
        try:
            if holds:
                with self.db:
                    self.db.executemany("INSERT INTO holds VALUES (?, ?, ?, ?, ?)", holds)
            if events:
                with self.db:
                    self.db.executemany("INSERT INTO events VALUES (?, ?, ?, ?, ?, ?)", events)
            if rows:
                with self.db:
                    self.db.execute("BEGIN")
                    self.db.executemany(
                        "INSERT INTO usage VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows
                    )
            now = self.clock()
            if self._purge_before is None and now - self._purged >= PURGE_EVERY:
                self._purged = now
                self._purge_before = now - self.retention
            if self._purge_before is not None:
                self._purge_slice(self._purge_before)
        except sqlite3.Error as error:
            log.error("cannot write the usage log: %s", error)
            self._purge_before = None  # not retried on every flush: at the next period
            return 0
        return len(rows)

    def _purge_slice(self, before: float) -> None:
        """Delete the oldest PURGE_SLICE rows older than ``before``, through the time
        index; the purge ends with a slice that finds fewer."""
        deleted = self.db.execute(
            "DELETE FROM usage WHERE rowid IN "
            "(SELECT rowid FROM usage WHERE time < ? ORDER BY time LIMIT ?)",
            (before, PURGE_SLICE),
        ).rowcount
        if deleted < PURGE_SLICE:
            self._purge_before = None
            # few: a hold is rare, and most are decided within days; events are
            # deduplicated by nothing but are still far fewer than messages
            self.db.execute("DELETE FROM holds WHERE time < ?", (before,))
            self.db.execute("DELETE FROM events WHERE time < ?", (before,))

    def close(self) -> None:
        self.flush()
        self.db.close()
