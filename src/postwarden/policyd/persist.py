"""Write counters behind to SQLite, and read them back after a restart.

Counting happens in memory; every ``interval`` seconds the keys that changed are
written in one transaction. A restart within a window therefore continues the
count; a crash loses at most the last interval of counts.
"""

from __future__ import annotations

from collections import deque

from postwarden.policyd.counters import Counters, Window
from postwarden.policyd.sqlite_files import open_for_loop

SCHEMA = """
CREATE TABLE IF NOT EXISTS counters (
    key TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    data TEXT NOT NULL
)
"""


class CounterFile:
    def __init__(self, path: str) -> None:
        self.path = path
        self.db = open_for_loop(path)
        self.db.execute(SCHEMA)

    def load(self, counters: Counters) -> None:
        for key, kind, data in self.db.execute("SELECT key, kind, data FROM counters"):
            if kind == "window":
                counters.windows[key] = _window(data)
            elif kind == "sizes":
                counters.sizes[key] = deque(
                    (float(t), int(size))
                    for t, _, size in (item.partition(":") for item in data.split(";") if item)
                )
            elif kind == "ban":
                counters.bans[key.removeprefix("ban:")] = float(data)

    def snapshot(
        self, counters: Counters, limit: int | None = None
    ) -> tuple[list[tuple[str, str, str]], list[str]]:
        """What changed since the last snapshot (at most ``limit`` keys of it), as rows
        to write and keys to delete."""
        if limit is None or len(counters.dirty) <= limit:
            dirty, counters.dirty = counters.dirty, set()
        else:
            dirty = {counters.dirty.pop() for _ in range(limit)}
        rows, gone = [], []
        for key in dirty:
            if key.startswith("ban:"):
                until = counters.bans.get(key.removeprefix("ban:"))
                if until:
                    rows.append((key, "ban", repr(until)))
                else:
                    gone.append(key)
            elif key in counters.windows:
                window = counters.windows[key]
                buckets = ";".join(f"{number}:{count}" for number, count in window.pairs())
                rows.append((key, "window", f"{window.bucket_seconds}|{window.total}|{buckets}"))
            elif key in counters.sizes:
                sizes = ";".join(f"{moment!r}:{size}" for moment, size in counters.sizes[key])
                rows.append((key, "sizes", sizes))
            else:
                gone.append(key)
        return rows, gone

    def write(self, rows: list[tuple[str, str, str]], gone: list[str]) -> int:
        with self.db:
            self.db.execute("BEGIN")
            self.db.executemany(
                "INSERT INTO counters (key, kind, data) VALUES (?, ?, ?) "
                "ON CONFLICT(key) DO UPDATE SET kind = excluded.kind, data = excluded.data",
                rows,
            )
            self.db.executemany("DELETE FROM counters WHERE key = ?", [(k,) for k in gone])
        return len(rows) + len(gone)

    def save(self, counters: Counters) -> int:
        """Write what changed since the last save; return how many keys."""
        return self.write(*self.snapshot(counters))

    def close(self) -> None:
        self.db.close()


def _window(data: str) -> Window:
    bucket, total, buckets = data.split("|", 2)
    flat: list[int] = []
    for item in buckets.split(";"):
        if item:
            number, _, count = item.partition(":")
            flat += (int(number), int(count))
    return Window(int(bucket), flat, int(total))
