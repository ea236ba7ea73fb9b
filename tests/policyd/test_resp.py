"""The small Redis client: the wire format, and a real redis-server with a password,
a database number and a server that stops answering."""

from __future__ import annotations

import asyncio
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from postwarden.policyd.resp import RespClient, RespError, encode, parse
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
    with pytest.raises(RespError):
        await client.call("PING")
    await client.close()


async def test_a_server_that_stops_answering_times_out() -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    client = RespClient(f"redis://127.0.0.1:{port}/0", timeout=0.4)
    try:
        with pytest.raises((TimeoutError, ConnectionError)):
            await asyncio.wait_for(client.call("PING"), 5)
    finally:
        await client.close()
        listener.close()


async def test_nobody_listening_is_a_connection_error() -> None:
    client = RespClient(f"redis://127.0.0.1:{free_port()}/0", timeout=1)
    with pytest.raises(ConnectionRefusedError):
        await client.call("PING")
    await client.close()
