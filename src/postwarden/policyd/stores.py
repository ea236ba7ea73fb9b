"""Where counters live: in this process (written behind to SQLite), or in Redis."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import Callable
from typing import Protocol

from postwarden.policyd.counters import Counters
from postwarden.policyd.decide import Ban, Op, Result, abuse_keys
from postwarden.policyd.persist import CounterFile

log = logging.getLogger("postwarden.policyd")
WRITE_SLICE = 200
"""Rows written at a time between requests: well under a millisecond of the loop's time."""


class StoreUnavailable(Exception):
    """The store cannot answer; the daemon applies its fail_mode."""


class Store(Protocol):
    async def run(self, ops: list[Op]) -> list[Result]: ...

    async def bans(self) -> dict[str, float]:
        """Every ban in force: client address -> when it ends (Unix time)."""
        ...

    async def lift(self, client: str) -> bool:
        """End a client's ban now, and forget the counts that led to it; whether there
        was a ban in force."""
        ...

    async def close(self) -> None: ...


class LocalStore:
    """Counters in memory, optionally written behind to SQLite. A batch runs without
    an await inside, so it is atomic for every connection of this event loop."""

    def __init__(
        self,
        sqlite_path: str | None = None,
        clock: Callable[[], float] = time.time,
        flush_interval: float = 1.0,
        longest_window: int = 86400 * 7,
    ) -> None:
        """``longest_window``: the longest window the policy counts in (see
        ``PolicyView.longest_window``); a key idle for longer is forgotten."""
        self.counters = Counters()
        self.clock = clock
        self.flush_interval = flush_interval
        self.longest_window = longest_window
        self.file = CounterFile(sqlite_path) if sqlite_path else None
        if self.file is not None:
            self.file.load(self.counters)
        self._flusher: asyncio.Task[None] | None = None

    async def run(self, ops: list[Op]) -> list[Result]:
        return self.run_now(ops)

    def run_now(self, ops: list[Op]) -> list[Result]:
        """A batch at once: nothing here waits, so it is atomic on the event loop."""
        if self.file is not None and self._flusher is None:
            self._flusher = asyncio.get_running_loop().create_task(self._flush_forever())
        results = self.counters.run(ops, self.clock())
        if self.file is not None and any(type(op) is Ban for op in ops):
            self._write_bans(self.file, [op for op in ops if type(op) is Ban])
        return results

    def _write_bans(self, file: CounterFile, bans: list[Ban], also: tuple[str, ...] = ()) -> None:
        """A ban is written at once, not a second later: a daemon that is killed right
        after banning a client must still refuse it when it is back. Bans are rare.
        ``also``: further keys to write with them."""
        keys = [*(f"ban:{ban.client}" for ban in bans), *also]
        try:
            file.write(*file.rows(self.counters, keys))
        except sqlite3.Error as error:
            log.error("cannot write a ban to disk: %s", error)
            return
        self.counters.dirty.difference_update(keys)

    async def _flush_forever(self) -> None:
        sweeps = 0
        while True:
            await asyncio.sleep(self.flush_interval)
            sweeps += 1
            if sweeps % 60 == 0:
                self.counters.sweep(self.clock(), self.longest_window)
            # on the loop in small slices, not in a thread: sqlite3 hands the GIL back
            # and forth for every row, which costs the loop more than the writes do
            try:
                if self.file is not None:
                    await self._write_changes(self.file)
            except sqlite3.Error as error:
                log.error("cannot write counters to disk: %s", error)

    async def _write_changes(self, file: CounterFile) -> None:
        keys = file.changed_keys(self.counters)
        written = 0
        try:
            while written < len(keys):
                file.write(*file.rows(self.counters, keys[written : written + WRITE_SLICE]))
                written += WRITE_SLICE
                await asyncio.sleep(0)
        finally:
            # a failed slice, or a cancel between slices: the rest waits for the next
            # write (or close's), instead of being lost
            file.unwritten(self.counters, keys[written:])

    async def bans(self) -> dict[str, float]:
        now = self.clock()
        return {client: until for client, until in self.counters.bans.items() if until > now}

    async def lift(self, client: str) -> bool:
        counters = self.counters
        forgotten = [
            key
            for key in abuse_keys(client)
            if any(
                table.pop(key, None) is not None
                for table in (counters.windows, counters.seen, counters.sizes)
            )
        ]
        counters.dirty.update(forgotten)
        until = counters.bans.pop(client, None)
        if until is None:
            return False
        counters.dirty.add(f"ban:{client}")
        if self.file is not None:
            # as a ban is written at once, so is its end, and what it forgot: a
            # restart must bring back neither
            self._write_bans(self.file, [Ban(client, 0)], tuple(forgotten))
        return until > self.clock()

    def flush(self) -> None:
        if self.file is not None and self.counters.dirty:
            try:
                self.file.save(self.counters)
            except sqlite3.Error as error:
                log.error("cannot write counters to disk: %s", error)

    async def close(self) -> None:
        if self._flusher is not None:
            self._flusher.cancel()
            # wait for the cancel to land: it hands back the keys of the slices not
            # yet written, which the flush below then writes
            await asyncio.gather(self._flusher, return_exceptions=True)
            self._flusher = None
        self.flush()
        if self.file is not None:
            self.file.close()
