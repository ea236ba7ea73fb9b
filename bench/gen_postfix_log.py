"""Generate a realistic Postfix 3.7 log for benchmarks.

    python -m bench.gen_postfix_log --lines 1000000 --days 7 --seed 1 -o postfix.log

The lines are those of Postfix's own maillog_file on an all-in-one host with IP
pools: mail from logged-in users leaving through pool transports to the big
providers and to many smaller domains, sent, deferred (and tried again later),
bounced or failing to connect, connections reused from the cache; mail arriving
on port 25 for local mailboxes over LMTP, aliases forwarded by local(8); and what
comes between: smtpd sessions, rejects, TLS, cleanup, qmgr, bounce notices,
anvil and scache statistics, warnings. The output is the same for the same
arguments.
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Iterator
from pathlib import Path

from postwarden.reports.connections import PROVIDERS

HOST = "mail"
START = (2026, 11, 23, 0, 0, 0)
"""Local time of the first line; the last is ``days`` later."""

TRANSPORTS = (
    ("pw_main_203_0_113_10", 30),
    ("pw_main_203_0_113_11", 30),
    ("pw_bulk_203_0_113_20", 20),
    ("pw_lists_main", 10),
    ("smtp", 5),
    ("relay", 5),
)
BIG = (
    ("gmail.com", 300),
    ("googlemail.com", 10),
    ("outlook.com", 80),
    ("hotmail.com", 80),
    ("live.com", 20),
    ("msn.com", 10),
    ("yahoo.com", 60),
    ("ymail.com", 5),
    ("aol.com", 15),
)
SMALL_DOMAINS = 2000
LOCAL_DOMAINS = ("example.com", "example.org", "example.net")
USERS = 400

DEFERRALS = {
    "gmail": (
        "host gmail-smtp-in.l.google.com[{ip}] said: 421-4.7.28 [{pool}      15] Our "
        "system has detected an unusual rate of 421-4.7.28 unsolicited mail originating "
        "from your IP address. 421 4.7.28 https://support.google.com/mail/?p="
        "UnsolicitedRateLimitError {id}.{n} - gsmtp (in reply to end of DATA command)",
        "host gmail-smtp-in.l.google.com[{ip}] said: 450-4.2.1 The user you are trying to "
        "contact is receiving mail too quickly. 450 4.2.1 {id}.{n} - gsmtp (in reply to "
        "RCPT TO command)",
    ),
    "microsoft": (
        "host {mx}[{ip}] said: 451 4.7.500 Server busy. Please try again later from "
        "[{pool}]. (S77714) [{id}.eurprd04.prod.outlook.com {stamp}] (in reply to "
        "MAIL FROM command)",
    ),
    "yahoo": (
        "host {mx}[{ip}] said: 421 4.7.0 [TSS04] Messages from {pool} temporarily "
        "deferred due to unexpected volume or user complaints - 4.16.55.1; see "
        "https://postmaster.yahooinc.com/error-codes (in reply to MAIL FROM command)",
    ),
    "other": (
        "host {mx}[{ip}] said: 450 4.2.0 <{rcpt}>: Recipient address rejected: "
        "Greylisted, see http://postgrey.schweikert.ch/help/{domain}.html (in reply to "
        "RCPT TO command)",
        "host {mx}[{ip}] said: 452 4.2.2 <{rcpt}>: Mailbox full (in reply to RCPT TO command)",
        "lost connection with {mx}[{ip}] while receiving the initial server greeting",
    ),
}
BOUNCES = {
    "gmail": (
        "host gmail-smtp-in.l.google.com[{ip}] said: 550-5.1.1 The email account that "
        "you tried to reach does not exist. 550 5.1.1 https://support.google.com/mail/?p="
        "NoSuchUser {id}.{n} - gsmtp (in reply to RCPT TO command)",
    ),
    "microsoft": (
        "host {mx}[{ip}] said: 550 5.5.0 Requested action not taken: mailbox "
        "unavailable (S2017062302). [{id}.eurprd04.prod.outlook.com {stamp}] (in reply "
        "to RCPT TO command)",
    ),
    "yahoo": (
        "host {mx}[{ip}] said: 554 delivery error: dd This user doesn't have a yahoo.com "
        "account ({rcpt}) [0] - mta{n}.mail.bf1.yahoo.com (in reply to end of DATA "
        "command)",
    ),
    "other": (
        "host {mx}[{ip}] said: 550 5.1.1 <{rcpt}>: Recipient address rejected: User "
        "unknown in virtual mailbox table (in reply to RCPT TO command)",
        "Host or domain name not found. Name service error for name={domain} type=MX: "
        "Host not found",
    ),
}


class Generator:
    def __init__(self, seed: int) -> None:
        self.random = random.Random(seed)
        self.pid = 1000
        self.queue_id = 0x1A2B3C4D0
        small = [f"d{n}.example" for n in range(SMALL_DOMAINS)]
        # a few small domains take most of the rest, as in real mail
        self.domains = [d for d, _ in BIG] + small
        self.weights = [w for _, w in BIG] + [
            400 / (n + 1) ** 1.1 / 5.0 for n in range(SMALL_DOMAINS)
        ]
        self.transports = [t for t, _ in TRANSPORTS]
        self.transport_weights = [w for _, w in TRANSPORTS]
        self.cached: dict[tuple[str, str], int] = {}
        self.pids = {t: [self.new_pid() for _ in range(4)] for t in self.transports}

    def new_pid(self) -> int:
        self.pid = self.pid + self.random.randint(1, 40) if self.pid < 99000 else 1000
        return self.pid

    def new_queue_id(self) -> str:
        self.queue_id += self.random.randint(1, 5000)
        return f"{self.queue_id:X}"

    def ip(self, prefix: str) -> str:
        return f"{prefix}.{self.random.randint(1, 254)}"

    def mx(self, domain: str) -> tuple[str, str]:
        kind = PROVIDERS.get(domain, "other")
        if kind == "gmail":
            return "gmail-smtp-in.l.google.com", self.ip("142.250.102")
        if kind == "microsoft":
            name = domain.replace(".", "-")
            return f"{name}.olc.protection.outlook.com", self.ip("52.101.68")
        if kind == "yahoo":
            return f"mta{self.random.randint(5, 7)}.am0.yahoodns.net", self.ip("67.195.204")
        return f"mx{self.random.randint(1, 2)}.{domain}", self.ip("198.51.100")

    def token(self) -> str:
        return "".join(self.random.choices("0123456789abcdef", k=13)) + "-4a"

    # -------------------------------------------------------------- messages

    def outbound(self) -> list[tuple[float, str]]:
        """A message from a logged-in user, delivered to 1-5 recipients (a list post
        to more), some tried again hours later."""
        r = self.random
        lines: list[tuple[float, str]] = []
        queue_id = self.new_queue_id()
        user = f"user{r.randrange(USERS)}@{r.choice(LOCAL_DOMAINS)}"
        client = self.ip("192.0.2")
        smtpd = f"postfix/submission/smtpd[{self.new_pid()}]"
        size = int(r.lognormvariate(9.5, 1.2))
        count = r.choice((1, 1, 1, 1, 2, 2, 3, 5)) if r.random() > 0.02 else r.randint(20, 60)
        recipients = [
            f"{self.local_part()}@{d}" for d in r.choices(self.domains, self.weights, k=count)
        ]
        transport = r.choices(self.transports, self.transport_weights)[0]
        lines += [
            (0.0, f"{smtpd}: connect from unknown[{client}]"),
            (
                0.05,
                f"{smtpd}: Anonymous TLS connection established from unknown[{client}]: "
                "TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)",
            ),
            (
                0.2,
                f"{smtpd}: {queue_id}: client=unknown[{client}], sasl_method=PLAIN, "
                f"sasl_username={user}",
            ),
            (
                0.3,
                f"postfix/cleanup[{self.new_pid()}]: {queue_id}: "
                f"message-id=<{self.token()}@{user.partition('@')[2]}>",
            ),
            (
                0.35,
                f"postfix/qmgr[812]: {queue_id}: from=<{user}>, size={size}, "
                f"nrcpt={count} (queue active)",
            ),
            (
                0.4,
                f"{smtpd}: disconnect from unknown[{client}] ehlo=2 starttls=1 auth=1 "
                f"mail=1 rcpt={count} data=1 quit=1 commands={6 + count}",
            ),
        ]
        later: list[str] = []
        bounced = False
        at = 0.6
        for recipient in recipients:
            status, text, relay = self.outcome(recipient, transport)
            lines.append((at, self.delivery(transport, queue_id, recipient, relay, status, text)))
            at += r.uniform(0.01, 0.3)
            bounced |= status == "bounced"
            if status == "deferred":
                later.append(recipient)
        if bounced:
            notice = self.new_queue_id()
            lines += [
                (
                    at,
                    f"postfix/bounce[{self.new_pid()}]: {queue_id}: sender non-delivery "
                    f"notification: {notice}",
                ),
                (
                    at + 0.01,
                    f"postfix/qmgr[812]: {notice}: from=<>, size=4211, nrcpt=1 (queue active)",
                ),
                (at + 0.05, self.lmtp(notice, user, None)),
                (at + 0.06, f"postfix/qmgr[812]: {notice}: removed"),
            ]
        retry = r.uniform(300, 4 * 3600)
        if later:
            lines.append(
                (
                    retry,
                    f"postfix/qmgr[812]: {queue_id}: from=<{user}>, size={size}, "
                    f"nrcpt={count} (queue active)",
                )
            )
            for recipient in later:
                status, text, relay = self.outcome(recipient, transport, retry=True)
                lines.append(
                    (
                        retry + 0.2,
                        self.delivery(transport, queue_id, recipient, relay, status, text),
                    )
                )
        if not later or r.random() < 0.8:
            lines.append((retry + 0.3 if later else at, f"postfix/qmgr[812]: {queue_id}: removed"))
        return lines

    def local_part(self) -> str:
        r = self.random
        return r.choice(("info", "sales", "j.smith", "anna", "support", "m.rossi", "kim")) + str(
            r.randrange(10000)
        )

    def outcome(self, recipient: str, transport: str, retry: bool = False) -> tuple[str, str, str]:
        r = self.random
        domain = recipient.partition("@")[2]
        kind = PROVIDERS.get(domain, "other")
        mx, ip = self.mx(domain)
        relay = f"{mx}[{ip}]:25"
        roll = r.random()
        fields = {
            "ip": ip,
            "mx": mx,
            "pool": "203.0.113.10",
            "id": self.token(),
            "n": str(r.randint(1, 9)),
            "rcpt": recipient,
            "domain": domain,
            "stamp": "2026-11-30T12:00:06.000Z",
        }
        if roll < (0.6 if retry else 0.85):
            if kind == "gmail":
                said = f"250 2.0.0 OK  {r.randint(1700000000, 1800000000)} {self.token()} - gsmtp"
            else:
                said = f"250 2.0.0 Ok: queued as {self.new_queue_id()}"
            return "sent", said, relay
        if roll < 0.95:
            if r.random() < 0.2:
                return "deferred", f"connect to {mx}[{ip}]:25: Connection timed out", "none"
            return "deferred", r.choice(DEFERRALS[kind]).format(**fields), relay
        text = r.choice(BOUNCES[kind]).format(**fields)
        return "bounced", text, "none" if text.startswith("Host or") else relay

    def delivery(
        self, transport: str, queue_id: str, recipient: str, relay: str, status: str, text: str
    ) -> str:
        r = self.random
        tag = "postfix/smtp" if transport == "smtp" else f"postfix/{transport}/smtp"
        pid = r.choice(self.pids[transport])
        reused = ""
        key = (transport, relay)
        if relay != "none" and r.random() < 0.3 and key in self.cached:
            self.cached[key] += 1
            reused = f"conn_use={self.cached[key]}, "
        else:
            self.cached[key] = 1
        delays = [round(r.uniform(0, 0.5), 2) for _ in range(4)]
        dsn = {"sent": "2.0.0", "deferred": "4.4.1", "bounced": "5.1.1"}[status]
        return (
            f"{tag}[{pid}]: {queue_id}: to=<{recipient}>, relay={relay}, {reused}"
            f"delay={sum(delays):.2g}, delays={'/'.join(f'{d:g}' for d in delays)}, "
            f"dsn={dsn}, status={status} ({text})"
        )

    def lmtp(self, queue_id: str, recipient: str, original: str | None) -> str:
        orig = f"orig_to=<{original}>, " if original else ""
        return (
            f"postfix/lmtp[{self.random.choice((2201, 2202, 2203))}]: {queue_id}: "
            f"to=<{recipient}>, {orig}relay=mail.example.com[private/dovecot-lmtp], "
            f"delay=0.06, delays=0.05/0/0/0.01, dsn=2.0.0, status=sent (250 2.0.0 "
            f"<{recipient}> {self.token()} Saved)"
        )

    def inbound(self) -> list[tuple[float, str]]:
        """A message from the Internet for a local mailbox, or refused at RCPT."""
        r = self.random
        client = self.ip("198.51.100")
        name = f"mail{r.randint(1, 999)}.d{r.randrange(SMALL_DOMAINS)}.example"
        smtpd = f"postfix/smtpd[{self.new_pid()}]"
        user = f"user{r.randrange(USERS)}@{r.choice(LOCAL_DOMAINS)}"
        sender = f"{self.local_part()}@d{r.randrange(SMALL_DOMAINS)}.example"
        lines: list[tuple[float, str]] = [(0.0, f"{smtpd}: connect from {name}[{client}]")]
        if r.random() < 0.15:
            lines += [
                (
                    0.2,
                    f"{smtpd}: NOQUEUE: reject: RCPT from {name}[{client}]: 550 5.1.1 "
                    f"<{user}>: Recipient address rejected: User unknown in virtual mailbox "
                    f"table; from=<{sender}> to=<{user}> proto=ESMTP helo=<{name}>",
                ),
                (
                    0.3,
                    f"{smtpd}: disconnect from {name}[{client}] ehlo=1 mail=1 rcpt=0/1 "
                    "quit=1 commands=3/4",
                ),
            ]
            return lines
        queue_id = self.new_queue_id()
        lines += [
            (0.1, f"{smtpd}: {queue_id}: client={name}[{client}]"),
            (
                0.2,
                f"postfix/cleanup[{self.new_pid()}]: {queue_id}: "
                f"message-id=<{self.token()}@{name}>",
            ),
            (
                0.3,
                f"postfix/qmgr[812]: {queue_id}: from=<{sender}>, size="
                f"{int(r.lognormvariate(9.0, 1.0))}, nrcpt=1 (queue active)",
            ),
            (
                0.35,
                f"{smtpd}: disconnect from {name}[{client}] ehlo=1 mail=1 rcpt=1 data=1 "
                "quit=1 commands=5",
            ),
        ]
        if r.random() < 0.1:
            alias = f"pwlist-team{r.randrange(20)}={user.partition('@')[2]}@localhost"
            forward = self.new_queue_id()
            lines += [
                (
                    0.4,
                    f"postfix/local[{self.new_pid()}]: {queue_id}: to=<{alias}>, orig_to="
                    f"<{user}>, relay=local, delay=0.06, delays=0.05/0.01/0/0, dsn=2.0.0, "
                    f"status=sent (forwarded as {forward})",
                ),
                (0.45, self.lmtp(forward, user, None)),
            ]
        else:
            lines.append((0.4, self.lmtp(queue_id, user, None)))
        lines.append((0.5, f"postfix/qmgr[812]: {queue_id}: removed"))
        return lines

    def noise(self) -> list[tuple[float, str]]:
        r = self.random
        choice = r.random()
        if choice < 0.4:
            return [
                (
                    0.0,
                    f"postfix/smtpd[{self.new_pid()}]: warning: hostname "
                    f"host-{r.randrange(99999)}.dynamic.example does not resolve to address "
                    f"{self.ip('203.0.113')}: Name or service not known",
                )
            ]
        if choice < 0.7:
            return [
                (
                    0.0,
                    f"postfix/anvil[{self.new_pid()}]: statistics: max connection rate "
                    f"{r.randint(1, 30)}/60s for (smtp:{self.ip('198.51.100')}) at "
                    "Nov 23 10:00:00",
                )
            ]
        if choice < 0.9:
            return [
                (
                    0.0,
                    f"postfix/scache[{self.new_pid()}]: statistics: domain lookup hits="
                    f"{r.randint(0, 50)} miss={r.randint(0, 50)} success="
                    f"{r.randint(0, 100)}%",
                )
            ]
        return [
            (
                0.0,
                f"postfix/pw_main_203_0_113_10/smtp[{self.new_pid()}]: Trusted TLS connection "
                f"established to gmail-smtp-in.l.google.com[{self.ip('142.250.102')}]:25: "
                "TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)",
            )
        ]

    def events(self) -> Iterator[list[tuple[float, str]]]:
        r = self.random
        while True:
            roll = r.random()
            if roll < 0.5:
                yield self.outbound()
            elif roll < 0.85:
                yield self.inbound()
            else:
                yield self.noise()


def generate(lines: int, days: float, seed: int) -> list[tuple[float, str]]:
    """(seconds after the start, text after the host name), in time order: the
    messages start over ``days``; the retries of the last ones come a few hours
    later."""
    generator = Generator(seed)
    events: list[list[tuple[float, str]]] = []
    count = 0
    for event in generator.events():
        events.append(event)
        count += len(event)
        if count >= lines:
            break
    step = days * 86400 / len(events)
    timed = [
        (number * step + offset, text)
        for number, event in enumerate(events)
        for offset, text in event
    ]
    timed.sort(key=lambda item: item[0])
    return timed[:lines]


def write(path: Path, lines: int = 1_000_000, days: float = 7, seed: int = 1) -> float:
    """Write the log; return :func:`reference`."""
    start = time.mktime((*START, 0, 0, -1))
    stamps: dict[int, str] = {}
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as handle:
        for offset, text in generate(lines, days, seed):
            second = int(start + offset)
            stamp = stamps.get(second)
            if stamp is None:
                stamp = stamps[second] = time.strftime("%b %d %H:%M:%S", time.localtime(second))
            handle.write(f"{stamp} {HOST} {text}\n")
    return reference(days)


def reference(days: float = 7) -> float:
    """A time after the last line (the start, plus ``days``, plus a day for the
    retries): the reference for reading syslog stamps without a year."""
    return time.mktime((*START, 0, 0, -1)) + (days + 1) * 86400


def main() -> None:
    parser = argparse.ArgumentParser(description="write a realistic Postfix log")
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--days", type=float, default=7)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("-o", "--output", type=Path, required=True)
    args = parser.parse_args()
    write(args.output, args.lines, args.days, args.seed)


if __name__ == "__main__":
    main()
