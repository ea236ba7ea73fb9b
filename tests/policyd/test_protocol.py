"""The policy protocol parser: requests from tables, split at every byte, hard limits."""

from __future__ import annotations

import pytest

from postwarden.policyd.protocol import (
    MAX_ATTRIBUTES,
    MAX_LINE,
    MAX_REQUEST,
    ProtocolError,
    RequestParser,
    reply,
)

RCPT = (
    b"request=smtpd_access_policy\nprotocol_state=RCPT\nprotocol_name=ESMTP\n"
    b"client_address=192.0.2.7\nsasl_username=alice@example.com\nsender=alice@example.com\n"
    b"recipient=bob@example.org\ninstance=123.456\nsize=0\n\n"
)
EXPECTED = {
    "request": "smtpd_access_policy",
    "protocol_state": "RCPT",
    "protocol_name": "ESMTP",
    "client_address": "192.0.2.7",
    "sasl_username": "alice@example.com",
    "sender": "alice@example.com",
    "recipient": "bob@example.org",
    "instance": "123.456",
    "size": "0",
}


def test_one_request() -> None:
    assert RequestParser().feed(RCPT) == [EXPECTED]


def test_two_requests_in_one_read_come_back_in_order() -> None:
    second = RCPT.replace(b"bob@example.org", b"carol@example.org")
    requests = RequestParser().feed(RCPT + second)
    assert [r["recipient"] for r in requests] == ["bob@example.org", "carol@example.org"]


@pytest.mark.parametrize("cut", range(1, len(RCPT)))
def test_a_request_split_at_every_byte(cut: int) -> None:
    parser = RequestParser()
    assert parser.feed(RCPT[:cut]) == []
    assert parser.pending
    assert parser.feed(RCPT[cut:]) == [EXPECTED]
    assert not parser.pending


class CountingBuffer(bytearray):
    """A parser's buffer that counts the bytes its searches may look at."""

    searched = 0

    def find(self, sub: bytes, start: int | None = None, end: int | None = None) -> int:  # type: ignore[override]
        found = super().find(sub, start, end)
        first = start or 0
        last = found + len(sub) if found >= 0 else len(self) if end is None else end
        self.searched += max(0, min(last, len(self)) - first)
        return found


@pytest.mark.parametrize("tail", [b"", b"a=b\r", b"a=b\r\n", b"a=b"])
def test_searching_stays_linear_in_what_a_client_sends(tail: bytes) -> None:
    # many small requests in one read, then a fragment: each byte is searched a
    # bounded number of times, never once per request before it (a client could
    # stop the daemon with a few hundred kilobytes otherwise)
    buffer = CountingBuffer()
    data = RCPT * 2000 + tail
    requests = RequestParser(buffer).feed(data)
    assert len(requests) == 2000
    assert buffer.searched <= 3 * len(data)


def test_searching_stays_linear_when_bytes_drip_in() -> None:
    buffer = CountingBuffer()
    parser = RequestParser(buffer)
    got = []
    for index in range(len(RCPT) * 20):
        got += parser.feed((RCPT * 20)[index : index + 1])
    assert len(got) == 20
    assert buffer.searched <= 8 * len(RCPT) * 20


def test_a_request_one_byte_at_a_time() -> None:
    parser = RequestParser()
    got = []
    for index in range(len(RCPT)):
        got += parser.feed(RCPT[index : index + 1])
    assert got == [EXPECTED]


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        (b"sender=\n\n", ""),
        (b"sender=a=b@example.com\n\n", "a=b@example.com"),
        (b"sender=x@example.com\r\n\r\n", "x@example.com"),
        (b"sender=\xc3\xa9@example.com\n\n", "\u00e9@example.com"),
        (b"sender=\xff@example.com\n\n", "\ufffd@example.com"),
    ],
)
def test_values(raw: bytes, value: str) -> None:
    assert RequestParser().feed(raw) == [{"sender": value}]


@pytest.mark.parametrize(
    "raw",
    [
        b"\n",
        b"no equals sign\n\n",
        b"=value\n\n",
        b"\xffname=value\n\n",
        b"x=" + b"a" * MAX_LINE + b"\n\n",
    ],
)
def test_protocol_errors(raw: bytes) -> None:
    with pytest.raises(ProtocolError):
        RequestParser().feed(raw)


def test_a_line_without_end_is_refused_once_too_long() -> None:
    parser = RequestParser()
    parser.feed(b"x=" + b"a" * (MAX_LINE - 10))
    with pytest.raises(ProtocolError):
        parser.feed(b"a" * 20)


def test_too_many_attributes() -> None:
    raw = b"".join(b"a%d=1\n" % i for i in range(MAX_ATTRIBUTES + 1)) + b"\n"
    with pytest.raises(ProtocolError, match="attributes"):
        RequestParser().feed(raw)


def test_a_request_too_large() -> None:
    # many attributes, each within the line limit, together over the request limit
    value = b"a" * 1000
    count = MAX_REQUEST // len(value) + 1
    assert count < MAX_ATTRIBUTES
    raw = b"".join(b"k%d=%s\n" % (i, value) for i in range(count))
    with pytest.raises(ProtocolError, match="larger"):
        RequestParser().feed(raw)


def test_reply_format_and_newlines_cannot_inject() -> None:
    assert reply("DUNNO") == b"action=DUNNO\n\n"
    assert reply("REJECT bad\n\naction=OK") == b"action=REJECT bad  action=OK\n\n"
