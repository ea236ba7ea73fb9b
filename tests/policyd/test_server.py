"""The policy server on loopback: answers in order on persistent connections, survives
anything a client sends, and never lets one client hold up another."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from postwarden.policyd.server import PolicyServer

REQUEST = b"request=smtpd_access_policy\nprotocol_state=RCPT\nrecipient=%s\n\n"


async def echo_decider(request: dict[str, str]) -> str:
    return f"DUNNO {request.get('recipient', '-')}"


@pytest.fixture
async def server() -> AsyncIterator[tuple[PolicyServer, str]]:
    policy_server = PolicyServer(echo_decider, max_connections=8, idle_timeout=5.0)
    address = await policy_server.listen("127.0.0.1:0")
    yield policy_server, address
    await policy_server.close(drain_timeout=1.0)


async def connect(address: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, _, port = address.rpartition(":")
    return await asyncio.open_connection(host, int(port))


async def read_reply(reader: asyncio.StreamReader) -> bytes:
    return await asyncio.wait_for(reader.readuntil(b"\n\n"), 5)


async def test_persistent_connection_answers_in_order(server: tuple[PolicyServer, str]) -> None:
    _, address = server
    reader, writer = await connect(address)
    writer.write(b"".join(REQUEST % f"r{i}@x.test".encode() for i in range(50)))
    await writer.drain()
    replies = [await read_reply(reader) for _ in range(50)]
    assert replies == [b"action=DUNNO r%d@x.test\n\n" % i for i in range(50)]
    writer.close()


async def test_unix_socket(tmp_path: object) -> None:
    from pathlib import Path

    assert isinstance(tmp_path, Path)
    policy_server = PolicyServer(echo_decider)
    path = tmp_path / "policy.sock"
    await policy_server.listen(f"unix:{path}")
    reader, writer = await asyncio.open_unix_connection(str(path))
    writer.write(REQUEST % b"u@x.test")
    assert await read_reply(reader) == b"action=DUNNO u@x.test\n\n"
    writer.close()
    await policy_server.close(drain_timeout=1.0)


async def test_garbage_closes_that_connection_only(server: tuple[PolicyServer, str]) -> None:
    _, address = server
    bad_reader, bad_writer = await connect(address)
    good_reader, good_writer = await connect(address)
    bad_writer.write(b"this is not the policy protocol\n\n")
    await bad_writer.drain()
    assert await asyncio.wait_for(bad_reader.read(), 5) == b""
    good_writer.write(REQUEST % b"still@x.test")
    assert await read_reply(good_reader) == b"action=DUNNO still@x.test\n\n"
    good_writer.close()


async def test_an_endless_line_is_cut_off(server: tuple[PolicyServer, str]) -> None:
    _, address = server
    reader, writer = await connect(address)
    writer.write(b"x=" + b"a" * 100_000)
    await writer.drain()
    assert await asyncio.wait_for(reader.read(), 5) == b""


async def test_a_slow_client_does_not_block_others(server: tuple[PolicyServer, str]) -> None:
    _, address = server
    slow_reader, slow_writer = await connect(address)
    slow_writer.write(b"request=smtpd_access_policy\nrecip")  # and then nothing
    await slow_writer.drain()
    fast_reader, fast_writer = await connect(address)
    fast_writer.write(REQUEST % b"fast@x.test")
    assert await read_reply(fast_reader) == b"action=DUNNO fast@x.test\n\n"
    slow_writer.write(b"ient=slow@x.test\n\n")
    assert await read_reply(slow_reader) == b"action=DUNNO slow@x.test\n\n"
    slow_writer.close()
    fast_writer.close()


async def test_connections_over_the_cap_are_refused(server: tuple[PolicyServer, str]) -> None:
    policy_server, address = server
    held = [await connect(address) for _ in range(8)]
    for reader, writer in held:
        writer.write(REQUEST % b"a@x.test")
        await read_reply(reader)
    assert policy_server.connections == 8
    extra_reader, _ = await connect(address)
    assert await asyncio.wait_for(extra_reader.read(), 5) == b""
    for _, writer in held:
        writer.close()


async def test_close_drains_and_ends_idle_connections(server: tuple[PolicyServer, str]) -> None:
    policy_server, address = server
    reader, writer = await connect(address)
    writer.write(REQUEST % b"a@x.test")
    await read_reply(reader)
    await policy_server.close(drain_timeout=0.5)
    assert await asyncio.wait_for(reader.read(), 5) == b""
    assert policy_server.connections == 0


async def test_a_failing_decision_is_answered_and_the_connection_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def decide(request: dict[str, str]) -> str:
        if request["recipient"] == "boom@x.test":
            raise RuntimeError("a bug")
        return await echo_decider(request)

    def decide_now(request: dict[str, str]) -> str | None:
        if request["recipient"] == "now@x.test":
            raise RuntimeError("a bug")
        return None

    policy_server = PolicyServer(decide, decide_now, error_action="DEFER 4.3.0 oops")
    address = await policy_server.listen("127.0.0.1:0")
    reader, writer = await connect(address)
    replies = []
    for recipient in (b"now@x.test", b"boom@x.test", b"fine@x.test"):
        writer.write(REQUEST % recipient)
        replies.append(await read_reply(reader))
    assert replies == [
        b"action=DEFER 4.3.0 oops\n\n",
        b"action=DEFER 4.3.0 oops\n\n",
        b"action=DUNNO fine@x.test\n\n",
    ]
    assert sum("a decision failed" in r.getMessage() for r in caplog.records) == 2
    writer.close()
    await policy_server.close(drain_timeout=1.0)


async def test_a_client_pipelining_without_end_is_no_longer_read() -> None:
    gate = asyncio.Event()
    started = 0

    async def slow(request: dict[str, str]) -> str:
        nonlocal started
        started += 1
        await gate.wait()
        return await echo_decider(request)

    policy_server = PolicyServer(slow)
    address = await policy_server.listen("127.0.0.1:0")
    reader, writer = await connect(address)
    count = 40_000  # about 2.5 MB of requests
    writer.write(b"".join(REQUEST % b"r%d@x.test" % i for i in range(count)))
    await asyncio.sleep(0.5)
    (connection,) = policy_server.live
    # what the kernel handed over before reading paused, not the whole stream
    assert len(connection.waiting) < count / 4
    assert started == 1  # one worker, not a task per request
    gate.set()
    replies = [await read_reply(reader) for _ in range(count)]
    assert replies[0] == b"action=DUNNO r0@x.test\n\n"
    assert replies[-1] == b"action=DUNNO r%d@x.test\n\n" % (count - 1)
    writer.close()
    await policy_server.close(drain_timeout=1.0)


async def test_a_unix_path_that_is_not_a_socket_is_left_alone(tmp_path: object) -> None:
    from pathlib import Path

    assert isinstance(tmp_path, Path)
    precious = tmp_path / "policy.yml"
    precious.write_text("version: 1\n")
    policy_server = PolicyServer(echo_decider)
    with pytest.raises(FileExistsError, match="not a socket"):
        await policy_server.listen(f"unix:{precious}")
    assert precious.read_text() == "version: 1\n"
    await policy_server.close(drain_timeout=1.0)


async def test_one_client_address_cannot_take_every_connection() -> None:
    """A local user with many connections from one address meets its own cap; Postfix,
    from another address, still gets in."""
    policy_server = PolicyServer(echo_decider, max_connections=8, max_per_client=3)
    address = await policy_server.listen("127.0.0.1:0")
    host, _, port = address.rpartition(":")
    hog = [
        await asyncio.open_connection(host, int(port), local_addr=("127.0.0.70", 0))
        for _ in range(5)
    ]
    for hog_reader, _ in hog[3:]:
        assert await asyncio.wait_for(hog_reader.read(), 5) == b""  # closed at once
    reader, writer = await asyncio.open_connection(host, int(port), local_addr=("127.0.0.71", 0))
    writer.write(REQUEST % b"postfix@x.test")
    assert await read_reply(reader) == b"action=DUNNO postfix@x.test\n\n"
    assert policy_server.per_client["127.0.0.70"] == 3
    for _, hog_writer in hog:
        hog_writer.close()
    writer.close()
    await policy_server.close(drain_timeout=1.0)


async def test_a_request_sent_a_byte_at_a_time_is_cut_off() -> None:
    """Each byte would reset an idle timer; the request as a whole has a deadline."""
    policy_server = PolicyServer(echo_decider, idle_timeout=60.0, request_timeout=0.6)
    address = await policy_server.listen("127.0.0.1:0")
    reader, writer = await connect(address)
    started = asyncio.get_running_loop().time()
    closed = False
    for byte in REQUEST[:-2]:
        writer.write(bytes([byte]))
        try:
            await writer.drain()
        except ConnectionError:
            closed = True
            break
        if reader.at_eof():
            closed = True
            break
        await asyncio.sleep(0.05)
        if asyncio.get_running_loop().time() - started > 5:
            break
    assert closed or await asyncio.wait_for(reader.read(), 5) == b""
    assert asyncio.get_running_loop().time() - started < 3
    # a client that sends whole requests, however rarely, keeps its connection
    reader, writer = await connect(address)
    for number in range(3):
        writer.write(REQUEST % b"ok%d@x.test" % number)
        assert (await read_reply(reader)).startswith(b"action=DUNNO ok")
        await asyncio.sleep(0.5)
    writer.close()
    await policy_server.close(drain_timeout=1.0)
