"""Counters in a real Redis: the same answers as the local store, exact when many
clients count at once, shared by two daemons, and the fail mode when Redis is gone."""

from __future__ import annotations

import asyncio
import logging
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from postwarden.policyd.decide import (
    Add,
    Ban,
    BanCheck,
    Distinct,
    Event,
    Op,
    Result,
    SimilarSizes,
    Take,
)
from postwarden.policyd.engine import STORE_DOWN_CLOSED, Engine
from postwarden.policyd.redis_store import RedisStore
from postwarden.policyd.stores import StoreUnavailable
from postwarden.policyd.view import PolicyView, compile_view
from tests.policyd.test_daemon import Daemon, ask, connect, free_port, write_policy
from tests.throwaway_redis import RedisServer


@pytest.fixture
async def store(redis_server: RedisServer) -> AsyncIterator[RedisStore]:
    client = RedisStore(redis_server.url)
    yield client
    await client.close()


async def test_the_201st_is_refused(store: RedisStore) -> None:
    results = [await store.run([Take("u:a", 1, 200, 3600)]) for _ in range(201)]
    assert results[:200] == [[True]] * 200
    assert results[200] == [False]


async def test_add_similar_sizes_and_bans(store: RedisStore) -> None:
    assert [(await store.run([Add("inv:x", 1, 600)]))[0] for _ in range(3)] == [1, 2, 3]
    sizes = [10_000, 10_150, 12_000, 10_050]
    similar = [(await store.run([SimilarSizes("s:a", s, 600, 0.02)]))[0] for s in sizes]
    assert similar == [1, 2, 1, 3]
    await store.run([Ban("192.0.2.9", 60)])
    assert await store.run([BanCheck("192.0.2.9"), Add("after", 1, 60)]) == [True, None]
    assert await store.run([BanCheck("192.0.2.10"), Add("after", 1, 60)]) == [False, 1]


async def test_distinct_members_in_a_window(store: RedisStore) -> None:
    members = ["192.0.2.1", "192.0.2.2", "192.0.2.1", "2001:db8::3"]
    seen = [(await store.run([Distinct("c", m, 600)]))[0] for m in members]
    assert seen == [1, 2, 2, 3]
    assert await store.run([Distinct("short", "a", 1)]) == [1]
    await asyncio.sleep(1.1)
    assert await store.run([Distinct("short", "b", 1)]) == [1]


async def test_a_ban_made_by_one_mta_is_listed_and_lifted_by_another(
    redis_server: RedisServer,
) -> None:
    first, second = RedisStore(redis_server.url), RedisStore(redis_server.url)
    try:
        await first.run([Add("invalid:192.0.2.66", 1, 600), Add("invalid:192.0.2.66", 1, 600)])
        assert await first.run([Ban("192.0.2.66", 3600), Ban("2001:db8::66", 60)]) == [True, True]
        bans = await second.bans()
        assert sorted(bans) == ["192.0.2.66", "2001:db8::66"]
        assert 3500 < bans["192.0.2.66"] - time.time() <= 3600
        assert await second.lift("192.0.2.66") is True
        assert await second.lift("192.0.2.66") is False
        assert await first.run([BanCheck("192.0.2.66")]) == [False]
        assert await first.run([Add("invalid:192.0.2.66", 1, 600)]) == [1]
        assert list(await first.bans()) == ["2001:db8::66"]
    finally:
        await first.close()
        await second.close()


async def test_a_refused_take_does_not_count(store: RedisStore) -> None:
    assert await store.run([Take("b", 900, 1000, 3600)]) == [True]
    assert await store.run([Take("b", 200, 1000, 3600)]) == [False]
    assert await store.run([Take("b", 100, 1000, 3600)]) == [True]


async def test_exact_under_concurrency_across_clients(redis_server: RedisServer) -> None:
    stores = [RedisStore(redis_server.url) for _ in range(4)]
    try:
        jobs = [stores[i % 4].run([Take("shared", 1, 150, 3600)]) for i in range(400)]
        results = await asyncio.gather(*jobs)
    finally:
        for client in stores:
            await client.close()
    assert sum(1 for r in results if r == [True]) == 150


