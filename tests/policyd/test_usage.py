"""The usage log: rows batched into SQLite, old rows purged at most once per
PURGE_EVERY, and nothing lost on close."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import cast

import pytest

from postwarden.policyd.decide import UsageRow
from postwarden.policyd.usage import PURGE_EVERY, PURGE_SLICE, UsageLog

START = 1_000_000.0
RETENTION = 1000

ALICE = UsageRow(
    "alice@example.com", "alice@example.com", 3, 2048, "192.0.2.1", "main", "DUNNO", "4A1"
)
ALICE_ROW = (
    "alice@example.com",
    "alice@example.com",
    3,
    2048,
    "192.0.2.1",
    "main",
    "DUNNO",
    "4A1",
    None,
    None,
    None,
)
BOB = UsageRow("bob@example.org", "info@example.org", 1, 512, "2001:db8::7", None, "HOLD too much")


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "usage.sqlite"


@pytest.fixture
def usage(path: Path, clock: Clock) -> Iterator[UsageLog]:
    log = UsageLog(str(path), RETENTION, clock)
    yield log
    log.close()


def rows(path: Path) -> list[tuple[object, ...]]:
    """What another process reading the file sees."""
    with sqlite3.connect(path) as db:
        return db.execute("SELECT * FROM usage ORDER BY time, login").fetchall()


def test_the_table_has_the_documented_columns(usage: UsageLog, path: Path) -> None:
    assert path.parent.is_dir()
    with sqlite3.connect(path) as db:
        columns = [(c[1], c[2], c[3]) for c in db.execute("PRAGMA table_info(usage)")]
        indexes = {i[1] for i in db.execute("PRAGMA index_list(usage)")}
    assert columns == [
        ("time", "REAL", 1),
        ("login", "TEXT", 1),
        ("sender", "TEXT", 1),
        ("recipients", "INTEGER", 1),
        ("size", "INTEGER", 1),
        ("client", "TEXT", 1),
        ("pool", "TEXT", 0),
        ("decision", "TEXT", 1),
        ("queue_id", "TEXT", 1),
        ("spam_action", "TEXT", 0),
        ("spam_score", "REAL", 0),
        ("spam_symbols", "TEXT", 0),
    ]
    assert indexes == {"usage_time", "usage_other_domain", "usage_not_passed"}


def test_a_log_from_an_earlier_version_loses_its_login_index(path: Path, clock: Clock) -> None:
    # an index on login made every insert slower as the log grew
    UsageLog(str(path), RETENTION, clock).close()
    with sqlite3.connect(path) as db:
        db.execute("CREATE INDEX usage_login ON usage (login, time)")
    reopened = UsageLog(str(path), RETENTION, clock)
    reopened.add(ALICE)
    reopened.close()
    with sqlite3.connect(path) as db:
        indexes = {i[1] for i in db.execute("PRAGMA index_list(usage)")}
    assert "usage_login" not in indexes
    assert len(rows(path)) == 1


def test_the_reports_read_the_few_rows_through_their_covering_indexes(
    path: Path, clock: Clock
) -> None:
    """The reports' queries must name their partial index's condition word for word,
    or SQLite passes over every row again (reports/usage.py)."""
    from postwarden.reports.usage import ALL_ROWS, NOT_PASSED, OTHER_DOMAIN

    UsageLog(str(path), RETENTION, clock).close()
    with sqlite3.connect(path) as db:

        def plan(query: str) -> str:
            return " ".join(
                row[3] for row in db.execute("EXPLAIN QUERY PLAN " + query, (3600, 0, 1))
            )

        assert "COVERING INDEX usage_not_passed" in plan(NOT_PASSED)
        assert "COVERING INDEX usage_other_domain" in plan(OTHER_DOMAIN)
        assert "INDEX usage_time" in plan(ALL_ROWS)
        # the partial indexes hold only their rows: an ordinary message is in neither
        db.execute(
            "INSERT INTO usage (time, login, sender, recipients, size, client, decision) "
            "VALUES (0.5, 'a@example.com', 'a@example.com', 1, 1, '', 'DUNNO'), "
            "(0.5, 'a@example.com', 'info@example.org', 1, 1, '', 'DUNNO'), "
            "(0.5, 'a@example.com', 'a@example.com', 1, 1, '', 'HOLD spam')"
        )
        counted = {
            name: db.execute(
                f"SELECT count(*) FROM usage INDEXED BY {name} WHERE {where}"
            ).fetchone()[0]
            for name, where in [
                ("usage_other_domain", OTHER_DOMAIN.split("WHERE ")[1].split(" AND time")[0]),
                ("usage_not_passed", NOT_PASSED.split("WHERE ")[1].split(" AND time")[0]),
            ]
        }
        assert counted == {"usage_other_domain": 1, "usage_not_passed": 1}


def test_rows_appear_once_flushed(usage: UsageLog, path: Path, clock: Clock) -> None:
    usage.add(ALICE)
    clock.now += 2.5
    usage.add(BOB)
    assert rows(path) == []  # buffered
    assert usage.flush() == 2
    assert rows(path) == [
        (START, *ALICE_ROW),
        (
            START + 2.5,
            "bob@example.org",
            "info@example.org",
            1,
            512,
            "2001:db8::7",
            None,
            "HOLD too much",
            "",
            None,
            None,
            None,
        ),
    ]
    assert usage.flush() == 0
    assert len(rows(path)) == 2


def test_flush_with_nothing_pending_writes_nothing(usage: UsageLog, path: Path) -> None:
    assert usage.flush() == 0
    assert rows(path) == []
    usage.add(ALICE)
    assert usage.flush() == 1
    assert usage.flush() == 0
    assert len(rows(path)) == 1


def test_old_rows_are_purged_at_most_once_per_period(
    usage: UsageLog, path: Path, clock: Clock
) -> None:
    usage.add(ALICE)
    assert usage.flush() == 1  # a purge ran here, and found nothing old

    clock.now = START + PURGE_EVERY - 100  # alice's row is past the retention ...
    usage.add(BOB)
    assert usage.flush() == 1
    # ... but the last purge was less than PURGE_EVERY ago
    assert [r[1] for r in rows(path)] == ["alice@example.com", "bob@example.org"]

    clock.now = START + PURGE_EVERY
    assert usage.flush() == 0
    assert [r[1] for r in rows(path)] == ["bob@example.org"]
    assert rows(path)[0][0] == START + PURGE_EVERY - 100

    # bob's row is past the retention now, and the next purge waits a full period
    clock.now = START + PURGE_EVERY + RETENTION + 1
    usage.flush()
    assert [r[1] for r in rows(path)] == ["bob@example.org"]
    clock.now = START + 2 * PURGE_EVERY
    usage.flush()
    assert rows(path) == []


def test_rows_within_the_retention_stay(usage: UsageLog, path: Path, clock: Clock) -> None:
    usage.add(ALICE)
    usage.flush()
    clock.now = START + PURGE_EVERY
    usage.add(BOB)
    # retention 1000 s: alice's row is 3600 s old and goes, bob's is new
    usage.flush()
    assert [r[1] for r in rows(path)] == ["bob@example.org"]

    kept = UsageLog(str(path.with_name("kept.sqlite")), 10 * 86400, clock)
    kept.add(ALICE)
    kept.flush()
    clock.now += 5 * PURGE_EVERY
    kept.flush()
    kept.close()
    assert len(rows(path.with_name("kept.sqlite"))) == 1


def test_close_flushes(path: Path, clock: Clock) -> None:
    log = UsageLog(str(path), RETENTION, clock)
    log.add(ALICE)
    log.add(BOB)
    log.close()
    assert [r[1] for r in rows(path)] == ["alice@example.com", "bob@example.org"]


def test_a_reopened_log_appends(path: Path, clock: Clock) -> None:
    first = UsageLog(str(path), RETENTION, clock)
    first.add(ALICE)
    first.close()
    second = UsageLog(str(path), RETENTION, clock)
    second.add(BOB)
    second.close()
    assert len(rows(path)) == 2


def test_the_write_ahead_log_is_checkpointed_off_the_loop(tmp_path: Path) -> None:
    from postwarden.policyd.sqlite_files import checkpoint

    path = str(tmp_path / "usage.sqlite")
    log = UsageLog(path, retention=3600)
    for number in range(300):
        log.add(
            UsageRow(f"u{number}@example.com", "s@example.com", 1, 100, "192.0.2.1", None, "DUNNO")
        )
    log.flush()
    wal = tmp_path / "usage.sqlite-wal"
    assert wal.stat().st_size > 0, "rows wait in the log: no checkpoint on commit"
    checkpoint(path)
    fresh = sqlite3.connect(path)
    assert fresh.execute("SELECT COUNT(*) FROM usage").fetchone() == (300,)
    fresh.close()
    log.close()


def test_a_large_purge_goes_a_slice_at_a_time(usage: UsageLog, path: Path, clock: Clock) -> None:
    expired = 2 * PURGE_SLICE + 10
    usage.flush()  # the first purge: nothing old yet
    with sqlite3.connect(path) as db:
        db.executemany(
            "INSERT INTO usage VALUES (?, 'a@example.com', 'a@example.com', 1, 1, '192.0.2.1', "
            "NULL, 'DUNNO', '', NULL, NULL, NULL)",
            [(START + number / expired,) for number in range(expired)],
        )
    clock.now = START + PURGE_EVERY + 2  # all of them past the retention
    usage.add(ALICE)
    assert usage.flush() == 1
    # one flush, one slice: the event loop is held for a slice, not for the purge
    assert len(rows(path)) == expired + 1 - PURGE_SLICE
    assert usage.purging
    flushes = 1
    while usage.purging:
        usage.flush()
        flushes += 1
    assert flushes == 3
    assert rows(path) == [(clock.now, *ALICE_ROW)]


async def test_the_daemon_yields_between_purge_slices(
    usage: UsageLog, path: Path, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    from postwarden.policyd import daemon

    monkeypatch.setattr(daemon, "FLUSH_INTERVAL", 1.0)
    usage.flush()
    with sqlite3.connect(path) as db:
        db.executemany(
            "INSERT INTO usage VALUES (?, 'a@example.com', 'a@example.com', 1, 1, '192.0.2.1', "
            "NULL, 'DUNNO', '', NULL, NULL, NULL)",
            [(START,)] * (5 * PURGE_SLICE),
        )
    clock.now = START + PURGE_EVERY
    seen: list[int] = []

    async def watch() -> None:  # another task of the loop, as a reply would be
        while True:
            seen.append(len(rows(path)))
            await asyncio.sleep(0)

    watcher = asyncio.create_task(watch())
    flusher = asyncio.create_task(daemon.Daemon.flush_forever(cast(daemon.Daemon, Holder(usage))))
    # the whole purge in the first interval: a slice per interval would take five
    deadline = time.monotonic() + 1.9
    while rows(path) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    flusher.cancel()
    watcher.cancel()
    await asyncio.gather(flusher, watcher, return_exceptions=True)
    assert rows(path) == []
    assert {5 * PURGE_SLICE - n * PURGE_SLICE for n in range(1, 5)} <= set(seen)


class Holder:
    def __init__(self, usage: UsageLog) -> None:
        self.usage = usage


def test_a_corrupt_usage_log_is_moved_aside(
    path: Path, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    path.parent.mkdir(parents=True)
    garbage = b"\x00garbage, not SQLite" * 300
    path.write_bytes(garbage)
    log = UsageLog(str(path), RETENTION, clock)
    (aside,) = path.parent.glob("usage.sqlite.corrupt-*")
    assert aside.read_bytes() == garbage  # the base of past reports: kept, not deleted
    assert str(path) in caplog.text
    assert str(aside) in caplog.text
    log.add(ALICE)
    log.close()
    assert [r[1] for r in rows(path)] == ["alice@example.com"]


# ------------------------------------------------------- rspamd's verdicts


def test_a_verdict_corrects_a_row_still_buffered(usage: UsageLog, path: Path) -> None:
    usage.add(ALICE)
    usage.add(BOB)
    assert usage.mark_spam(
        "4A1", "HOLD spam (rspamd score 10.88)", "quarantine", 10.88, ("BAYES_SPAM", "R_X")
    )
    usage.flush()
    alice, bob = rows(path)
    assert alice[7:] == (
        "HOLD spam (rspamd score 10.88)",
        "4A1",
        "quarantine",
        10.88,
        "BAYES_SPAM R_X",
    )
    assert bob[7:] == ("HOLD too much", "", None, None, None)


def test_a_verdict_corrects_a_row_already_written(
    usage: UsageLog, path: Path, clock: Clock
) -> None:
    usage.add(ALICE)
    usage.flush()
    clock.now += 5
    assert usage.mark_spam(
        "4A1", "REJECT 5.7.1 spam (rspamd score 16.00)", "reject", 16.0, ("FUZZY_DENIED",)
    )
    assert rows(path)[0][7:] == (
        "REJECT 5.7.1 spam (rspamd score 16.00)",
        "4A1",
        "reject",
        16.0,
        "FUZZY_DENIED",
    )


def test_a_marked_message_keeps_its_decision(usage: UsageLog, path: Path) -> None:
    usage.add(ALICE)
    usage.flush()
    assert usage.mark_spam("4A1", None, "add header", 7.5)
    assert rows(path)[0][7:] == ("DUNNO", "4A1", "add header", 7.5, None)


def test_a_verdict_for_no_known_message_changes_nothing(
    usage: UsageLog, path: Path, clock: Clock
) -> None:
    usage.add(ALICE)
    usage.flush()
    assert not usage.mark_spam("", "HOLD x", "quarantine", 11.0)
    assert not usage.mark_spam("9Z9", "HOLD x", "quarantine", 11.0)
    clock.now += 7200  # rspamd answers in seconds: an old row is another message
    assert not usage.mark_spam("4A1", "HOLD x", "quarantine", 11.0)
    assert rows(path) == [(START, *ALICE_ROW)]


def test_a_log_from_an_earlier_version_gets_the_new_columns(path: Path, clock: Clock) -> None:
    path.parent.mkdir(parents=True)
    with sqlite3.connect(path) as db:
        db.execute(
            "CREATE TABLE usage (time REAL NOT NULL, login TEXT NOT NULL, sender TEXT NOT NULL,"
            " recipients INTEGER NOT NULL, size INTEGER NOT NULL, client TEXT NOT NULL,"
            " pool TEXT, decision TEXT NOT NULL)"
        )
        db.execute(
            "INSERT INTO usage VALUES (999990.0, 'a@x', 'a@x', 1, 10, '192.0.2.9', NULL, 'DUNNO')"
        )
    log = UsageLog(str(path), RETENTION, clock)
    log.add(ALICE)
    log.close()
    assert rows(path) == [
        (START - 10, "a@x", "a@x", 1, 10, "192.0.2.9", None, "DUNNO", "", None, None, None),
        (START, *ALICE_ROW),
    ]
