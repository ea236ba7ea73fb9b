"""Where counters live: in this process (written behind to SQLite), or in Redis."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

from postwarden.policyd.counters import Counters
from postwarden.policyd.decide import Op, Result


class StoreUnavailable(Exception):
    """The store cannot answer; the daemon applies its fail_mode."""


class Store(Protocol):
    async def run(self, ops: list[Op]) -> list[Result]: ...

    async def close(self) -> None: ...


class LocalStore:
    """Counters in memory. A batch runs without an await inside, so it is atomic
    for every connection of this event loop."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.counters = Counters()
        self.clock = clock

    async def run(self, ops: list[Op]) -> list[Result]:
        return self.counters.run(ops, self.clock())

    async def close(self) -> None:
        return None
