"""The small Redis client: the wire format, and a real redis-server with a password,
a database number and a server that stops answering."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from postwarden.policyd.resp import RedisUnavailable, RespClient, RespError, encode, parse
from tests.e2e.mailhost import wait_for_port
from tests.policyd.test_daemon import free_port
from tests.throwaway_redis import redis_server_command


def test_encode() -> None:
    assert encode("EVALSHA", "abc", 0, 1.5, b"\xff") == (
        b"*5\r\n$7\r\nEVALSHA\r\n$3\r\nabc\r\n$1\r\n0\r\n$3\r\n1.5\r\n$1\r\n\xff\r\n"
    )


REPLY = b"*4\r\n:1\r\n$3\r\nfoo\r\n$-1\r\n*2\r\n+OK\r\n:-7\r\n"


def test_parse_a_nested_reply() -> None:
    assert parse(REPLY) == ([1, b"foo", None, ["OK", -7]], len(REPLY))


@pytest.mark.parametrize("cut", range(len(REPLY)))
def test_an_incomplete_reply_waits(cut: int) -> None:
    assert parse(REPLY[:cut]) is None


def test_errors_are_values() -> None:
    value, end = parse(b"-NOSCRIPT No matching script\r\n:1\r\n") or (None, 0)
    assert isinstance(value, RespError)
    assert str(value) == "NOSCRIPT No matching script"
    assert parse(b"-NOSCRIPT No matching script\r\n:1\r\n", end) == (1, end + 4)


def test_garbage_is_a_connection_error() -> None:
    with pytest.raises(ConnectionError):
        parse(b"HTTP/1.1 400\r\n")


@pytest.fixture
def protected_redis(tmp_path: Path) -> Iterator[int]:
    port = free_port()
    process = subprocess.Popen(
        redis_server_command(port, tmp_path, "--requirepass", "s3cret"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_for_port("127.0.0.1", port, timeout=20)
    yield port
    process.terminate()
    process.wait(timeout=10)


async def test_password_database_and_pipelining(protected_redis: int) -> None:
    client = RespClient(f"redis://:s3cret@127.0.0.1:{protected_redis}/3")
    try:
        results = await asyncio.gather(*(client.call("INCR", "n") for _ in range(200)))
        assert sorted(results) == list(range(1, 201))
        assert await client.call("GET", "n") == b"200"
        other = RespClient(f"redis://:s3cret@127.0.0.1:{protected_redis}/0")
        assert await other.call("GET", "n") is None
        await other.close()
        with pytest.raises(RespError):
            await client.call("NOSUCHCOMMAND")
    finally:
        await client.close()


async def test_a_wrong_password_is_an_error(protected_redis: int) -> None:
    client = RespClient(f"redis://:wrong@127.0.0.1:{protected_redis}/0")
    with pytest.raises(RedisUnavailable, match="RespError: WRONGPASS") as raised:
        await client.call("PING")
    assert "wrong" not in str(raised.value)
    await client.close()


async def _connected_clients(port: int) -> int:
    checker = RespClient(f"redis://:s3cret@127.0.0.1:{port}/0")
    try:
        info = await checker.call("INFO", "clients")
    finally:
        await checker.close()
    line = next(x for x in info.decode().splitlines() if x.startswith("connected_clients:"))
    return int(line.split(":")[1]) - 1  # not the checker itself


async def test_a_wrong_password_leaves_no_connection_open(protected_redis: int) -> None:
    clients = [RespClient(f"redis://:wrong@127.0.0.1:{protected_redis}/0") for _ in range(10)]
    for client in clients:
        with pytest.raises(RedisUnavailable):
            await client.call("PING")
    # Redis notices a closed connection on its next turn of the event loop
    deadline = time.monotonic() + 2
    while await _connected_clients(protected_redis) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert await _connected_clients(protected_redis) == 0
    for client in clients:
        await client.close()


@dataclass
class SilentServer:
    """Accepts connections and never answers: a Redis that is stuck."""

    port: int = 0
    accepted: int = 0
    server: asyncio.Server | None = None

    async def start(self) -> SilentServer:
        self.server = await asyncio.start_server(self._hold, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def _hold(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        await reader.read()  # until the client gives up
        writer.close()

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()


@pytest.fixture
async def silent() -> AsyncIterator[SilentServer]:
    server = await SilentServer().start()
    yield server
    await server.stop()


async def _failure(call: Coroutine[Any, Any, object]) -> tuple[BaseException, float]:
    """The error ``call`` fails with and the seconds it took. The test's own bound
    (asyncio.wait, which raises nothing) cannot pass for a TimeoutError of the client."""
    started = time.monotonic()
    task = asyncio.ensure_future(call)
    done, _ = await asyncio.wait({task}, timeout=10)
    if not done:
        task.cancel()
        pytest.fail("the call hung until the test's own bound")
    error = task.exception()
    if error is None:
        pytest.fail("the call succeeded")
    return error, time.monotonic() - started


async def test_a_server_that_stops_answering_times_out() -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    client = RespClient(f"redis://127.0.0.1:{port}/0", timeout=0.4)
    try:
        error, seconds = await _failure(client.call("PING"))
        assert isinstance(error, TimeoutError)
        assert str(error) == "redis did not answer within 0.4s"  # the watchdog's
        assert seconds < 1.5
    finally:
        await client.close()
        listener.close()


@pytest.mark.parametrize("url", ["redis://:s3cret@127.0.0.1:{}/0", "redis://127.0.0.1:{}/3"])
async def test_a_server_silent_in_the_handshake_times_out(silent: SilentServer, url: str) -> None:
    client = RespClient(url.format(silent.port), timeout=0.4)
    try:
        error, seconds = await _failure(client.call("PING"))
        assert isinstance(error, RedisUnavailable)
        assert str(error) == f"cannot connect to 127.0.0.1:{silent.port}: TimeoutError"
        assert seconds < 1.5
    finally:
        await client.close()


async def test_waiters_share_one_attempt_then_fail_fast(silent: SilentServer) -> None:
    client = RespClient(f"redis://:s3cret@127.0.0.1:{silent.port}/0", timeout=0.4)
    try:
        started = time.monotonic()
        errors = await asyncio.gather(*(_failure(client.call("PING")) for _ in range(8)))
        assert time.monotonic() - started < 1.0  # not 8 attempts of 0.4s one after another
        assert all(isinstance(error, RedisUnavailable) for error, _ in errors)
        assert silent.accepted == 1
        # within the backoff: the last failure again, at once, without connecting
        error, seconds = await _failure(client.call("PING"))
        assert isinstance(error, RedisUnavailable)
        assert "TimeoutError" in str(error)
        assert "s3cret" not in str(error)
        assert seconds < 0.1
        assert silent.accepted == 1
        # after it, one attempt again, and the next backoff is longer
        await asyncio.sleep(1.1)
        await _failure(client.call("PING"))
        assert silent.accepted == 2
        await asyncio.sleep(1.1)
        await _failure(client.call("PING"))
        assert silent.accepted == 2
    finally:
        await client.close()


async def test_the_backoff_resets_once_redis_answers(tmp_path: Path) -> None:
    port = free_port()
    client = RespClient(f"redis://127.0.0.1:{port}/0", timeout=1)

    def start() -> subprocess.Popen[bytes]:
        process = subprocess.Popen(
            redis_server_command(port, tmp_path),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port("127.0.0.1", port, timeout=20)
        return process

    process = None
    try:
        for _ in range(2):
            # a failure, then Redis back after the first backoff (a second one in a
            # row would be twice as long): answered
            await _failure(client.call("PING"))
            process = start()
            await asyncio.sleep(1.2)
            assert await client.call("PING") == "PONG"
            process.terminate()
            process.wait(timeout=10)
            process = None
            await asyncio.sleep(0.1)
    finally:
        await client.close()
        if process is not None:
            process.terminate()
            process.wait(timeout=10)


async def test_nobody_listening_is_a_connection_error() -> None:
    client = RespClient(f"redis://127.0.0.1:{free_port()}/0", timeout=1)
    with pytest.raises(RedisUnavailable, match="ConnectionRefusedError"):
        await client.call("PING")
    await client.close()
