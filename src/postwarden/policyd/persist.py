"""Write counters behind to SQLite, and read them back after a restart.

Counting happens in memory; every ``interval`` seconds the keys that changed are
written in one transaction. A restart within a window therefore continues the
count; a crash loses at most the last interval of counts.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import struct
from array import array
from collections import deque
from itertools import chain

from postwarden.policyd.counters import Counters, Window
from postwarden.policyd.sqlite_files import is_corrupt, move_aside, open_with_schema

log = logging.getLogger("postwarden.policyd")

SCHEMA = """
CREATE TABLE IF NOT EXISTS counters (
    key TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    data TEXT NOT NULL
)
"""
# A window is stored as packed 64-bit integers (bucket seconds, total, then its flat
# buckets) and message sizes as packed doubles (time, size, ...): every active key is
# written every second, and packing is a single C call where text took a Python loop
# per bucket. Files written by earlier versions hold text, which load() still reads.
_WINDOW_HEAD = struct.Struct("<qq")


class CounterFile:
    def __init__(self, path: str) -> None:
        self.path = path
        # changed keys are written in key order, so a slice touches neighbouring pages
        self.db = open_with_schema(path, cache_mb=4, schema=SCHEMA)

    def load(self, counters: Counters) -> None:
        """Read the counts back. The file is a cache of recent windows: an unreadable
        file is moved aside and counting starts over, rather than the daemon not
        starting; an unreadable row is skipped, and deleted by the next write."""
        bad: list[object] = []
        try:
            for key, kind, data in self.db.execute("SELECT key, kind, data FROM counters"):
                try:
                    _load_row(counters, key, kind, data)
                except (struct.error, ValueError, TypeError):
                    bad.append(key)
        except sqlite3.DatabaseError as error:
            if not is_corrupt(error):
                raise
            self.db.close()
            move_aside(self.path, error)
            counters.windows.clear()
            counters.sizes.clear()
            counters.seen.clear()
            counters.bans.clear()
            self.db = open_with_schema(self.path, cache_mb=4, schema=SCHEMA)
            return
        if bad:
            log.error(
                "%s: skipped %d unreadable counter rows (first: %r)", self.path, len(bad), bad[0]
            )
            counters.dirty.update(key for key in bad if isinstance(key, str))

    def changed_keys(self, counters: Counters) -> list[str]:
        """Take the keys changed since the last call, in the table's order: written in
        that order, consecutive rows share pages, and a slice of them rewrites a few
        pages of the file instead of one page per row. Whoever takes them and fails to
        write them hands them back with ``unwritten``."""
        dirty, counters.dirty = counters.dirty, set()
        return sorted(dirty)

    def unwritten(self, counters: Counters, keys: list[str]) -> None:
        """Mark ``keys`` as changed again: they did not reach the file."""
        counters.dirty.update(keys)

    def rows(
        self, counters: Counters, keys: list[str]
    ) -> tuple[list[tuple[str, str, str | bytes]], list[str]]:
        """The current state of ``keys``: rows to write, and keys to delete."""
        rows: list[tuple[str, str, str | bytes]] = []
        gone = []
        windows, sizes, pack = counters.windows, counters.sizes, _WINDOW_HEAD.pack
        for key in keys:
            window = windows.get(key)
            if window is not None:
                data = pack(window.bucket_seconds, window.total) + array("q", window.buckets)
                rows.append((key, "window", data))
            elif key in sizes:
                rows.append((key, "sizes", array("d", chain.from_iterable(sizes[key])).tobytes()))
            elif key in counters.seen:
                rows.append((key, "seen", json.dumps(counters.seen[key])))
            elif key.startswith("ban:"):
                until = counters.bans.get(key.removeprefix("ban:"))
                if until:
                    rows.append((key, "ban", repr(until)))
                else:
                    gone.append(key)
            else:
                gone.append(key)
        return rows, gone

    def write(self, rows: list[tuple[str, str, str | bytes]], gone: list[str]) -> int:
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
        keys = self.changed_keys(counters)
        try:
            return self.write(*self.rows(counters, keys))
        except sqlite3.Error:
            self.unwritten(counters, keys)
            raise

    def close(self) -> None:
        self.db.close()


def _load_row(counters: Counters, key: str, kind: str, data: str | bytes) -> None:
    if not isinstance(key, str):
        raise TypeError(f"key {key!r}")
    if kind == "window":
        counters.windows[key] = _window(data)
    elif kind == "sizes":
        counters.sizes[key] = _sizes(data)
    elif kind == "seen":
        counters.seen[key] = _seen(data)
    elif kind == "ban":
        counters.bans[key.removeprefix("ban:")] = float(data)


def _window(data: str | bytes) -> Window:
    if isinstance(data, bytes):
        bucket, total = _WINDOW_HEAD.unpack_from(data)
        buckets = array("q", data[_WINDOW_HEAD.size :]).tolist()
    else:
        bucket_text, total_text, pairs = data.split("|", 2)
        bucket, total, buckets = int(bucket_text), int(total_text), []
        for item in pairs.split(";"):
            if item:
                number, _, count = item.partition(":")
                buckets += (int(number), int(count))
    # a window that cannot be counted with would fail later, on a request
    if bucket < 1 or len(buckets) % 2:
        raise ValueError(f"window of {bucket} s with {len(buckets)} numbers")
    return Window(bucket, buckets, total)


def _sizes(data: str | bytes) -> deque[tuple[float, int]]:
    if isinstance(data, bytes):
        flat = array("d", data)
        return deque(zip(flat[::2], map(int, flat[1::2]), strict=True))
    return deque(
        (float(t), int(size))
        for t, _, size in (item.partition(":") for item in data.split(";") if item)
    )


def _seen(data: str | bytes) -> dict[str, float]:
    members = json.loads(data)
    if not isinstance(members, dict):
        raise ValueError("not a mapping")
    return {str(member): float(at) for member, at in members.items()}
