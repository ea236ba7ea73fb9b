"""Reading the stream where the usage rows of the MTAs sharing a Redis store meet
(policyd/usage_stream.py says why there): the messages and events of a period,
from every host or the ones asked for."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import NamedTuple

from postwarden.policyd.resp import RespClient, RespError, reason
from postwarden.policyd.usage import SCHEMA
from postwarden.policyd.usage_stream import EVENT, SENT, SPAM, STREAM
from postwarden.reports.peaks import Budgets
from postwarden.reports.usage import Raised, UsageTotals, totals_of

FLUSH_SLACK = 60.0
"""A record reaches the stream up to a flush (and a Redis outage) after its time:
entries this much later than the period are read too, and their records filtered
by their own times."""
PAGE = 1000


class SharedUsageUnreadable(Exception):
    """The Redis store cannot be read, or holds what is no usage stream."""


class SharedRow(NamedTuple):
    """A usage row as the usage log's table has it, and the host that wrote it."""

    time: float
    login: str
    sender: str
    recipients: int
    size: int
    client: str
    pool: str | None
    decision: str
    queue_id: str
    spam_action: str | None
    spam_score: float | None
    spam_symbols: str | None
    host: str


@dataclass
class SharedUsage:
    sent: list[SharedRow] = field(default_factory=list)
    events: list[Raised] = field(default_factory=list)
    hosts: set[str] = field(default_factory=set)
    """Every host that wrote in the period, whether asked for or not."""
    skipped: int = 0
    """Records that could not be read."""


def read_shared(
    url: str, start: float, end: float, hosts: Collection[str] = (), timeout: float = 10.0
) -> SharedUsage:
    return asyncio.run(_read(url, start, end, set(hosts), timeout))


async def _read(url: str, start: float, end: float, hosts: set[str], timeout: float) -> SharedUsage:
    client = RespClient(url, timeout=timeout)
    found = SharedUsage()
    spam: dict[tuple[str, str], tuple[str | None, str, float, str | None]] = {}
    low = f"{int(start * 1000)}-0"
    high = str(int((end + FLUSH_SLACK) * 1000))
    try:
        while True:
            page = await client.call("XRANGE", STREAM, low, high, "COUNT", PAGE)
            if not isinstance(page, list):
                raise SharedUsageUnreadable(f"{STREAM} is not a stream")
            for _id, fields in page:
                _take(_batch(fields), start, end, hosts, found, spam)
            if len(page) < PAGE:
                break
            last = page[-1][0]
            low = "(" + (last.decode() if isinstance(last, bytes) else str(last))
    except (RespError, OSError, ConnectionError, TimeoutError) as error:
        raise SharedUsageUnreadable(f"redis: {reason(error)}") from None
    finally:
        await client.close()
    for index, row in enumerate(found.sent):
        verdict = spam.get((row.host, row.queue_id)) if row.queue_id else None
        if verdict is not None:
            decision, action, score, symbols = verdict
            found.sent[index] = row._replace(
                decision=decision if decision is not None else row.decision,
                spam_action=action,
                spam_score=score,
                spam_symbols=symbols,
            )
    return found


def totals(
    shared: SharedUsage, start: float, end: float, budgets: Budgets | None = None
) -> UsageTotals:
    """The same totals the host's own log gives, by the same query, over the rows of
    every host (in a database in memory)."""
    db = sqlite3.connect(":memory:")
    try:
        db.executescript(SCHEMA)
        db.executemany(
            "INSERT INTO usage VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (row[:12] for row in shared.sent),
        )
        db.commit()
        return totals_of(db, start, end, budgets)
    finally:
        db.close()


def _batch(fields: list[bytes]) -> object:
    pairs = dict(zip(fields[::2], fields[1::2], strict=True))
    try:
        return json.loads(pairs.get(b"batch", b"null"))
    except ValueError:
        return None


def _take(
    batch: object,
    start: float,
    end: float,
    hosts: set[str],
    found: SharedUsage,
    spam: dict[tuple[str, str], tuple[str | None, str, float, str | None]],
) -> None:
    if not isinstance(batch, dict) or not isinstance(batch.get("records"), list):
        found.skipped += 1
        return
    host = str(batch.get("host", ""))
    found.hosts.add(host)
    if hosts and host not in hosts:
        return
    for record in batch["records"]:
        try:
            kind, at = record[0], float(record[1])
            if kind == SPAM:
                # a verdict may come after the period's end; it still corrects its row
                named = record[6] if len(record) > 6 and isinstance(record[6], list) else []
                spam[(host, str(record[2]))] = (
                    record[3],
                    str(record[4]),
                    float(record[5]),
                    " ".join(str(name) for name in named) or None,
                )
                continue
            if not start <= at < end:
                continue
            if kind == SENT:
                login, sender, rcpts, size, client, pool, decision, queue_id = record[2:10]
                found.sent.append(
                    SharedRow(
                        at,
                        str(login),
                        str(sender),
                        int(rcpts),
                        int(size),
                        str(client),
                        None if pool is None else str(pool),
                        str(decision),
                        str(queue_id),
                        None,
                        None,
                        None,
                        host,
                    )
                )
            elif kind == EVENT:
                event_kind, subject, detail, client, login = record[2:7]
                found.events.append(
                    Raised(
                        at,
                        str(event_kind),
                        str(subject),
                        str(detail),
                        str(client),
                        str(login),
                        host,
                    )
                )
            else:
                found.skipped += 1
        except (IndexError, TypeError, ValueError):
            found.skipped += 1