def alices_message(tmp_path: Path) -> tuple[PolicyView, dict[str, str]]:
    """A policy allowing alice 100 messages an hour, and her END-OF-MESSAGE request."""
    from postwarden.policy.load import load_policy

    write_policy(tmp_path, "100")
    view = compile_view(load_policy(tmp_path / "policy.yml").policy)
    request = {
        "protocol_state": "END-OF-MESSAGE",
        "sasl_username": "alice@example.com",
        "size": "10",
        "client_address": "192.0.2.1",
    }
    return view, request


async def test_fail_closed_and_recover(redis_server: RedisServer, tmp_path: Path) -> None:
    view, request = alices_message(tmp_path)
    closed = Engine(view, RedisStore(redis_server.url), "closed")
    opened = Engine(view, RedisStore(redis_server.url), "open")
    assert await closed.decide(request) == "DUNNO"
    redis_server.stop()
    assert await closed.decide(request) == STORE_DOWN_CLOSED
    assert await opened.decide(request) == "DUNNO"
    assert closed.store_errors == 1
    assert opened.store_errors == 1
    # Dovecot's question: closed refuses the login (a ban or a suspension cannot be
    # checked), open lets it through
    login: dict[str, object] = {"login": "alice@example.com", "remote": "192.0.2.1"}
    refused = await closed.decide_auth("allow", login)
    assert refused.startswith("REJECT "), refused
    assert await opened.decide_auth("allow", login) == "DUNNO"
    redis_server.start()
    # back within the client's first reconnect backoff (1 s)
    deadline = time.monotonic() + 3
    while await closed.decide(request) != "DUNNO":
        assert time.monotonic() < deadline, "still failing after the backoff"
        await asyncio.sleep(0.1)
    await closed.store.close()
    await opened.store.close()


def _daemon(directory: Path, redis_url: str) -> Daemon:
    directory.mkdir()
    port = free_port()
    write_policy(directory, "5")
    (directory / "policyd.yml").write_text(
        f"policy: {directory / 'policy.yml'}\nsecrets: {directory / 'secrets.yml'}\n"
        f"listen: ['127.0.0.1:{port}']\nstore: redis\nredis_url: {redis_url}\n"
        f"log_file: {directory / 'policyd.log'}\nusage_log: {directory / 'usage.sqlite'}\n"
        f"metrics_listen: 127.0.0.1:{free_port()}\nsocketmap_listen: 127.0.0.1:{free_port()}\n"
        f"pool_state: {directory / 'pools.json'}\n",
        encoding="utf-8",
    )
    daemon = Daemon(directory, port)
    daemon.start()
    return daemon


def test_two_daemons_share_one_count(redis_server: RedisServer, tmp_path: Path) -> None:
    first = _daemon(tmp_path / "mta1", redis_server.url)
    second = _daemon(tmp_path / "mta2", redis_server.url)
    try:
        with connect(first) as one, connect(second) as two:
            answers = [ask(one if i % 2 else two) for i in range(7)]
        assert answers[:5] == ["DUNNO"] * 5
        assert all(a.startswith("DEFER") for a in answers[5:])
    finally:
        for daemon in (first, second):
            assert daemon.process is not None
            daemon.process.terminate()
            daemon.process.wait(timeout=15)


def test_redis_stopped_mid_run_then_back(redis_server: RedisServer, tmp_path: Path) -> None:
    daemon = _daemon(tmp_path / "mta", redis_server.url)
    try:
        with connect(daemon) as connection:
            assert ask(connection) == "DUNNO"
            redis_server.stop()
            assert ask(connection).startswith("DEFER 4.3.0")
            redis_server.start()
            deadline = time.monotonic() + 3
            while (answer := ask(connection)) != "DUNNO":
                assert answer.startswith("DEFER 4.3.0")
                assert time.monotonic() < deadline, "still failing after the backoff"
                time.sleep(0.1)
        assert "counter store unavailable (redis: " in daemon.log
        assert "counter store reachable again" in daemon.log
    finally:
        assert daemon.process is not None
        daemon.process.terminate()
        daemon.process.wait(timeout=15)


