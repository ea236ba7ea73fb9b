"""The asyncio policy server: persistent connections over TCP and UNIX sockets.

Each connection is an ``asyncio.Protocol``: received bytes go to the protocol
parser, and every complete request is answered in order. When the decision can
be made at once (the local counter store), it is made inside ``data_received``
with no task, no timer and no await: the request costs a parse, a decision and
a write. When it must wait (Redis), the connection's requests are chained so
that replies still leave in order.

A client that breaks the protocol gets a log line and a closed connection;
nothing a client sends can stop the server. Connections are capped, idle ones
are closed, and a client that does not read its replies stops being read.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import cast

from postwarden.policyd.protocol import ProtocolError, RequestParser, reply

log = logging.getLogger("postwarden.policyd")

Decider = Callable[[dict[str, str]], Awaitable[str]]
ImmediateDecider = Callable[[dict[str, str]], str | None]
"""Decides at once, or returns None when the decision has to wait for I/O."""
MAX_CONNECTIONS = 1024
IDLE_TIMEOUT = 300.0
IDLE_SWEEP = 10.0


class _Connection(asyncio.Protocol):
    def __init__(self, server: PolicyServer) -> None:
        self.server = server
        self.parser = RequestParser()
        self.transport: asyncio.Transport | None = None
        self.pending: asyncio.Task[None] | None = None
        self.last_seen = time.monotonic()
        self.peer: object = "unix"

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but behave as one
        self.transport = cast(asyncio.Transport, transport)
        self.peer = self.transport.get_extra_info("peername") or "unix"
        if len(self.server.live) >= self.server.max_connections:
            log.warning("too many connections (%d): refusing one", len(self.server.live))
            self.transport.close()
            return
        self.server.live.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.live.discard(self)
        if self.pending is not None:
            self.pending.cancel()

    def data_received(self, data: bytes) -> None:
        self.last_seen = time.monotonic()
        try:
            requests = self.parser.feed(data)
        except ProtocolError as error:
            log.warning("closing connection from %s: %s", self.peer, error)
            assert self.transport is not None
            self.transport.close()
            return
        for request in requests:
            self._answer(request)

    def _answer(self, request: dict[str, str]) -> None:
        assert self.transport is not None
        if self.pending is None:
            action = self.server.decide_now(request) if self.server.decide_now else None
            if action is not None:
                self.transport.write(reply(action))
                return
        # this request waits for I/O, or follows one that does: keep the order
        previous = self.pending
        self.pending = asyncio.ensure_future(self._answer_later(previous, request))

    async def _answer_later(
        self, previous: asyncio.Task[None] | None, request: dict[str, str]
    ) -> None:
        if previous is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await previous
        action = await self.server.decide(request)
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(reply(action))
        if self.pending is asyncio.current_task():
            self.pending = None

    def pause_writing(self) -> None:
        # the client does not read its replies: stop reading its requests
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.transport is not None:
            self.transport.resume_reading()

    @property
    def busy(self) -> bool:
        return self.pending is not None or self.parser.pending


@dataclass
class PolicyServer:
    decide: Decider
    decide_now: ImmediateDecider | None = None
    max_connections: int = MAX_CONNECTIONS
    idle_timeout: float = IDLE_TIMEOUT
    live: set[_Connection] = field(default_factory=set)
    _servers: list[asyncio.Server] = field(default_factory=list)
    _sweeper: asyncio.Task[None] | None = None

    async def listen(self, address: str) -> str:
        """Start listening on HOST:PORT or unix:PATH; return the bound address."""
        loop = asyncio.get_running_loop()
        if address.startswith("unix:"):
            path = address.removeprefix("unix:")
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            server = await loop.create_unix_server(lambda: _Connection(self), path)
            bound = address
        else:
            host, _, port = address.rpartition(":")
            server = await loop.create_server(
                lambda: _Connection(self),
                host.strip("[]") or "127.0.0.1",
                int(port),
                reuse_address=True,
            )
            sock = server.sockets[0].getsockname()
            bound = f"{sock[0]}:{sock[1]}"
        self._servers.append(server)
        if self._sweeper is None:
            self._sweeper = asyncio.create_task(self._close_idle())
        log.info("listening on %s", bound)
        return bound

    async def _close_idle(self) -> None:
        interval = min(IDLE_SWEEP, self.idle_timeout / 2)
        while True:
            await asyncio.sleep(interval)
            cutoff = time.monotonic() - self.idle_timeout
            for connection in [c for c in self.live if c.last_seen < cutoff]:
                if connection.transport is not None:
                    connection.transport.close()

    async def close(self, drain_timeout: float = 10.0) -> None:
        """Stop accepting; let connections finish the request in hand, then end them."""
        for server in self._servers:
            server.close()
        deadline = time.monotonic() + drain_timeout
        while any(c.busy for c in self.live) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for connection in list(self.live):
            if connection.transport is not None:
                connection.transport.close()
        if self._sweeper is not None:
            self._sweeper.cancel()
        await asyncio.sleep(0)
        for server in self._servers:
            await server.wait_closed()

    @property
    def connections(self) -> int:
        return len(self.live)
