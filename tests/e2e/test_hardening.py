"""The rendered Postfix and rspamd hold against an outside client, proven on the real
services: SMTP smuggling in every published form, HELO names that are not the
client's, ETRN, data sent before the server asked for it, old TLS and anonymous
ciphers, the null sender from a login, and DKIM signatures for mail that is not ours.

Outside clients connect from loopback addresses beyond the host's mynetworks
(127.0.0.1/32), as the rest of the e2e tests do."""

from __future__ import annotations

import smtplib
import socket
import subprocess
import time
import uuid

import pytest

from tests.e2e.mailhost import OUTSIDE, MailHost, message

LOCAL_USER = "bob@example.org"


def marker() -> str:
    return f"hard-{uuid.uuid4().hex[:12]}"


class RawSmtp:
    """An SMTP client that writes exactly the bytes it is given."""

    def __init__(self, port: int = 25, source: str = OUTSIDE) -> None:
        self.sock = socket.create_connection(
            ("127.0.0.1", port), timeout=20, source_address=(source, 0)
        )
        self.buffer = b""
        self.banner = self.reply()

    def reply(self) -> tuple[int, str]:
        """One whole reply (all its continuation lines)."""
        lines: list[str] = []
        while True:
            while b"\r\n" not in self.buffer:
                chunk = self.sock.recv(4096)
                if not chunk:
                    return (0, "\n".join(lines) or "connection closed")
                self.buffer += chunk
            line, self.buffer = self.buffer.split(b"\r\n", 1)
            text = line.decode("utf-8", "replace")
            lines.append(text)
            if len(text) < 4 or text[3] != "-":
                return (int(text[:3]), "\n".join(lines))

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def command(self, line: str) -> tuple[int, str]:
        self.send(line.encode() + b"\r\n")
        return self.reply()

    def close(self) -> None:
        self.sock.close()


SMUGGLING = {
    "LF.LF": b"\n.\n",
    "LF.CRLF": b"\n.\r\n",
    "CRLF.LF": b"\r\n.\n",
    "CR.CRLF": b"\r.\r\n",
    "CRLF.CR": b"\r\n.\r",
    "CR.CR": b"\r.\r",
    "LF.CR": b"\n.\r",
}
"""End-of-data sequences that some servers accept instead of <CR><LF>.<CR><LF>
(SEC Consult's SMTP smuggling research, 2023)."""


@pytest.mark.parametrize("form", SMUGGLING, ids=list(SMUGGLING))
def test_smuggling_never_makes_a_second_message(mailhost: MailHost, form: str) -> None:
    first, second = marker(), marker()
    client = RawSmtp()
    try:
        assert client.command("EHLO mx.remote.test")[0] == 250
        assert client.command("MAIL FROM:<someone@remote.test>")[0] == 250
        assert client.command(f"RCPT TO:<{LOCAL_USER}>")[0] == 250
        assert client.command("DATA")[0] == 354
        client.send(
            f"From: someone@remote.test\r\nTo: {LOCAL_USER}\r\nSubject: {first}\r\n\r\n"
            f"first\r\n".encode()
            + SMUGGLING[form]
            + (
                "MAIL FROM:<ceo@example.com>\r\n"
                f"RCPT TO:<{LOCAL_USER}>\r\n"
                "DATA\r\n"
                f"From: ceo@example.com\r\nTo: {LOCAL_USER}\r\nSubject: {second}\r\n\r\n"
                "pay the invoice\r\n"
            ).encode()
            + b"\r\n.\r\n"
        )
        code, text = client.reply()
        client.command("QUIT")
    finally:
        client.close()
    if code == 250:
        delivered = mailhost.wait_for_mailbox(LOCAL_USER, first)
        # the smuggled lines stayed inside the first message
        assert second.encode() in delivered
    else:
        assert code >= 500, text
    time.sleep(1)
    alone = [m for m in mailhost.mailbox(LOCAL_USER) if second.encode() in m]
    assert all(first.encode() in m for m in alone), "a second, smuggled message arrived"


@pytest.mark.parametrize(
    "helo",
    ["localhost", "mail.example.com", "localhost.localdomain", "nodots", "bad..name", "[1.2.3]"],
)
def test_a_helo_name_that_is_not_the_clients_is_refused(mailhost: MailHost, helo: str) -> None:
    client = RawSmtp()
    try:
        client.command(f"EHLO {helo}")
        assert client.command("MAIL FROM:<someone@remote.test>")[0] == 250
        code, text = client.command(f"RCPT TO:<{LOCAL_USER}>")
    finally:
        client.close()
    assert code in (501, 504, 550, 554), text
    assert "Helo command rejected" in text or "not your name" in text


