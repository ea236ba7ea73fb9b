#!/usr/bin/env python3
"""Real SMTP sessions against the deployed host, run on the host itself by the
Molecule verifiers. Prints one JSON object: what the server answered.

Clients connect from loopback addresses outside the host's mynetworks
(127.0.0.1 only), so the host treats them as the Internet.

    smtp_probe.py submit LOGIN PASSWORD SENDER RECIPIENT [--count N] [--gtube] [--source IP]
    smtp_probe.py harvest SOURCE COUNT
    smtp_probe.py imap LOGIN PASSWORD SOURCE
    smtp_probe.py smuggle FORM RECIPIENT SOURCE
    smtp_probe.py spam SENDER RECIPIENT [--login LOGIN PASSWORD] [--source IP]
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
                # the envelope as given: the header parser would mangle an address
                # literal (user@[192.0.2.1]) taken from the To: header
                client.sendmail(args.sender, [args.recipient], mail.as_bytes())
                answers.append([250, "queued"])
            except smtplib.SMTPRecipientsRefused as refused:
                code, text = next(iter(refused.recipients.values()))
                answers.append([code, as_text(text)])
                client.rset()
            except smtplib.SMTPResponseException as error:
                answers.append([error.smtp_code, as_text(error.smtp_error)])
                client.rset()
    return {"answers": answers}


def spam(args: argparse.Namespace) -> dict[str, object]:
    """A message rspamd scores at about 10.9 from a loopback client: two Subject
    headers, 8-bit text sent as 7bit, an all-caps subject, no Date, HTML only, a link
    to a bare IP. Between the example's outbound hold (10) and reject (15) scores.
    With a login through 587, else on port 25. ``--count`` sends it that many times in
    one session, each time the same size (only the Message-ID's digits differ)."""
    message_id = f"<spam-{time.time_ns()}@probe.test>"
    port = 587 if args.login else 25
    answers: list[list[object]] = []
    with smtplib.SMTP("127.0.0.1", port, source_address=(args.source, 0), timeout=60) as client:
        client.ehlo("probe.remote.test")
        if args.login:
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            client.starttls(context=context)
            client.login(*args.login)
        for number in range(args.count):
            if number:
                message_id = f"<spam-{time.time_ns()}@probe.test>"
            try:
                client.sendmail(args.sender, [args.recipient], _spam(args, message_id))
                answers.append([250, "queued"])
            except smtplib.SMTPRecipientsRefused as refused:
                code, text = next(iter(refused.recipients.values()))
                answers.append([code, as_text(text)])
                client.rset()
            except smtplib.SMTPResponseException as error:
                answers.append([error.smtp_code, as_text(error.smtp_error)])
                client.rset()
    return {"answers": answers, "message_id": message_id}


def _spam(args: argparse.Namespace, message_id: str) -> bytes:
    return (
        f"From: {args.sender}\r\nTo: {args.recipient}\r\nMessage-ID: {message_id}\r\n"
        "Subject: FREE MONEY NOW CLICK HERE\r\nSubject: FREE MONEY NOW\r\n"
        "MIME-Version: 1.0\r\nContent-Type: text/html\r\n"
        "Content-Transfer-Encoding: 7bit\r\n\r\n"
        '<html><body><a href="http://198.51.100.7/x">WIN \u20ac\u20ac</a></body></html>\r\n'
    ).encode()


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


SMUGGLING = {
    "LF.LF": b"\n.\n",
    "LF.CRLF": b"\n.\r\n",
    "CRLF.LF": b"\r\n.\n",
    "CR.CRLF": b"\r.\r\n",
}
"""End-of-data sequences some servers accept instead of <CR><LF>.<CR><LF> (SMTP
smuggling, SEC Consult 2023); the e2e tests send these and more."""


def smuggle(args: argparse.Namespace) -> dict[str, object]:
    """One DATA from an outside client that hides a second message, with a forged
    sender, behind a non-standard end of data. Prints the markers of both."""
    first, second = f"first-{time.time_ns()}", f"second-{time.time_ns()}"
    session = socket.create_connection(
        ("127.0.0.1", 25), timeout=30, source_address=(args.source, 0)
    )
    replies = session.makefile("rb")

    def reply() -> list[object]:
        lines = []
        while True:
            line = replies.readline().decode(errors="replace").rstrip("\r\n")
            lines.append(line)
            if len(line) < 4 or line[3] != "-":
                return [int(line[:3] or 0), "\n".join(lines)]

    def command(line: str) -> list[object]:
        session.sendall(line.encode() + b"\r\n")
        return reply()

    answers = [reply(), command("EHLO mx.remote.test"), command("MAIL FROM:<someone@remote.test>")]
    answers += [command(f"RCPT TO:<{args.recipient}>"), command("DATA")]
    headers = (
        f"From: someone@remote.test\r\nTo: {args.recipient}\r\nSubject: {first}\r\n"
        f"Message-ID: <{first}@remote.test>\r\n"
        f"Date: {time.strftime('%a, %d %b %Y %H:%M:%S +0000', time.gmtime())}\r\n"
    )
    session.sendall(
        f"{headers}\r\nfirst\r\n".encode()
        + SMUGGLING[args.form]
        + (
            f"MAIL FROM:<ceo@example.com>\r\nRCPT TO:<{args.recipient}>\r\nDATA\r\n"
            f"From: ceo@example.com\r\nSubject: {second}\r\n\r\npay the invoice\r\n"
        ).encode()
        + b"\r\n.\r\n"
    )
    answers.append(reply())
    command("QUIT")
    session.close()
    return {"answers": answers, "first": first, "second": second}


class ImapFrom(imaplib.IMAP4_SSL):
    """IMAP over TLS (993) from a chosen loopback address (the e2e tests use it too)."""

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
        with ImapFrom(args.source) as client:
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
    smuggled = commands.add_parser("smuggle")
    smuggled.add_argument("form", choices=sorted(SMUGGLING))
    smuggled.add_argument("recipient")
    smuggled.add_argument("source")
    scored = commands.add_parser("spam")
    scored.add_argument("sender")
    scored.add_argument("recipient")
    scored.add_argument("--login", nargs=2, metavar=("LOGIN", "PASSWORD"))
    scored.add_argument("--source", default=OUTSIDE)
    scored.add_argument("--count", type=int, default=1)
    args = parser.parse_args()
    run = {"submit": submit, "harvest": harvest, "imap": imap, "smuggle": smuggle, "spam": spam}
    result = run[args.command](args)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