def test_port_is_free_after_a_stop(tmp_path: Path) -> None:
    server = RedisServer(free_port(), tmp_path)
    server.start()
    server.stop()
    with socket.socket() as probe, pytest.raises(ConnectionRefusedError):
        probe.connect(("127.0.0.1", server.port))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", server.port))


class DownStore:
    def __init__(self) -> None:
        self.down = True

    async def run(self, ops: list[Op]) -> list[Result]:
        if self.down:
            raise StoreUnavailable("redis: RedisUnavailable: cannot connect")
        # nobody banned, every budget fits
        return [not isinstance(op, BanCheck) for op in ops]

    async def bans(self) -> dict[str, float]:
        raise StoreUnavailable("redis: RedisUnavailable: cannot connect")

    async def lift(self, client: str) -> bool:
        raise StoreUnavailable("redis: RedisUnavailable: cannot connect")

    async def close(self) -> None:
        pass


async def test_store_down_is_logged_once_a_minute(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    view, request = alices_message(tmp_path)
    now = [1000.0]
    events: list[Event] = []
    store = DownStore()
    engine = Engine(view, store, "closed", on_event=events.append, clock=lambda: now[0])

    def lines() -> list[str]:
        return [r.getMessage() for r in caplog.records if "counter store" in r.getMessage()]

    with caplog.at_level(logging.INFO, logger="postwarden.policyd"):
        for _ in range(50):
            assert await engine.decide(request) == STORE_DOWN_CLOSED
            now[0] += 1
        assert lines() == [
            "counter store unavailable (redis: RedisUnavailable: cannot connect): failing closed"
        ]
        for _ in range(20):
            assert await engine.decide(request) == STORE_DOWN_CLOSED
            now[0] += 1
        assert len(lines()) == 2
        assert lines()[1].endswith("failing closed (59 more since the last line)")
        store.down = False
        assert await engine.decide(request) == "DUNNO"
        assert await engine.decide(request) == "DUNNO"
    assert lines()[2:] == [
        "counter store reachable again after 70s; 70 decisions failed closed meanwhile"
    ]
    assert engine.store_errors == 70
    # the event is not rate-limited here: each one still goes to the event pipeline
    assert (
        events
        == [
            Event(
                "system.store",
                "counters",
                "redis: RedisUnavailable: cannot connect; failing closed",
            )
        ]
        * 70
    )


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("rediss://:s3cret@10.0.0.5:6380/0", "rediss:// (Redis over TLS) is not supported"),
        ("unix:///run/redis/redis.sock", "unix:// is not supported"),
        ("redis://:s3cret@10.0.0.5:six/0", "not a valid Redis URL"),
        ("redis://:s3cret@10.0.0.5:6379/one", "the database after the host must be a number"),
    ],
)
def test_an_unsupported_redis_url_is_refused_at_check(
    tmp_path: Path, url: str, message: str
) -> None:
    settings = tmp_path / "policyd.yml"
    settings.write_text(f"store: redis\nredis_url: '{url}'\nlog_file: ''\n", encoding="utf-8")
    result = subprocess.run(
        [sys.executable, "-m", "postwarden", "policyd", "--settings", str(settings), "--check"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert f"{settings}:2:12: redis_url: {message}" in result.stderr
    assert "Traceback" not in result.stderr
    assert "s3cret" not in result.stderr + result.stdout


def test_a_plain_redis_url_is_accepted(tmp_path: Path) -> None:
    from postwarden.policy.settings_file import load_settings_file
    from postwarden.policyd.settings import PolicydSettings

    settings = tmp_path / "policyd.yml"
    settings.write_text("store: redis\nredis_url: 'redis://:s3cret@10.0.0.5/2'\n")
    assert load_settings_file(settings, PolicydSettings).redis_url == "redis://:s3cret@10.0.0.5/2"
