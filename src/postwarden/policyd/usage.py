"""The usage log: one row per accepted outbound message, the raw material of reports.

Rows are buffered and written in batches; rows older than the retention are
deleted once an hour.

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
from postwarden.policyd.sqlite_files import open_for_loop

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


class UsageLog:
    def __init__(self, path: str, retention: int, clock: Callable[[], float] = time.time) -> None:
        self.path = path
        # rows go to the end of the table and of its index: a few pages are all it touches
        self.db = open_for_loop(path, cache_mb=2)
        self.db.executescript(SCHEMA)
        self.retention = retention
        self.clock = clock
        self._pending: list[tuple[object, ...]] = []
        self._purged = 0.0

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
            if now - self._purged >= PURGE_EVERY:
                self._purged = now
                self.db.execute("DELETE FROM usage WHERE time < ?", (now - self.retention,))
        except sqlite3.Error as error:
            log.error("cannot write the usage log: %s", error)
            return 0
        return len(rows)

    def close(self) -> None:
        self.flush()
        self.db.close()
