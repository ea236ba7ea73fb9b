"""SQLite files the daemon writes from its event loop: opened for that, and kept
small without stalling the loop."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
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
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute("PRAGMA wal_autocheckpoint=0")
    db.execute(f"PRAGMA cache_size=-{cache_mb * 1024}")
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
