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
    _scanned: int = 0
    """Bytes at the buffer's start known to hold no request's end: each byte is
    searched about once however the requests arrive, so a client cannot make the
    parser's work grow with the square of what it sends."""

    def feed(self, data: bytes) -> list[dict[str, str]]:
        """Add received bytes; return the requests they complete, in order."""
        buffer = self._buffer
        if not buffer and data.endswith(b"\n\n"):
            # the usual case: exactly one whole request, LF-terminated, nothing buffered
            end = data.find(b"\n\n")
            if 0 < end == len(data) - 2 and end <= MAX_REQUEST and b"\r" not in data:
                return [_parse(data[:end])]
        buffer += data
        requests: list[dict[str, str]] = []
        while buffer:
            if buffer[0] == 0x0A or buffer[:2] == b"\r\n":
                raise ProtocolError("empty request")
            # a terminator may straddle what was scanned and what is new
            start = max(0, self._scanned - 2)
            end, skip = buffer.find(b"\n\n", start), 2
            # a CRLF request ends earlier than the next LF one, if at all: look only there
            crlf = buffer.find(b"\n\r\n", start, end + 2 if end >= 0 else len(buffer))
            if crlf >= 0:
                end, skip = crlf, 3
            if end < 0:
                self._scanned = len(buffer)
                self._check_partial()
                break
            if end > MAX_REQUEST:
                raise ProtocolError(f"request larger than {MAX_REQUEST} bytes")
            requests.append(_parse(bytes(buffer[:end])))
            del buffer[: end + skip]
            self._scanned = 0
        return requests

    def _check_partial(self) -> None:
        buffer = self._buffer
        if len(buffer) > MAX_REQUEST:
            raise ProtocolError(f"request larger than {MAX_REQUEST} bytes")
        if len(buffer) - (buffer.rfind(b"\n") + 1) > MAX_LINE:
            raise ProtocolError(f"line longer than {MAX_LINE} bytes")

    @property
    def pending(self) -> bool:
        """Part of a request has arrived but not its end."""
        return bool(self._buffer)


def _parse(chunk: bytes) -> dict[str, str]:
    # values are mostly ASCII; anything else is kept, never allowed to crash us
    text = chunk.decode("utf-8", "replace")
    lines = text.split("\n")
    if len(lines) > MAX_ATTRIBUTES:
        raise ProtocolError(f"more than {MAX_ATTRIBUTES} attributes")
    if len(text) > MAX_LINE and max(map(len, lines)) > MAX_LINE:
        raise ProtocolError(f"line longer than {MAX_LINE} bytes")
    if "\r" in text:
        lines = [line.removesuffix("\r") for line in lines]
    # every line split in one pass; a line without "=" makes dict() refuse the pair
    try:
        attributes = dict([line.split("=", 1) for line in lines])
    except ValueError:
        raise ProtocolError("a request line is not name=value") from None
    if "" in attributes:
        raise ProtocolError("a request line is not name=value")
    if not text.isascii() and not all(name.isascii() for name in attributes):
        raise ProtocolError("attribute name is not ASCII")
    return attributes


def reply(action: str) -> bytes:
    """The reply for one request. Newlines in the action would end it early."""
    if action == "DUNNO":  # nearly every reply
        return _DUNNO
    clean = action.replace("\r", " ").replace("\n", " ")
    return f"action={clean}\n\n".encode()


_DUNNO = b"action=DUNNO\n\n"
