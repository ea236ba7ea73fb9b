"""Counters: sliding windows never allow more than the limit in any window."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from postwarden.policyd.counters import BUCKETS, Counters, Window
from postwarden.policyd.decide import Add, Ban, BanCheck, Distinct, SimilarSizes, Take
from postwarden.policyd.persist import CounterFile
from postwarden.policyd.stores import LocalStore

HOUR = 3600


def take(counters: Counters, now: float, key: str = "k", limit: int = 200) -> bool:
    (taken,) = counters.run([Take(key, 1, limit, HOUR)], now)
    assert isinstance(taken, bool)
    return taken


def test_the_201st_in_the_hour_is_refused() -> None:
    counters = Counters()
    now = 1_000_000.0
    assert all(take(counters, now + i) for i in range(200))
    assert not take(counters, now + 200)
    assert not take(counters, now + HOUR - 1)


def test_the_budget_returns_once_a_full_window_has_passed() -> None:
    counters = Counters()
    start = 1_000_020.0
    assert all(take(counters, start) for _ in range(200))
    bucket = HOUR // BUCKETS
    # never early: one second before the window ends there is still no room
    assert not take(counters, start + HOUR - 1)
    # at most one bucket late
    assert take(counters, start + HOUR + bucket)


def test_no_window_ever_holds_more_than_the_limit() -> None:
    counters = Counters()
    limit, accepted = 10, []
    for second in range(0, 3 * HOUR, 7):
        if take(counters, 500_000.0 + second, limit=limit):
            accepted.append(second)
    assert accepted
    for index, first in enumerate(accepted):
        in_window = [t for t in accepted[index:] if t < first + HOUR]
        assert len(in_window) <= limit


def test_a_refused_take_does_not_count() -> None:
    counters = Counters()
    now = 1_000_000.0
    assert counters.run([Take("b", 900, 1000, HOUR)], now) == [True]
    assert counters.run([Take("b", 200, 1000, HOUR)], now) == [False]
    assert counters.run([Take("b", 100, 1000, HOUR)], now) == [True]


def test_add_counts_unconditionally() -> None:
    counters = Counters()
    now = 1_000_000.0
    results = [counters.run([Add("invalid:192.0.2.9", 1, 600)], now + i)[0] for i in range(12)]
    assert results == list(range(1, 13))


def test_similar_sizes_within_tolerance() -> None:
    counters = Counters()
    now = 1_000_000.0
    op = SimilarSizes
    assert counters.run([op("s", 10_000, 600, 0.02)], now) == [1]
    assert counters.run([op("s", 10_150, 600, 0.02)], now + 1) == [2]
    assert counters.run([op("s", 12_000, 600, 0.02)], now + 2) == [1]
    # within 2% of 10,050: 10,000 and 10,150, and itself; not 12,000
    assert counters.run([op("s", 10_050, 600, 0.02)], now + 3) == [3]
    # the first two are older than the window now
    assert counters.run([op("s", 10_000, 600, 0.02)], now + 601) == [2]
    assert counters.run([op("s", 10_000, 600, 0.02)], now + 1300) == [1]


def test_a_ban_stops_the_batch() -> None:
    counters = Counters()
    now = 1_000_000.0
    counters.run([Ban("192.0.2.9", 3600)], now)
    results = counters.run([BanCheck("192.0.2.9"), Add("x", 1, 60)], now + 10)
    assert results == [True, None]
    assert "x" not in counters.windows
    assert counters.run([BanCheck("192.0.2.9")], now + 3601) == [False]
    assert counters.run([BanCheck("192.0.2.10")], now) == [False]


def test_sweep_forgets_old_keys_and_marks_them_for_deletion() -> None:
    counters = Counters()
    counters.run([Take("old", 1, 5, 60), Ban("192.0.2.1", 10)], 1000.0)
    counters.dirty.clear()
    counters.sweep(100_000.0, HOUR)
    assert counters.windows == {}
    assert counters.bans == {}
    assert counters.dirty == {"old", "ban:192.0.2.1"}


def test_counts_survive_a_restart(tmp_path: Path) -> None:
    path = str(tmp_path / "counters.sqlite")
    counters, now = Counters(), 1_000_000.0
    for i in range(150):
        take(counters, now + i)
    counters.run([Ban("192.0.2.9", 3600), SimilarSizes("s", 500, 600, 0.0)], now)
    stored = CounterFile(path)
    assert stored.save(counters) == 3
    assert counters.dirty == set()
    stored.close()

    again = Counters()
    reopened = CounterFile(path)
    reopened.load(again)
    assert sum(take(again, now + 200 + i) for i in range(100)) == 50
    assert again.run([BanCheck("192.0.2.9")], now + 10) == [True]
    assert again.run([SimilarSizes("s", 500, 600, 0.0)], now + 20) == [2]
    reopened.close()


def test_counts_written_as_text_by_an_earlier_version_are_read(tmp_path: Path) -> None:
    path = tmp_path / "counters.sqlite"
    CounterFile(str(path)).close()
    with sqlite3.connect(path) as db:
        db.executemany(
            "INSERT INTO counters VALUES (?, ?, ?)",
            [
                ("w", "window", "60|150|16666:100;16667:50"),
                ("s", "sizes", "1000000.0:500;1000001.5:700"),
                ("ban:192.0.2.9", "ban", "1003600.0"),
            ],
        )
    counters = Counters()
    stored = CounterFile(str(path))
    stored.load(counters)
    stored.close()
    assert counters.windows["w"] == Window(60, [16666, 100, 16667, 50], 150)
    assert list(counters.sizes["s"]) == [(1000000.0, 500), (1000001.5, 700)]
    assert counters.bans == {"192.0.2.9": 1003600.0}


def test_swept_keys_are_deleted_from_disk(tmp_path: Path) -> None:
    path = str(tmp_path / "counters.sqlite")
    counters = Counters()
    counters.run([Take("gone", 1, 5, 60)], 1000.0)
    stored = CounterFile(path)
    stored.save(counters)
    counters.sweep(100_000.0, HOUR)
    stored.save(counters)
    again = Counters()
    stored.load(again)
    assert again.windows == {}


def test_changed_keys_come_in_the_tables_order_and_only_once(tmp_path: Path) -> None:
    counters = Counters()
    for key in ("user:c", "list:a", "user:b"):
        counters.run([Take(key, 1, 5, 60)], 1000.0)
    stored = CounterFile(str(tmp_path / "counters.sqlite"))
    assert stored.changed_keys(counters) == ["list:a", "user:b", "user:c"]
    assert stored.changed_keys(counters) == []
    stored.close()


def stored_keys(path: str) -> set[str]:
    again = Counters()
    stored = CounterFile(path)
    stored.load(again)
    stored.close()
    return set(again.windows)


async def test_a_clean_close_writes_every_pending_key(tmp_path: Path) -> None:
    path = str(tmp_path / "counters.sqlite")
    store = LocalStore(path, clock=lambda: 1_000_000.0, flush_interval=0.0)
    keys = {f"user:{number}" for number in range(1000)}
    store.run_now([Take(key, 1, 5, HOUR) for key in sorted(keys)])
    # the writer has started on its slices when the daemon stops
    for _ in range(3):
        await asyncio.sleep(0)
    assert 0 < len(stored_keys(path)) < len(keys)
    await store.close()
    assert stored_keys(path) == keys


async def test_keys_whose_write_failed_are_written_later(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = str(tmp_path / "counters.sqlite")
    store = LocalStore(path, clock=lambda: 1_000_000.0, flush_interval=0.0)
    assert store.file is not None
    write, failures = store.file.write, [sqlite3.OperationalError("database or disk is full")]

    def write_or_fail(rows: list[tuple[str, str, str | bytes]], gone: list[str]) -> int:
        if failures:
            raise failures.pop()
        return write(rows, gone)

    monkeypatch.setattr(store.file, "write", write_or_fail)
    keys = {f"user:{number}" for number in range(1000)}
    store.run_now([Take(key, 1, 5, HOUR) for key in sorted(keys)])
    while failures:  # the writer meets the full disk
        await asyncio.sleep(0)
    await asyncio.sleep(0.05)  # and tries again
    assert stored_keys(path) == keys
    await store.close()


def test_a_failed_save_keeps_the_keys_changed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    counters = Counters()
    counters.run([Take("user:a", 1, 5, HOUR), Ban("192.0.2.9", 60)], 1000.0)
    stored = CounterFile(str(tmp_path / "counters.sqlite"))

    def full(rows: list[tuple[str, str, str | bytes]], gone: list[str]) -> int:
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(stored, "write", full)
    with pytest.raises(sqlite3.OperationalError):
        stored.save(counters)
    assert counters.dirty == {"user:a", "ban:192.0.2.9"}
    monkeypatch.undo()
    assert stored.save(counters) == 2
    stored.close()


def test_a_long_window_outlives_a_week_of_sweeps() -> None:
    month = 30 * 86400
    counters = Counters()
    start = 1_000_000.0
    assert counters.run([Take("user:a", 10, 10, month)], start) == [True]
    # swept daily, as the store does, with the policy's longest window
    for day in range(1, 30):
        counters.sweep(start + day * 86400, month)
    assert counters.run([Take("user:a", 1, 10, month)], start + 29 * 86400) == [False]
    # the count leaves the window at most a bucket late, and the sweep not before it
    bucket = month // BUCKETS
    counters.sweep(start + month - 1, month)
    assert "user:a" in counters.windows
    assert counters.run([Take("user:a", 1, 10, month)], start + month + 2 * bucket) == [True]


@pytest.mark.parametrize("window", [HOUR, 3601, 30 * 86400])
def test_a_swept_window_had_no_count_left(window: int) -> None:
    # whenever the sweep forgets a window, expiring it would have emptied it too
    counters, start = Counters(), 1_000_000.0
    for step in range(150):
        counters.run([Take(f"k{step}", 1, 5, window)], start + step * window / 50)
    for step in range(400):
        now = start + step * window / 50
        kept = {
            key: Window(w.bucket_seconds, list(w.buckets), w.total)
            for key, w in counters.windows.items()
        }
        counters.sweep(now, window)
        for key in set(kept) - set(counters.windows):
            kept[key].expire(now, window)
            assert kept[key].total == 0, (key, now)
        counters.windows = kept


async def test_a_corrupt_counters_file_is_moved_aside(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "counters.sqlite"
    garbage = b"not a database, just bytes " * 200
    path.write_bytes(garbage)
    store = LocalStore(str(path), clock=lambda: 1_000_000.0)
    assert store.counters.windows == {}
    (aside,) = tmp_path.glob("counters.sqlite.corrupt-*")
    assert aside.read_bytes() == garbage
    assert str(path) in caplog.text
    assert str(aside) in caplog.text
    store.run_now([Take("user:a", 1, 5, HOUR)])
    await store.close()
    assert stored_keys(str(path)) == {"user:a"}


@pytest.mark.parametrize(
    ("kind", "data"),
    [
        ("window", b"\x01\x02\x03"),
        ("window", b"\x3c" + b"\x00" * 15 + b"\x01" * 8),
        ("window", "garbage"),
        ("sizes", b"\x01\x02\x03"),
        ("sizes", "1.0:x"),
        ("ban", b"\xff\xfe"),
    ],
)
def test_an_unreadable_row_is_skipped_and_deleted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, kind: str, data: str | bytes
) -> None:
    path = tmp_path / "counters.sqlite"
    counters = Counters()
    counters.run([Take("user:a", 1, 5, HOUR)], 1_000_000.0)
    stored = CounterFile(str(path))
    stored.save(counters)
    stored.close()
    key = "ban:192.0.2.9" if kind == "ban" else "user:bad"
    with sqlite3.connect(path) as db:
        db.execute("INSERT INTO counters VALUES (?, ?, ?)", (key, kind, data))

    again = Counters()
    reopened = CounterFile(str(path))
    reopened.load(again)
    assert set(again.windows) == {"user:a"}
    assert again.sizes == {}
    assert again.bans == {}
    assert str(path) in caplog.text
    assert "unreadable" in caplog.text
    reopened.save(again)  # the bad row goes with the next write
    reopened.close()
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT key FROM counters").fetchall() == [("user:a",)]


async def test_a_ban_reaches_the_disk_at_once(tmp_path: Path) -> None:
    """Killed right after a ban (no flush, no close), the daemon still knows it when it
    is back; other counts wait for the next write-behind as before."""
    path = str(tmp_path / "counters.sqlite")
    store = LocalStore(path, clock=lambda: 1_000_000.0, flush_interval=3600.0)
    store.run_now([Add("k", 1, 3600), Ban("192.0.2.66", 3600)])
    # no flush and no close: what a kill -9 leaves behind
    again = LocalStore(path, clock=lambda: 1_000_001.0)
    assert again.counters.bans == {"192.0.2.66": 1_003_600.0}
    assert "k" not in again.counters.windows
    assert await again.run([BanCheck("192.0.2.66")]) == [True]


async def test_a_lifted_ban_is_gone_from_the_disk_at_once(tmp_path: Path) -> None:
    path = str(tmp_path / "counters.sqlite")
    store = LocalStore(path, clock=lambda: 1_000_000.0, flush_interval=3600.0)
    store.run_now([Add("invalid:192.0.2.66", 1, 600), Ban("192.0.2.66", 3600)])
    store.run_now([Ban("192.0.2.67", 3600)])
    assert sorted(await store.bans()) == ["192.0.2.66", "192.0.2.67"]
    assert await store.lift("192.0.2.66") is True
    # the count that led to the ban is forgotten: the next mistake does not ban again
    assert await store.run([Add("invalid:192.0.2.66", 1, 600)]) == [1]
    assert await store.lift("192.0.2.66") is False
    # killed now: the lifted ban does not come back, the other stays
    again = LocalStore(path, clock=lambda: 1_000_001.0)
    assert list(await again.bans()) == ["192.0.2.67"]


def test_distinct_counts_members_seen_within_the_window() -> None:
    counters = Counters()
    now = 1_000_000.0
    seen = [
        counters.run([Distinct("c", member, 600)], now + i)[0]
        for i, member in enumerate(["192.0.2.1", "192.0.2.2", "192.0.2.1", "2001:db8::3"])
    ]
    assert seen == [1, 2, 2, 3]
    # .2 was last seen at now+1, .1 at now+2: each leaves the window on its own
    assert counters.run([Distinct("c", "192.0.2.9", 600)], now + 601) == [3]
    assert counters.run([Distinct("c", "192.0.2.9", 600)], now + 602) == [2]
    counters.dirty.clear()
    counters.sweep(now + 100_000, HOUR)
    assert counters.seen == {}
    assert counters.dirty == {"c"}


def test_distinct_members_survive_a_restart(tmp_path: Path) -> None:
    path = str(tmp_path / "counters.sqlite")
    counters, now = Counters(), 1_000_000.0
    counters.run([Distinct("signals:a@example.com", "throttle", 3600)], now)
    counters.run([Distinct("signals:a@example.com", "spam", 3600)], now + 5)
    file = CounterFile(path)
    file.save(counters)
    file.close()
    again = Counters()
    CounterFile(path).load(again)
    assert again.seen == {"signals:a@example.com": {"throttle": now, "spam": now + 5}}
    assert again.run([Distinct("signals:a@example.com", "spam", 3600)], now + 6) == [2]
