"""A small Redis client for the one thing the daemon asks Redis: run a script.

redis-py's asyncio client spends more time per command than the daemon spends
on a whole decision (timeouts wrapped around every call, connection pool
bookkeeping); this client keeps one connection, pipelines the calls of all SMTP
sessions on it (Redis answers in order), and watches for a stuck server with
one timer instead of one per call. It speaks just enough RESP2 for that:
commands out; simple strings, errors, integers, bulk strings and arrays in.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import Any
from urllib.parse import unquote, urlsplit

RespValue = Any


class RespError(Exception):
    """An error reply from Redis (the connection itself is fine)."""


def encode(*arguments: str | int | float | bytes) -> bytes:
    parts = [b"*%d\r\n" % len(arguments)]
    for argument in arguments:
        data = argument if isinstance(argument, bytes) else str(argument).encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


def parse(buffer: bytes | bytearray, start: int = 0) -> tuple[RespValue, int] | None:
    """One reply from ``buffer`` at ``start``: (value, end) or None if incomplete."""
    end = buffer.find(b"\r\n", start)
    if end < 0:
        return None
    kind, line = buffer[start : start + 1], bytes(buffer[start + 1 : end])
    after = end + 2
    if kind == b":":
        return int(line), after
    if kind == b"+":
        return line.decode(), after
    if kind == b"-":
        return RespError(line.decode("utf-8", "replace")), after
    if kind == b"$":
        length = int(line)
        if length < 0:
            return None, after
        if len(buffer) < after + length + 2:
            return None
        return bytes(buffer[after : after + length]), after + length + 2
    if kind == b"*":
        count = int(line)
        items = []
        for _ in range(max(count, 0)):
            parsed = parse(buffer, after)
            if parsed is None:
                return None
            item, after = parsed
            items.append(item)
        return (items if count >= 0 else None), after
    raise ConnectionError(f"not a RESP reply: {bytes(buffer[start : start + 20])!r}")


class _Protocol(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.waiting: deque[tuple[float, asyncio.Future[RespValue]]] = deque()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        position = 0
        while self.waiting:
            parsed = parse(self.buffer, position)
            if parsed is None:
                break
            value, position = parsed
            _, future = self.waiting.popleft()
            if not future.done():
                future.set_result(value)
        del self.buffer[:position]

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.fail(ConnectionError(f"connection to redis lost: {exc or 'closed'}"))

    def fail(self, error: Exception) -> None:
        while self.waiting:
            _, future = self.waiting.popleft()
            if not future.done():
                future.set_exception(error)


class RedisUnavailable(ConnectionError):
    """No connection to Redis: the attempt failed, or failed a moment ago and the
    client waits for its backoff before trying again."""


def reason(error: BaseException) -> str:
    """The class and message of ``error``: some (a TimeoutError) have no message."""
    text = str(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


FIRST_BACKOFF = 1.0
LONGEST_BACKOFF = 5.0


class RespClient:
    def __init__(self, url: str, timeout: float = 2.0) -> None:
        parts = urlsplit(url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 6379
        self.password = unquote(parts.password) if parts.password else None
        self.username = unquote(parts.username) if parts.username else None
        self.database = int(parts.path.strip("/") or 0)
        self.timeout = timeout
        self._protocol: _Protocol | None = None
        self._attempt: asyncio.Task[_Protocol] | None = None
        self._backoff = 0.0
        self._retry_at = 0.0
        self._last_failure = ""
        self._watchdog: asyncio.Task[None] | None = None

    async def call(self, *arguments: str | int | float | bytes) -> RespValue:
        protocol = await self._connection()
        return await self._send(protocol, arguments)

    async def _send(
        self, protocol: _Protocol, arguments: tuple[str | int | float | bytes, ...]
    ) -> RespValue:
        assert protocol.transport is not None
        future: asyncio.Future[RespValue] = asyncio.get_running_loop().create_future()
        protocol.waiting.append((time.monotonic(), future))
        protocol.transport.write(encode(*arguments))
        value = await future
        if isinstance(value, RespError):
            raise value
        return value

    async def _connection(self) -> _Protocol:
        protocol = self._protocol
        if protocol is not None and protocol.transport is not None:
            return protocol
        if self._attempt is None:
            # while Redis is down, one attempt per backoff period rather than one
            # per decision: the others fail at once instead of queueing for seconds
            if time.monotonic() < self._retry_at:
                raise RedisUnavailable(f"{self._last_failure} (next attempt in a moment)")
            self._attempt = asyncio.create_task(self._connect())
        # shielded: one waiter giving up must not cancel the attempt the others share
        return await asyncio.shield(self._attempt)

    async def _connect(self) -> _Protocol:
        try:
            # the handshake too: a server that accepts and never answers AUTH would
            # otherwise hold every decision, and no watchdog sees this connection yet
            fresh = await asyncio.wait_for(self._open(), self.timeout)
        except Exception as error:
            self._backoff = min(self._backoff * 2, LONGEST_BACKOFF) or FIRST_BACKOFF
            self._retry_at = time.monotonic() + self._backoff
            self._last_failure = f"cannot connect to {self.host}:{self.port}: {reason(error)}"
            raise RedisUnavailable(self._last_failure) from error
        finally:
            self._attempt = None
        self._backoff = 0.0
        self._protocol = fresh
        if self._watchdog is None:
            self._watchdog = asyncio.create_task(self._watch())
        return fresh

    async def _open(self) -> _Protocol:
        loop = asyncio.get_running_loop()
        transport, fresh = await loop.create_connection(_Protocol, self.host, self.port)
        try:
            if self.password is not None:
                login = (self.username, self.password) if self.username else (self.password,)
                await self._send(fresh, ("AUTH", *login))
            if self.database:
                await self._send(fresh, ("SELECT", self.database))
        except BaseException:
            # a refused login or a timeout: a connection kept open here is never used
            transport.abort()
            raise
        return fresh

    async def _watch(self) -> None:
        """A server that stops answering fails every waiting call after ``timeout``."""
        while True:
            await asyncio.sleep(self.timeout / 4)
            protocol = self._protocol
            if protocol is None or not protocol.waiting:
                continue
            if time.monotonic() - protocol.waiting[0][0] > self.timeout:
                protocol.fail(TimeoutError(f"redis did not answer within {self.timeout}s"))
                if protocol.transport is not None:
                    protocol.transport.abort()

    async def close(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
        if self._attempt is not None:
            self._attempt.cancel()
        if self._protocol is not None and self._protocol.transport is not None:
            self._protocol.transport.close()
