"""The asyncio policy server: persistent connections over TCP and UNIX sockets.

Each connection is read in chunks, fed to the protocol parser, and every
complete request is answered in order by the decider. A client that breaks the
protocol gets a log line and a closed connection; nothing a client sends can
stop the server. The number of connections is capped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from postwarden.policyd.protocol import ProtocolError, RequestParser, reply

log = logging.getLogger("postwarden.policyd")

Decider = Callable[[dict[str, str]], Awaitable[str]]
READ_CHUNK = 16384
MAX_CONNECTIONS = 1024
IDLE_TIMEOUT = 300.0


@dataclass
class PolicyServer:
    decide: Decider
    max_connections: int = MAX_CONNECTIONS
    idle_timeout: float = IDLE_TIMEOUT
    _servers: list[asyncio.Server] = field(default_factory=list)
    _connections: set[asyncio.Task[None]] = field(default_factory=set)

    async def listen(self, address: str) -> str:
        """Start listening on HOST:PORT or unix:PATH; return the bound address."""
        if address.startswith("unix:"):
            path = address.removeprefix("unix:")
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            server = await asyncio.start_unix_server(self._serve, path=path)
            bound = address
        else:
            host, _, port = address.rpartition(":")
            server = await asyncio.start_server(
                self._serve, host.strip("[]") or "127.0.0.1", int(port), reuse_address=True
            )
            sock = server.sockets[0].getsockname()
            bound = f"{sock[0]}:{sock[1]}"
        self._servers.append(server)
        log.info("listening on %s", bound)
        return bound

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        if len(self._connections) >= self.max_connections:
            log.warning("too many connections (%d): refusing one", len(self._connections))
            writer.close()
            return
        self._connections.add(task)
        peer = writer.get_extra_info("peername") or "unix"
        parser = RequestParser()
        try:
            while True:
                data = await asyncio.wait_for(reader.read(READ_CHUNK), self.idle_timeout)
                if not data:
                    break
                for request in parser.feed(data):
                    writer.write(reply(await self.decide(request)))
                await writer.drain()
        except ProtocolError as error:
            log.warning("closing connection from %s: %s", peer, error)
        except (TimeoutError, ConnectionError):
            pass
        except asyncio.CancelledError:
            raise
        finally:
            self._connections.discard(task)
            writer.close()
            with contextlib.suppress(ConnectionError, asyncio.CancelledError):
                await writer.wait_closed()

    async def close(self, drain_timeout: float = 10.0) -> None:
        """Stop accepting; give open connections time to finish, then end them."""
        for server in self._servers:
            server.close()
        if self._connections:
            _, pending = await asyncio.wait(set(self._connections), timeout=drain_timeout)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        for server in self._servers:
            await server.wait_closed()

    @property
    def connections(self) -> int:
        return len(self._connections)
