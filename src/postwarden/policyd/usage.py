"""The usage log: one row per accepted outbound message, the raw material of reports.

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

from postwarden.policyd.decide import UsageRow
from postwarden.policyd.sqlite_files import open_with_schema

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
    decision TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS usage_time ON usage (time);
DROP INDEX IF EXISTS usage_login;
"""
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
        self.retention = retention
        self.clock = clock
        self._pending: list[tuple[object, ...]] = []
        self._purged = 0.0
        self._purge_before: float | None = None
        """While a purge is under way: rows older than this are still to go."""

    @property
    def purging(self) -> bool:
        """A purge is under way: call ``flush`` again (after yielding) to go on."""
        return self._purge_before is not None

    def add(self, row: UsageRow) -> None:
        self._pending.append(
            (
                self.clock(),
                row.login,
                row.sender,
                row.recipients,
                row.size,
                row.client,
                row.pool,
                row.decision,
            )
        )

    def flush(self, limit: int | None = None) -> int:
        """Write pending rows (at most ``limit``); return how many were written."""
        if limit is None or len(self._pending) <= limit:
            rows, self._pending = self._pending, []
        else:
            rows, self._pending = self._pending[:limit], self._pending[limit:]
        try:
            if rows:
                with self.db:
                    self.db.execute("BEGIN")
                    self.db.executemany("INSERT INTO usage VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
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

    def close(self) -> None:
        self.flush()
        self.db.close()
