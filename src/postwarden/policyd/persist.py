"""Write counters behind to SQLite, and read them back after a restart.

Counting happens in memory; every ``interval`` seconds the keys that changed are
written in one transaction. A restart within a window therefore continues the
count; a crash loses at most the last interval of counts.
"""

from __future__ import annotations

import json
import sqlite3
from collections import deque
from pathlib import Path

from postwarden.policyd.counters import Counters, Window

SCHEMA = """
CREATE TABLE IF NOT EXISTS counters (
    key TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    data TEXT NOT NULL
)
"""


class CounterFile:
    def __init__(self, path: str) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute(SCHEMA)

    def load(self, counters: Counters) -> None:
        for key, kind, data in self.db.execute("SELECT key, kind, data FROM counters"):
            value = json.loads(data)
            if kind == "window":
                counters.windows[key] = Window(
                    value["bucket"], deque([list(b) for b in value["buckets"]]), value["total"]
                )
            elif kind == "sizes":
                counters.sizes[key] = deque((t, s) for t, s in value)
            elif kind == "ban":
                counters.bans[key.removeprefix("ban:")] = float(value)

    def save(self, counters: Counters) -> int:
        """Write what changed since the last save; return how many keys."""
        dirty, counters.dirty = counters.dirty, set()
        rows, gone = [], []
        for key in dirty:
            if key.startswith("ban:"):
                until = counters.bans.get(key.removeprefix("ban:"))
                if until:
                    rows.append((key, "ban", json.dumps(until)))
                else:
                    gone.append(key)
            elif key in counters.windows:
                window = counters.windows[key]
                data = {
                    "bucket": window.bucket_seconds,
                    "buckets": list(window.buckets),
                    "total": window.total,
                }
                rows.append((key, "window", json.dumps(data)))
            elif key in counters.sizes:
                rows.append((key, "sizes", json.dumps(list(counters.sizes[key]))))
            else:
                gone.append(key)
        with self.db:
            self.db.execute("BEGIN")
            self.db.executemany(
                "INSERT INTO counters (key, kind, data) VALUES (?, ?, ?) "
                "ON CONFLICT(key) DO UPDATE SET kind = excluded.kind, data = excluded.data",
                rows,
            )
            self.db.executemany("DELETE FROM counters WHERE key = ?", [(k,) for k in gone])
        return len(rows) + len(gone)

    def close(self) -> None:
        self.db.close()
