"""Outbound connections of every MTA in one scheduled report.

Postfix's log stays on the MTA that wrote it, and a report is made on one host. So
each MTA's report timer counts its own log for the period and posts the counts on
the Redis store the MTAs share, under the report's name and period, before it tries
to claim the period (reports/mailing.py). The one that claims it waits for the
counts of every MTA it knows of (those that wrote usage rows in the period, and
those that posted), adds them up and mails; an MTA that has not posted within
WAIT_FOR_HOSTS is named in the report's notes, never silently left out.

Counts rather than log lines: a week of a busy MTA's log is gigabytes, its counts
(per transport, per domain, per normalised reason) a few hundred kilobytes.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Collection, Coroutine
from dataclasses import dataclass, field
from typing import TypeVar

from postwarden.policyd.resp import RespClient, RespError, reason
from postwarden.reports.connections import ConnectionCounts

GATHERED = "postwarden:report-connections:"
WAIT_FOR_HOSTS = 300.0
"""How long the MTA that mails waits for the others' counts: their timers fire
together, and each reads its own Postfix log for the period first."""
POLL = 1.0
T = TypeVar("T")


class CannotGather(Exception):
    """The Redis store the MTAs share cannot be reached."""


@dataclass
class Gathered:
    counts: ConnectionCounts = field(default_factory=ConnectionCounts)
    hosts: list[str] = field(default_factory=list)
    """The MTAs whose counts are in ``counts``."""
    missing: list[str] = field(default_factory=list)
    """MTAs that wrote usage rows in the period but posted no counts in time."""
    unreadable: list[str] = field(default_factory=list)

    def notes(self, waited: float) -> list[str]:
        said = [f"outbound SMTP from the Postfix logs of {', '.join(self.hosts) or '(none)'}"]
        if self.missing:
            said.append(
                f"no outbound SMTP counts from {', '.join(self.missing)} within "
                f"{waited:.0f} s: their report timers did not post them, and their "
                "Postfix logs are not in this report"
            )
        if self.unreadable:
            said.append(
                f"the outbound SMTP counts of {', '.join(self.unreadable)} could not be read"
            )
        return said


def gathered_key(report: str, slot: str) -> str:
    return f"{GATHERED}{report}:{slot}"


def post_counts(url: str, key: str, host: str, counts: ConnectionCounts, keep: float) -> None:
    """Raises CannotGather."""
    posted = json.dumps(counts.as_json(), separators=(",", ":")).encode()

    async def post(client: RespClient) -> None:
        await client.call("HSET", key, host, posted)
        await client.call("EXPIRE", key, int(keep))

    _run(url, post)


def gather_counts(
    url: str,
    key: str,
    expected: Collection[str],
    wait: float = WAIT_FOR_HOSTS,
    poll: float = POLL,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> Gathered:
    """The counts posted under ``key``, once every host of ``expected`` has posted or
    ``wait`` seconds have passed; raises CannotGather."""
    deadline = clock() + wait
    while True:
        posted = _read(url, key)
        missing = sorted(set(expected) - set(posted))
        if not missing or clock() >= deadline:
            break
        sleep(poll)
    found = Gathered(missing=missing)
    for host, text in sorted(posted.items()):
        try:
            found.counts.add(ConnectionCounts.from_json(json.loads(text)))
        except ValueError:
            found.unreadable.append(host)
            continue
        found.hosts.append(host)
    return found


def _read(url: str, key: str) -> dict[str, bytes]:
    async def read(client: RespClient) -> dict[str, bytes]:
        pairs = await client.call("HGETALL", key)
        if not isinstance(pairs, list):
            raise CannotGather(f"{key} is not a hash")
        return {
            host.decode(errors="replace"): text
            for host, text in zip(pairs[::2], pairs[1::2], strict=True)
            if isinstance(host, bytes) and isinstance(text, bytes)
        }

    return _run(url, read)


def _run(url: str, job: Callable[[RespClient], Coroutine[object, object, T]]) -> T:
    async def run() -> T:
        client = RespClient(url, timeout=10.0)
        try:
            return await job(client)
        except (RespError, OSError, ConnectionError, TimeoutError) as error:
            raise CannotGather(f"redis: {reason(error)}") from None
        finally:
            await client.close()

    return asyncio.run(run())
