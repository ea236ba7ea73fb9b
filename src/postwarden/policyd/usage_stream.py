"""Where the usage rows of several MTAs meet: a Redis stream on the store they share.

Each daemon keeps its own usage log (SQLite, on its host) and, when its store is
Redis, also appends what it writes there to one stream of that Redis: its usage
rows, rspamd's verdicts that correct them, and its events. A report made on any of
the hosts (or anywhere that reaches the Redis) reads the stream and covers them all.

Why a stream on the store, and not a collection step: the hosts already share the
Redis and reach it on every decision; a collection would need the hosts to reach
each other (or a controller to reach them all) at report time, and a host that is
down would leave a hole. A stream entry's ID is the time it was added, so a period
is one XRANGE; MINID trims what is older than the stream's retention as it grows.

One entry per flush (once a second at most), with the records of that second as
JSON: one XADD a second per host instead of one per message, on a connection of its
own so that decisions never wait behind it. While Redis is down the records wait
in memory, up to a cap; what goes over it is dropped, counted and logged, never
guessed back.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable

from postwarden.policyd.decide import Event, UsageRow
from postwarden.policyd.resp import RespClient, RespError, reason

log = logging.getLogger("postwarden.policyd")

STREAM = "postwarden:usage"
WAITING_AT_MOST = 200_000
"""Records kept while Redis cannot be reached: about 40 MB."""
SENT, SPAM, EVENT = "sent", "spam", "event"

Record = list[object]


class UsageStream:
    def __init__(
        self,
        client: RespClient,
        host: str,
        retention: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.client = client
        self.host = host
        self.retention = retention
        self.clock = clock
        self._waiting: list[Record] = []
        self.dropped = 0
        self._failing = False

    def add(self, row: UsageRow, at: float) -> None:
        self._keep([SENT, at, *row])

    def mark_spam(
        self,
        queue_id: str,
        decision: str | None,
        action: str,
        score: float,
        symbols: tuple[str, ...],
        at: float,
    ) -> None:
        self._keep([SPAM, at, queue_id, decision, action, score, list(symbols)])

    def add_event(self, event: Event, at: float) -> None:
        self._keep([EVENT, at, event.kind, event.subject, event.detail, event.client, event.login])

    def _keep(self, record: Record) -> None:
        if len(self._waiting) >= WAITING_AT_MOST:
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 10_000 == 0:
                log.error("usage stream: %d records dropped while Redis is away", self.dropped)
            return
        self._waiting.append(record)

    async def flush(self) -> int:
        """Append what waits as one entry; return how many records went."""
        if not self._waiting:
            return 0
        records, self._waiting = self._waiting, []
        now = self.clock()
        batch = json.dumps({"host": self.host, "records": records}, separators=(",", ":"))
        oldest = int((now - self.retention) * 1000)
        try:
            await self.client.call(
                "XADD", STREAM, "MINID", "~", oldest, "*", "batch", batch.encode()
            )
        except (RespError, OSError, ConnectionError, TimeoutError) as error:
            # kept for the next flush, in order, unless the cap is reached meanwhile
            room = WAITING_AT_MOST - len(self._waiting)
            self.dropped += max(0, len(records) - room)
            self._waiting = records[:room] + self._waiting
            if not self._failing:
                log.error("usage stream: cannot append to Redis: %s", reason(error))
            self._failing = True
            return 0
        if self._failing:
            log.info("usage stream: Redis takes the records again")
            self._failing = False
        return len(records)

    async def close(self) -> None:
        await self.flush()
        await self.client.close()