def test_a_proper_helo_name_is_taken(mailhost: MailHost) -> None:
    client = RawSmtp()
    try:
        client.command("EHLO mx.remote.test")
        assert client.command("MAIL FROM:<someone@remote.test>")[0] == 250
        code, text = client.command(f"RCPT TO:<{LOCAL_USER}>")
    finally:
        client.close()
    assert code == 250, text


def test_etrn_is_neither_offered_nor_taken(mailhost: MailHost) -> None:
    client = RawSmtp()
    try:
        code, text = client.command("EHLO mx.remote.test")
        assert code == 250
        assert "ETRN" not in text.upper()
        code, text = client.command("ETRN example.com")
    finally:
        client.close()
    assert code >= 500, text


def test_data_sent_before_the_server_asked_for_it_is_refused(mailhost: MailHost) -> None:
    tag = marker()
    client = RawSmtp()
    try:
        client.command("EHLO mx.remote.test")
        client.send(
            (
                "MAIL FROM:<someone@remote.test>\r\n"
                f"RCPT TO:<{LOCAL_USER}>\r\n"
                "DATA\r\n"
                f"Subject: {tag}\r\n\r\nnot waiting for 354\r\n.\r\n"
            ).encode()
        )
        replies = [client.reply() for _ in range(3)]
    finally:
        client.close()
    assert any(code >= 500 for code, _ in replies), replies
    time.sleep(1)
    assert not [m for m in mailhost.mailbox(LOCAL_USER) if tag.encode() in m]


def openssl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["openssl", "s_client", "-brief", *args],
        input="QUIT\n",
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_port_25_refuses_tls_below_1_2(mailhost: MailHost) -> None:
    old = openssl(
        "-connect", "127.0.0.1:25", "-starttls", "smtp", "-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0"
    )
    assert old.returncode != 0
    assert "Protocol version" not in old.stdout
    current = openssl("-connect", "127.0.0.1:25", "-starttls", "smtp", "-tls1_2")
    assert current.returncode == 0, current.stderr
    assert "Protocol version: TLSv1.2" in current.stderr


@pytest.mark.parametrize("port", [587, 465])
def test_the_submission_ports_offer_no_anonymous_cipher(mailhost: MailHost, port: int) -> None:
    starttls = ["-starttls", "smtp"] if port == 587 else []
    anonymous = openssl(
        "-connect", f"127.0.0.1:{port}", *starttls, "-tls1_2", "-cipher", "aNULL:@SECLEVEL=0"
    )
    assert anonymous.returncode != 0, anonymous.stderr
    assert "Ciphersuite: ADH" not in anonymous.stderr
    named = openssl("-connect", f"127.0.0.1:{port}", *starttls, "-tls1_2")
    assert named.returncode == 0, named.stderr


def test_a_login_cannot_send_with_the_null_sender(mailhost: MailHost) -> None:
    """Else anyone logged in could send as anyone in the header From, signed by us."""
    with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
        mailhost.submit(
            "alice@example.com",
            message("ceo@example.com", "friend@remote.test", marker()),
            sender="",
        )
    ((code, text),) = refused.value.recipients.values()
    assert code == 554
    assert b"never the null sender" in text


def test_mail_from_outside_claiming_our_domain_is_not_signed(mailhost: MailHost) -> None:
    """An outside client (from loopback here, which rspamd counts as local, as it does
    every private range) sends a bounce, whose header From is in a signing domain: it
    is delivered, but never signed as ours."""
    tag = marker()
    mailhost.smtp25(message("ceo@example.com", LOCAL_USER, tag), sender="")
    delivered = mailhost.wait_for_mailbox(LOCAL_USER, tag)
    assert b"DKIM-Signature:" not in delivered.split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0]


def test_mail_relayed_from_mynetworks_is_signed(mailhost: MailHost) -> None:
    tag = marker()
    mailhost.smtp25(
        message("alice@example.com", "friend@remote.test", tag),
        sender="alice@example.com",
        source="127.0.0.1",
    )
    sunk = mailhost.wait_for_sink(tag)
    assert b"DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d=example.com; s=e2e;" in sunk
