"""SQLite files the daemon writes from its event loop: opened for that, and kept
small without stalling the loop."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from pathlib import Path

log = logging.getLogger("postwarden.policyd")
CHECKPOINT_EVERY = 10.0


def open_for_loop(path: str, cache_mb: int) -> sqlite3.Connection:
    """WAL, no fsync per commit, no automatic checkpoint. Without the last, SQLite
    copies the log back into the file inside whichever commit crosses 1,000 pages, and
    that commit, on the event loop, holds every reply meanwhile. ``cache_mb`` caps the
    pages kept in this process; the kernel's page cache holds the rest of the file."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("PRAGMA wal_autocheckpoint=0")
        db.execute(f"PRAGMA cache_size=-{cache_mb * 1024}")
    except sqlite3.Error:
        db.close()  # the caller may move the file aside: no handle left open on it
        raise
    return db


def is_corrupt(error: sqlite3.Error) -> bool:
    """Whether SQLite found the file unreadable, not merely busy or out of space."""
    code = getattr(error, "sqlite_errorcode", 0) & 0xFF
    return code in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB)


def move_aside(path: str, error: sqlite3.Error) -> str:
    """Move a file SQLite cannot read to ``path.corrupt-<time>``, with its log: kept
    for whoever wants to look, and out of the way of a new file. A stale log left
    next to the new file would be replayed into it."""
    aside = f"{path}.corrupt-{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}"
    for suffix in ("", "-wal", "-shm"):
        if Path(path + suffix).exists():
            Path(path + suffix).replace(aside + suffix)
    log.error(
        "%s is not a readable SQLite file (%s): moved to %s, starting empty", path, error, aside
    )
    return aside


def open_with_schema(path: str, cache_mb: int, schema: str) -> sqlite3.Connection:
    """``open_for_loop`` and create the schema. A file SQLite cannot read is moved
    aside and a new one started: the daemon must come up, and the old file is kept."""
    try:
        return _open_with_schema(path, cache_mb, schema)
    except sqlite3.DatabaseError as error:
        if not is_corrupt(error):
            raise
        move_aside(path, error)
    return _open_with_schema(path, cache_mb, schema)


def _open_with_schema(path: str, cache_mb: int, schema: str) -> sqlite3.Connection:
    db = open_for_loop(path, cache_mb)
    try:
        db.executescript(schema)
    except sqlite3.Error:
        db.close()
        raise
    return db


def checkpoint(path: str) -> None:
    """Copy the write-ahead log back into the file, on a connection of its own."""
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute("PRAGMA wal_checkpoint(PASSIVE)")
    finally:
        db.close()


async def checkpoint_forever(paths: list[str]) -> None:
    """Checkpoints in a worker thread: sqlite3 lets go of the GIL for the I/O."""
    while True:
        await asyncio.sleep(CHECKPOINT_EVERY)
        for path in paths:
            try:
                await asyncio.to_thread(checkpoint, path)
            except sqlite3.Error as error:
                log.warning("checkpoint of %s: %s", path, error)
