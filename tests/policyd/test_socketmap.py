"""Postfix's socketmap protocol: the netstring parser at every split, the replies, and
the server on loopback, with Postfix's own client (postmap) where it is installed."""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from postwarden.policyd.protocol import ProtocolError
from postwarden.policyd.socketmap import (
    MAX_NETSTRING,
    NetstringParser,
    SocketmapServer,
    answer,
    netstring,
)

TABLE = {"alice@example.com": "pw_main_203_0_113_10", "@example.com": "pw_main_203_0_113_11"}
REQUEST = b"27:transport alice@example.com,"


def lookup(key: str) -> str | None:
    return TABLE.get(key)


# ---------------------------------------------------------------- the parser


def test_netstring() -> None:
    assert netstring("transport alice@example.com") == REQUEST
    assert netstring("") == b"0:,"
    assert netstring("é") == b"2:\xc3\xa9,"


def test_a_request_split_at_every_byte() -> None:
    for cut in range(len(REQUEST) + 1):
        parser = NetstringParser()
        first = parser.feed(REQUEST[:cut])
        second = parser.feed(REQUEST[cut:])
        assert first + second == [b"transport alice@example.com"], cut
        assert first == ([] if cut < len(REQUEST) else [b"transport alice@example.com"])


def test_a_request_byte_by_byte() -> None:
    parser = NetstringParser()
    found = [item for i in range(len(REQUEST)) for item in parser.feed(REQUEST[i : i + 1])]
    assert found == [b"transport alice@example.com"]


def test_several_requests_in_one_read() -> None:
    parser = NetstringParser()
    data = REQUEST + netstring("transport @example.com") + b"0:," + b"15:transport b"
    assert parser.feed(data) == [
        b"transport alice@example.com",
        b"transport @example.com",
        b"",
    ]
    assert parser.feed(b"@x.t,") == [b"transport b@x.t"]
    assert parser.feed(b"") == []


def test_the_largest_netstring_is_accepted() -> None:
    payload = b"x" * MAX_NETSTRING
    assert NetstringParser().feed(b"%d:%s," % (MAX_NETSTRING, payload)) == [payload]


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"x5:hello,", "not a number"),
        (b"-5:hello,", "not a number"),
        (b" 5:hello,", "not a number"),
        (b":hello,", "not a number"),
        (b"5:hello!", "does not end with a comma"),
        (b"5:hello world,", "does not end with a comma"),
        (b"%d:" % (MAX_NETSTRING + 1), "too large"),
        (b"99999999999999:", "too long|too large"),
        (b"12345678901", "too long"),
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "not a number"),
    ],
)
def test_malformed_input(data: bytes, reason: str) -> None:
    with pytest.raises(ProtocolError, match=reason):
        NetstringParser().feed(data)


def test_a_bad_request_after_a_good_one() -> None:
    parser = NetstringParser()
    assert parser.feed(REQUEST) == [b"transport alice@example.com"]
    with pytest.raises(ProtocolError):
        parser.feed(b"3:abc;")


# ---------------------------------------------------------------- replies


def test_answers() -> None:
    seen: list[str] = []

    def recording(key: str) -> str | None:
        seen.append(key)
        return lookup(key)

    assert answer(b"transport alice@example.com", recording) == b"23:OK pw_main_203_0_113_10,"
    assert answer(b"transport nobody@else.test", recording) == b"9:NOTFOUND ,"
    assert answer(b"transport @example.com", recording) == b"23:OK pw_main_203_0_113_11,"
    assert answer(b"transport", recording) == b"9:NOTFOUND ,"
    assert seen == ["alice@example.com", "nobody@else.test", "@example.com", ""]


def test_a_retry_transport_is_an_ok_answer() -> None:
    value = "retry:4.7.0 pool main has no active outbound address"
    assert answer(b"transport a@b.test", lambda key: value) == netstring(f"OK {value}")


def test_unknown_map_name() -> None:
    called: list[str] = []

    def recording(key: str) -> str:
        called.append(key)
        return "x"

    reply = answer(b"virtual alice@example.com", recording)
    assert reply == netstring("PERM unknown map 'virtual'")
    assert called == []


# ---------------------------------------------------------------- the server


@pytest.fixture
async def server() -> AsyncIterator[tuple[SocketmapServer, str]]:
    socketmap = SocketmapServer(lookup)
    address = await socketmap.listen("127.0.0.1:0")
    yield socketmap, address
    await socketmap.close()


