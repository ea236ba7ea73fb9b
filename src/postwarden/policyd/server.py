"""The asyncio policy server: persistent connections over TCP and UNIX sockets.

Each connection is an ``asyncio.Protocol``: received bytes go to the protocol
parser, and every complete request is answered in order. When the decision can
be made at once (the local counter store), it is made inside ``data_received``
with no task, no timer and no await: the request costs a parse, a decision and
a write. When it must wait (Redis), the connection's requests queue up for one
worker task, so that replies still leave in order; past a few queued requests
the connection is not read until the queue shrinks, so a client that pipelines
without end costs a bounded amount of memory.

A client that breaks the protocol gets a log line and a closed connection;
nothing a client sends can stop the server. Connections are capped, in all and
per client address; idle ones are closed, and so is one that leaves a request
half sent (Postfix writes each request whole: a byte a minute is an attack); a
client that does not read its replies stops being read.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import stat
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import cast

from postwarden.policyd.protocol import ProtocolError, RequestParser, reply

log = logging.getLogger("postwarden.policyd")

Decider = Callable[[dict[str, str]], Awaitable[str]]
ImmediateDecider = Callable[[dict[str, str]], str | None]
"""Decides at once, or returns None when the decision has to wait for I/O."""
MAX_CONNECTIONS = 1024
MAX_PER_CLIENT = 512
"""Connections from one TCP client address: more than Postfix's smtpd processes of
every service together on a large host, fewer than all. A UNIX socket (the
deployed default) admits only Postfix's group, and has no per-client cap."""
REQUEST_TIMEOUT = 10.0
"""How long a request may stay half received."""
# longer than Postfix's own smtpd_policy_service_max_idle (300 s): Postfix closes first
IDLE_TIMEOUT = 330.0
IDLE_SWEEP = 10.0
MAX_WAITING = 16
"""Requests a connection may have waiting for I/O before it is no longer read."""
ERROR_ACTION = "DEFER_IF_PERMIT 4.3.0 policy service error, try again later"


class _Connection(asyncio.Protocol):
    def __init__(self, server: PolicyServer) -> None:
        self.server = server
        self.parser = RequestParser()
        self.transport: asyncio.Transport | None = None
        self.waiting: deque[dict[str, str]] = deque()
        self.worker: asyncio.Task[None] | None = None
        self.last_seen = time.monotonic()
        self.peer: object = "unix"
        self.write_paused = False
        self.queue_full = False
        self.partial_since: float | None = None
        """When the request now half received began to arrive."""
        self.client: str | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but behave as one
        self.transport = cast(asyncio.Transport, transport)
        self.peer = self.transport.get_extra_info("peername") or "unix"
        if len(self.server.live) >= self.server.max_connections:
            log.warning("too many connections (%d): refusing one", len(self.server.live))
            self.transport.close()
            return
        client = self.peer[0] if isinstance(self.peer, tuple) else None
        if client is not None and self.server.per_client[client] >= self.server.max_per_client:
            self.server.refuse_client(client)
            self.transport.close()
            return
        self.client = client
        if client is not None:
            self.server.per_client[client] += 1
        self.server.live.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        if self in self.server.live and self.client is not None:
            self.server.per_client[self.client] -= 1
            if not self.server.per_client[self.client]:
                del self.server.per_client[self.client]
        self.server.live.discard(self)
        self.waiting.clear()
        if self.worker is not None:
            self.worker.cancel()

    def data_received(self, data: bytes) -> None:
        self.last_seen = time.monotonic()
        try:
            requests = self.parser.feed(data)
        except ProtocolError as error:
            log.warning("closing connection from %s: %s", self.peer, error)
            assert self.transport is not None
            self.transport.close()
            return
        if not self.parser.pending:
            self.partial_since = None
        elif self.partial_since is None or requests:
            self.partial_since = self.last_seen
        for request in requests:
            self._answer(request)

    def _answer(self, request: dict[str, str]) -> None:
        assert self.transport is not None
        if not self.waiting and self.server.decide_now is not None:
            try:
                action = self.server.decide_now(request)
            except Exception:
                action = self._failed()
            if action is not None:
                self.transport.write(reply(action))
                return
        # this request waits for I/O, or follows one that does: keep the order
        self.waiting.append(request)
        if len(self.waiting) >= MAX_WAITING and not self.queue_full:
            self.queue_full = True
            self._read_or_not()
        if self.worker is None:
            self.worker = asyncio.ensure_future(self._work())

    async def _work(self) -> None:
        try:
            while self.waiting:
                try:
                    action = await self.server.decide(self.waiting[0])
                except Exception:
                    action = self._failed()
                if not self.waiting:  # the connection was lost meanwhile
                    return
                self.waiting.popleft()
                if self.transport is not None and not self.transport.is_closing():
                    self.transport.write(reply(action))
                if self.queue_full and len(self.waiting) <= MAX_WAITING // 2:
                    self.queue_full = False
                    self._read_or_not()
        finally:
            self.worker = None

    def _failed(self) -> str:
        # a bug, not the client's doing: answer, keep the connection, tell the log
        log.exception("a decision failed; answered %s", self.server.error_action)
        return self.server.error_action

    def _read_or_not(self) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        if self.write_paused or self.queue_full:
            self.transport.pause_reading()
        else:
            self.transport.resume_reading()

    def pause_writing(self) -> None:
        # the client does not read its replies: stop reading its requests
        self.write_paused = True
        self._read_or_not()

    def resume_writing(self) -> None:
        self.write_paused = False
        self._read_or_not()

    @property
    def busy(self) -> bool:
        return bool(self.waiting) or self.parser.pending


