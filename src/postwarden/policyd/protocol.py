"""Postfix's policy delegation protocol, without I/O.

A request is ``name=value`` lines ended by an empty line; the reply is
``action=...`` and an empty line; the connection stays open for the next
request (SMTPD_POLICY_README). Bytes may arrive split anywhere, so the parser
keeps a buffer and hands back every request that is complete.

Hard limits keep a broken or hostile client from growing memory without bound:
a line, a request and its attribute count are capped, and going over is a
``ProtocolError`` that ends the connection.
"""

from __future__ import annotations

from dataclasses import dataclass, field

MAX_LINE = 8192
MAX_ATTRIBUTES = 128
MAX_REQUEST = 65536


class ProtocolError(Exception):
    """The peer does not speak the protocol; the connection must be closed."""


@dataclass
class RequestParser:
    _buffer: bytearray = field(default_factory=bytearray)
    _attributes: dict[str, str] = field(default_factory=dict)
    _size: int = 0

    def feed(self, data: bytes) -> list[dict[str, str]]:
        """Add received bytes; return the requests they complete, in order."""
        self._buffer += data
        requests: list[dict[str, str]] = []
        while True:
            end = self._buffer.find(b"\n")
            if end < 0:
                if len(self._buffer) > MAX_LINE:
                    raise ProtocolError(f"line longer than {MAX_LINE} bytes")
                return requests
            line = bytes(self._buffer[:end])
            del self._buffer[: end + 1]
            if len(line) > MAX_LINE:
                raise ProtocolError(f"line longer than {MAX_LINE} bytes")
            if line.endswith(b"\r"):
                line = line[:-1]
            if not line:
                if not self._attributes:
                    raise ProtocolError("empty request")
                requests.append(self._attributes)
                self._attributes, self._size = {}, 0
                continue
            self._add(line)

    def _add(self, line: bytes) -> None:
        name, equals, value = line.partition(b"=")
        if not equals or not name:
            raise ProtocolError("a request line is not name=value")
        self._size += len(line) + 1
        if self._size > MAX_REQUEST:
            raise ProtocolError(f"request larger than {MAX_REQUEST} bytes")
        if len(self._attributes) >= MAX_ATTRIBUTES:
            raise ProtocolError(f"more than {MAX_ATTRIBUTES} attributes")
        try:
            key = name.decode("ascii")
        except UnicodeDecodeError:
            raise ProtocolError("attribute name is not ASCII") from None
        # values are mostly ASCII; anything else is kept, never allowed to crash us
        self._attributes[key] = value.decode("utf-8", "replace")

    @property
    def pending(self) -> bool:
        """Part of a request has arrived but not its end."""
        return bool(self._buffer or self._attributes)


def reply(action: str) -> bytes:
    """The reply for one request. Newlines in the action would end it early."""
    clean = action.replace("\r", " ").replace("\n", " ")
    return f"action={clean}\n\n".encode()