async def connect(address: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, _, port = address.rpartition(":")
    return await asyncio.open_connection(host, int(port))


async def read_netstring(reader: asyncio.StreamReader) -> bytes:
    length = await asyncio.wait_for(reader.readuntil(b":"), 5)
    data = await asyncio.wait_for(reader.readexactly(int(length[:-1]) + 1), 5)
    assert data.endswith(b",")
    return data[:-1]


async def test_listen_reports_its_port(server: tuple[SocketmapServer, str]) -> None:
    _, address = server
    host, _, port = address.rpartition(":")
    assert host == "127.0.0.1"
    assert int(port) > 0


async def test_a_persistent_connection(server: tuple[SocketmapServer, str]) -> None:
    _, address = server
    reader, writer = await connect(address)
    writer.write(REQUEST + netstring("transport nobody@else.test") + b"22:transport @exa")
    await writer.drain()
    assert await read_netstring(reader) == b"OK pw_main_203_0_113_10"
    assert await read_netstring(reader) == b"NOTFOUND "
    writer.write(b"mple.com,")
    await writer.drain()
    assert await read_netstring(reader) == b"OK pw_main_203_0_113_11"
    for _ in range(20):
        writer.write(netstring("other alice@example.com"))
        await writer.drain()
        assert await read_netstring(reader) == b"PERM unknown map 'other'"
    writer.close()
    await writer.wait_closed()


async def test_garbage_closes_that_connection_only(server: tuple[SocketmapServer, str]) -> None:
    _, address = server
    bad_reader, bad_writer = await connect(address)
    good_reader, good_writer = await connect(address)
    bad_writer.write(b"GET / HTTP/1.1\r\nHost: example\r\n\r\n")
    await bad_writer.drain()
    assert await asyncio.wait_for(bad_reader.read(), 5) == b""
    good_writer.write(REQUEST)
    await good_writer.drain()
    assert await read_netstring(good_reader) == b"OK pw_main_203_0_113_10"
    good_writer.close()


async def test_an_answer_before_garbage_is_still_sent(
    server: tuple[SocketmapServer, str],
) -> None:
    _, address = server
    reader, writer = await connect(address)
    writer.write(REQUEST)
    await writer.drain()
    assert await read_netstring(reader) == b"OK pw_main_203_0_113_10"
    writer.write(b"5:hello!")
    await writer.drain()
    assert await asyncio.wait_for(reader.read(), 5) == b""


async def test_close_ends_idle_connections_promptly() -> None:
    socketmap = SocketmapServer(lookup)
    address = await socketmap.listen("127.0.0.1:0")
    clients = [await connect(address) for _ in range(3)]
    reader, writer = clients[0]
    writer.write(REQUEST)
    await writer.drain()
    assert await read_netstring(reader) == b"OK pw_main_203_0_113_10"
    await asyncio.sleep(0.05)  # every connection has reached the server

    started = time.perf_counter()
    await asyncio.wait_for(socketmap.close(), 2)
    assert time.perf_counter() - started < 1
    for client_reader, client_writer in clients:
        assert await asyncio.wait_for(client_reader.read(), 2) == b""
        client_writer.close()
    host, _, port = address.rpartition(":")
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection(host, int(port))


def _postmap() -> str | None:
    return shutil.which("postmap") or shutil.which("postmap", path="/usr/sbin:/usr/bin")


async def test_postfix_own_client(server: tuple[SocketmapServer, str], tmp_path: Path) -> None:
    """postmap -q speaks socketmap exactly as trivial-rewrite does."""
    postmap = _postmap()
    if postmap is None:
        pytest.fail("Postfix's postmap is missing: run scripts/setup --test")
    (tmp_path / "main.cf").write_text("", encoding="utf-8")
    _, address = server

    async def query(key: str) -> tuple[int, str]:
        process = await asyncio.create_subprocess_exec(
            postmap,
            "-c",
            str(tmp_path),
            "-q",
            key,
            f"socketmap:inet:{address}:transport",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, _ = await asyncio.wait_for(process.communicate(), 10)
        assert process.returncode is not None
        return process.returncode, out.decode()

    assert await query("alice@example.com") == (0, "pw_main_203_0_113_10\n")
    assert await query("@example.com") == (0, "pw_main_203_0_113_11\n")
    assert await query("nobody@else.test") == (1, "")


async def test_connections_over_the_cap_are_refused() -> None:
    socketmap = SocketmapServer(lookup, max_connections=3)
    address = await socketmap.listen("127.0.0.1:0")
    held = [await connect(address) for _ in range(3)]
    for reader, writer in held:
        writer.write(netstring("transport alice@example.com"))
        await read_netstring(reader)
    extra, _ = await connect(address)
    assert await asyncio.wait_for(extra.read(), 5) == b""
    for _, writer in held:
        writer.close()
    await socketmap.close()


async def test_idle_and_half_sent_requests_are_cut_off() -> None:
    socketmap = SocketmapServer(lookup, idle_timeout=0.5, request_timeout=0.3)
    address = await socketmap.listen("127.0.0.1:0")
    idle, _ = await connect(address)
    assert await asyncio.wait_for(idle.read(), 5) == b""
    slow, writer = await connect(address)
    writer.write(b"27:transport")  # and then nothing more
    started = asyncio.get_running_loop().time()
    assert await asyncio.wait_for(slow.read(), 5) == b""
    assert asyncio.get_running_loop().time() - started < 0.45
    await socketmap.close()