@dataclass
class PolicyServer:
    decide: Decider
    decide_now: ImmediateDecider | None = None
    error_action: str = ERROR_ACTION
    """The answer when a decision fails unexpectedly (the fail mode's, in the daemon)."""
    max_connections: int = MAX_CONNECTIONS
    max_per_client: int = MAX_PER_CLIENT
    idle_timeout: float = IDLE_TIMEOUT
    request_timeout: float = REQUEST_TIMEOUT
    live: set[_Connection] = field(default_factory=set)
    per_client: Counter[str] = field(default_factory=Counter)
    _refused_clients: set[str] = field(default_factory=set)
    _servers: list[asyncio.Server] = field(default_factory=list)
    _sweeper: asyncio.Task[None] | None = None

    async def listen(self, address: str) -> str:
        """Start listening on HOST:PORT or unix:PATH; return the bound address."""
        loop = asyncio.get_running_loop()
        if address.startswith("unix:"):
            path = address.removeprefix("unix:")
            _remove_stale_socket(path)
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

    def refuse_client(self, client: str) -> None:
        # once per client until its connections drop below the cap: no log flood
        if client not in self._refused_clients:
            self._refused_clients.add(client)
            log.warning(
                "too many connections from %s (%d): refusing more", client, self.max_per_client
            )

    async def _close_idle(self) -> None:
        interval = min(IDLE_SWEEP, self.idle_timeout / 2, self.request_timeout / 2)
        while True:
            await asyncio.sleep(interval)
            now = time.monotonic()
            idle, slow = now - self.idle_timeout, now - self.request_timeout
            for connection in list(self.live):
                started = connection.partial_since
                if connection.last_seen < idle or (started is not None and started < slow):
                    if started is not None and started < slow:
                        log.warning(
                            "closing connection from %s: request sent too slowly", connection.peer
                        )
                    if connection.transport is not None:
                        connection.transport.close()
            self._refused_clients = {
                c for c in self._refused_clients if self.per_client[c] >= self.max_per_client
            }

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


def _remove_stale_socket(path: str) -> None:
    """A socket left by an earlier run is removed; anything else at that path (a
    typo naming the policy file) is not ours to delete."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise FileExistsError(f"{path} exists and is not a socket: not listening there")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
