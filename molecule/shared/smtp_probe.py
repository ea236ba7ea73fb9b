#!/usr/bin/env python3
"""Real SMTP sessions against the deployed host, run on the host itself by the
Molecule verifiers. Prints one JSON object: what the server answered.

Clients connect from loopback addresses outside the host's mynetworks
(127.0.0.1 only), so the host treats them as the Internet.

    smtp_probe.py submit LOGIN PASSWORD SENDER RECIPIENT [--count N] [--gtube] [--source IP]
    smtp_probe.py harvest SOURCE COUNT
    smtp_probe.py imap LOGIN PASSWORD SOURCE
"""

from __future__ import annotations

import argparse
import imaplib
import json
import smtplib
import socket
import ssl
import time
from email.message import EmailMessage

OUTSIDE = "127.0.0.9"
# rspamd rejects this string always; split so that no scanner reads this file as spam
GTUBE = "XJS*C4JDBQADN1.NSBN3*2IDNEN*" + "GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"


def as_text(reply: bytes | str) -> str:
    return reply.decode() if isinstance(reply, bytes) else reply


def message(sender: str, recipient: str, subject: str, body: str) -> EmailMessage:
    mail = EmailMessage()
    mail["From"] = sender
    mail["To"] = recipient
    mail["Subject"] = subject
    mail["Message-ID"] = f"<{time.time_ns()}@probe.test>"
    mail["Date"] = time.strftime("%a, %d %b %Y %H:%M:%S +0000", time.gmtime())
    mail.set_content(body)
    return mail


def submit(args: argparse.Namespace) -> dict[str, object]:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    answers: list[list[object]] = []
    with smtplib.SMTP("127.0.0.1", 587, source_address=(args.source, 0), timeout=60) as client:
        client.starttls(context=context)
        client.login(args.login, args.password)
        for number in range(args.count):
            # every message 3% larger than the one before: the same-size rule stays quiet
            body = GTUBE if args.gtube else "x" * int(500 * 1.03**number)
            mail = message(args.sender, args.recipient, f"probe {number}", body)
            try:
                client.send_message(mail)
                answers.append([250, "queued"])
            except smtplib.SMTPRecipientsRefused as refused:
                code, text = next(iter(refused.recipients.values()))
                answers.append([code, as_text(text)])
                client.rset()
            except smtplib.SMTPResponseException as error:
                answers.append([error.smtp_code, as_text(error.smtp_error)])
                client.rset()
    return {"answers": answers}


def harvest(args: argparse.Namespace) -> dict[str, object]:
    codes = []
    client = smtplib.SMTP("127.0.0.1", 25, source_address=(args.source, 0), timeout=60)
    try:
        client.ehlo("probe.remote.test")
        client.mail("probe@remote.test")
        for number in range(args.count):
            code, text = client.rcpt(f"nobody{number}@example.com")
            codes.append([code, text.decode()])
    finally:
        # no QUIT: by now the firewall may drop this client, and the reply never comes
        client.close()
    return {"answers": codes}


class _ImapFrom(imaplib.IMAP4_SSL):
    """IMAP over TLS (993) from a chosen loopback address."""

    def __init__(self, source: str) -> None:
        self.source = source
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        super().__init__("127.0.0.1", 993, ssl_context=context, timeout=30)

    def _create_socket(self, timeout: float | None) -> socket.socket:
        plain = socket.create_connection(
            (self.host, self.port), timeout, source_address=(self.source, 0)
        )
        wrapped: socket.socket = self.ssl_context.wrap_socket(plain, server_hostname=self.host)
        return wrapped


def imap(args: argparse.Namespace) -> dict[str, object]:
    try:
        with _ImapFrom(args.source) as client:
            client.login(args.login, args.password)
            client.logout()
    except imaplib.IMAP4.error as error:
        return {"logged_in": False, "answer": str(error)}
    except OSError as error:  # refused by the firewall, for one
        return {"logged_in": False, "answer": type(error).__name__}
    return {"logged_in": True, "answer": "OK"}


def main() -> None:
    parser = argparse.ArgumentParser()
    commands = parser.add_subparsers(dest="command", required=True)
    send = commands.add_parser("submit")
    send.add_argument("login")
    send.add_argument("password")
    send.add_argument("sender")
    send.add_argument("recipient")
    send.add_argument("--count", type=int, default=1)
    send.add_argument("--gtube", action="store_true")
    send.add_argument("--source", default=OUTSIDE)
    probe = commands.add_parser("harvest")
    probe.add_argument("source")
    probe.add_argument("count", type=int)
    login = commands.add_parser("imap")
    login.add_argument("login")
    login.add_argument("password")
    login.add_argument("source")
    args = parser.parse_args()
    result = {"submit": submit, "harvest": harvest, "imap": imap}[args.command](args)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
