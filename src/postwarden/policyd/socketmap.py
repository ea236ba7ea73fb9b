"""Postfix's socketmap protocol (socketmap_table(5)), for the IP pool lookups.

A request is a netstring ``"<len>:<name> <key>,"``; the reply a netstring ``OK
value``, ``NOTFOUND ``, or ``TEMP reason``. Connections are persistent. The
parser is pure; the server is a thin asyncio wrapper.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from postwarden.policyd.protocol import ProtocolError

log = logging.getLogger("postwarden.policyd")
MAX_NETSTRING = 100_000
MAP_NAME = "transport"


@dataclass
class NetstringParser:
    _buffer: bytearray = field(default_factory=bytearray)

    def feed(self, data: bytes) -> list[bytes]:
        self._buffer += data
        found: list[bytes] = []
        while True:
            colon = self._buffer.find(b":")
            if colon < 0:
                if len(self._buffer) > 10:
                    raise ProtocolError("netstring length too long")
                return found
            length_text = bytes(self._buffer[:colon])
            if not length_text.isdigit():
                raise ProtocolError("netstring length is not a number")
            length = int(length_text)
            if length > MAX_NETSTRING:
                raise ProtocolError("netstring too large")
            end = colon + 1 + length
            if len(self._buffer) < end + 1:
                return found
            if self._buffer[end] != ord(","):
                raise ProtocolError("netstring does not end with a comma")
            found.append(bytes(self._buffer[colon + 1 : end]))
            del self._buffer[: end + 1]

    @property
    def pending(self) -> bool:
        """Part of a request is buffered."""
        return bool(self._buffer)


def netstring(text: str) -> bytes:
    data = text.encode()
    return b"%d:%s," % (len(data), data)


def answer(request: bytes, lookup: Callable[[str], str | None]) -> bytes:
    name, _, key = request.decode("utf-8", "replace").partition(" ")
    if name != MAP_NAME:
        return netstring(f"PERM unknown map {name!r}")
    value = lookup(key)
    return netstring(f"OK {value}" if value else "NOTFOUND ")


MAX_CONNECTIONS = 256
"""Postfix's queue manager and address rewriting keep a few connections each."""
IDLE_TIMEOUT = 330.0
"""Longer than Postfix's idle time for a socketmap (ipc_idle, 5 min)."""
REQUEST_TIMEOUT = 10.0
"""How long a request may stay half received: Postfix sends each one whole."""


@dataclass
class SocketmapServer:
    lookup: Callable[[str], str | None]
    max_connections: int = MAX_CONNECTIONS
    idle_timeout: float = IDLE_TIMEOUT
    request_timeout: float = REQUEST_TIMEOUT
    _servers: list[asyncio.Server] = field(default_factory=list)
    _connections: set[asyncio.Task[None]] = field(default_factory=set)

    async def listen(self, address: str) -> str:
        host, _, port = address.rpartition(":")
        server = await asyncio.start_server(
            self._serve, host.strip("[]"), int(port), reuse_address=True
        )
        self._servers.append(server)
        name = server.sockets[0].getsockname()
        log.info("socketmap listening on %s:%s", name[0], name[1])
        return f"{name[0]}:{name[1]}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        if len(self._connections) >= self.max_connections:
            log.warning("socketmap: too many connections (%d): refusing one", self.max_connections)
            writer.close()
            return
        self._connections.add(task)
        parser = NetstringParser()
        try:
            while True:
                # idle between requests for long; a started request must finish soon
                wait = self.request_timeout if parser.pending else self.idle_timeout
                data = await asyncio.wait_for(reader.read(4096), wait)
                if not data:
                    break
                for request in parser.feed(data):
                    writer.write(answer(request, self.lookup))
                await writer.drain()
        except ProtocolError as error:
            log.warning("socketmap: closing a connection: %s", error)
        except TimeoutError:
            pass
        except ConnectionError:
            pass
        finally:
            self._connections.discard(task)
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def close(self) -> None:
        """Postfix keeps socketmap connections open: end them rather than wait."""
        for server in self._servers:
            server.close()
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)
        for server in self._servers:
            await server.wait_closed()
