"""Reading Postfix's delivery lines (reports.postfix_log) and the smtp_out_connections
report made of them (reports.connections), from lines written as Postfix 3.7 and
rsyslog write them."""

from __future__ import annotations

import datetime
import gzip
import time
from pathlib import Path

import pytest

from bench import gen_postfix_log
from postwarden.reports.connections import reason, smtp_out_connections
from postwarden.reports.postfix_log import (
    Delivery,
    DeliveryLog,
    PostfixLogUnreadable,
    iter_deliveries,
    parse_deliveries,
    read_deliveries,
)

REFERENCE = time.mktime((2026, 12, 1, 12, 0, 0, 0, 0, -1))
"""1 December 2026, noon local time: the lines below are from the days before."""


def local(year: int, month: int, day: int, hour: int, minute: int, second: int) -> float:
    return time.mktime((year, month, day, hour, minute, second, 0, 0, -1))


def read(*lines: str, **period: float) -> list[Delivery]:
    return parse_deliveries(list(lines), reference=REFERENCE, **period).deliveries


SENT = (
    "Nov 30 12:00:01 mail postfix/pw_main_203_0_113_10/smtp[2101]: 4F1A2B3C4D: "
    "to=<Someone@GMail.com>, relay=gmail-smtp-in.l.google.com[142.250.102.27]:25, "
    "delay=0.9, delays=0.1/0.01/0.3/0.49, dsn=2.0.0, "
    "status=sent (250 2.0.0 OK  1701345601 a1b2c3d4e5f6g7h8.123 - gsmtp)"
)


def test_a_delivery_line_read_field_by_field() -> None:
    (delivery,) = read(SENT)
    assert delivery == Delivery(
        time=local(2026, 11, 30, 12, 0, 1),
        host="mail",
        transport="pw_main_203_0_113_10",
        process="smtp",
        queue_id="4F1A2B3C4D",
        recipient="Someone@GMail.com",
        domain="gmail.com",
        relay="gmail-smtp-in.l.google.com[142.250.102.27]:25",
        status="sent",
        dsn="2.0.0",
        text="250 2.0.0 OK  1701345601 a1b2c3d4e5f6g7h8.123 - gsmtp",
        connection=True,
    )
    assert delivery.outbound


@pytest.mark.parametrize(
    ("tag", "transport", "process", "outbound"),
    [
        ("postfix/smtp", "smtp", "smtp", True),
        ("postfix/relay/smtp", "relay", "smtp", True),
        ("postfix/pw_lists_main/smtp", "pw_lists_main", "smtp", True),
        ("postfix-out/pw_bulk_203_0_113_20/smtp", "pw_bulk_203_0_113_20", "smtp", True),
        ("postfix/lmtp", "lmtp", "lmtp", False),
        ("postfix/local", "local", "local", False),
        ("postfix/virtual", "virtual", "virtual", False),
        ("postfix/error", "error", "error", False),
    ],
)
def test_the_agent_tells_outbound_from_local(
    tag: str, transport: str, process: str, outbound: bool
) -> None:
    (delivery,) = read(
        f"Nov 30 12:00:01 mail {tag}[77]: 4F1A2B3C4D: to=<a@example.net>, relay=x, "
        "delay=1, delays=0/0/0/1, dsn=2.0.0, status=sent (ok)"
    )
    assert (delivery.transport, delivery.process, delivery.outbound) == (
        transport,
        process,
        outbound,
    )
    assert delivery.connection is outbound


def test_local_delivery_lines_as_postfix_writes_them() -> None:
    lmtp, forward, virtual = read(
        "Dec 01 07:58:17 mail postfix/lmtp[6413]: D4E701682B7: to=<alice@example.com>, "
        "orig_to=<info@example.com>, relay=mail.example.com[private/dovecot-lmtp], delay=0.06, "
        "delays=0.05/0/0/0.01, dsn=2.0.0, status=sent (250 2.0.0 <alice@example.com> "
        "6N+1NhlnFmsOGQAAg+zDdQ Saved)",
        "Dec 01 07:58:18 mail postfix/local[6417]: 504DC1682B9: "
        "to=<pwlist-all-staff=example.com@localhost>, orig_to=<all-staff@example.com>, "
        "relay=local, delay=0.06, delays=0.05/0.01/0/0, dsn=2.0.0, "
        "status=sent (forwarded as 5E11B1682BB)",
        "Dec 01 07:58:19 mail postfix/virtual[6418]: 5E11B1682BB: to=<bob@example.org>, "
        "relay=virtual, delay=0.01, delays=0/0/0/0.01, dsn=2.0.0, "
        "status=sent (delivered to maildir)",
    )
    assert [d.outbound for d in (lmtp, forward, virtual)] == [False, False, False]
    assert [d.connection for d in (lmtp, forward, virtual)] == [False, False, False]
    assert lmtp.recipient == "alice@example.com"
    assert forward.status == "forwarded"
    assert forward.domain == "localhost"


def test_smtpd_and_cleanup_rejects_are_no_deliveries() -> None:
    log = parse_deliveries(
        [
            "Nov 30 12:00:01 mail postfix/smtpd[1]: NOQUEUE: reject: RCPT from "
            "unknown[192.0.2.1]: 554 5.7.1 <x@example.net>: Relay access denied; "
            "from=<a@example.org> to=<x@example.net> proto=ESMTP helo=<h>",
            "Nov 30 12:00:02 mail postfix/cleanup[2]: 4F1A2B3C4D: milter-reject: "
            "END-OF-MESSAGE from unknown[192.0.2.1]: 5.7.1 Spam message rejected; "
            "from=<a@example.org> to=<b@example.com> proto=ESMTP helo=<h>",
            "Nov 30 12:00:03 mail postfix/qmgr[3]: 4F1A2B3C4D: from=<a@example.org>, "
            "size=1024, nrcpt=1 (queue active)",
        ],
        reference=REFERENCE,
    )
    assert (log.deliveries, log.lines, log.skipped) == ([], 3, {})


# ------------------------------------------------------------------ time stamps


@pytest.mark.parametrize(
    ("stamp", "expected"),
    [
        (
            "2026-11-30T12:00:01.123456+00:00",
            datetime.datetime(2026, 11, 30, 12, 0, 1, 123456, datetime.UTC).timestamp(),
        ),
        (
            "2026-11-30T13:00:01+01:00",
            datetime.datetime(2026, 11, 30, 12, 0, 1, tzinfo=datetime.UTC).timestamp(),
        ),
        (
            "2026-11-30T12:00:01.5Z",
            datetime.datetime(2026, 11, 30, 12, 0, 1, 500000, datetime.UTC).timestamp(),
        ),
        ("2026-11-30T12:00:01", local(2026, 11, 30, 12, 0, 1)),
        ("Nov 30 12:00:01", local(2026, 11, 30, 12, 0, 1)),
        ("Dec  1 09:05:07", local(2026, 12, 1, 9, 5, 7)),
        ("Dec 01 09:05:07", local(2026, 12, 1, 9, 5, 7)),
    ],
)
def test_iso_and_syslog_stamps(stamp: str, expected: float) -> None:
    (delivery,) = read(SENT.replace("Nov 30 12:00:01", stamp))
    assert delivery.time == pytest.approx(expected, abs=1e-6)


def stamped(stamp: str, reference: float) -> list[float]:
    log = parse_deliveries([SENT.replace("Nov 30 12:00:01", stamp)], reference=reference)
    return [d.time for d in log.deliveries]


def test_a_syslog_stamp_takes_its_year_from_the_reference() -> None:
    new_year = local(2027, 1, 1, 0, 30, 0)
    assert stamped("Dec 31 23:59:59", new_year) == [local(2026, 12, 31, 23, 59, 59)]
    assert stamped("Jan 01 00:10:00", new_year) == [local(2027, 1, 1, 0, 10, 0)]
    # up to a day ahead of the reference is this year (a clock a little off) ...
    assert stamped("Jan 02 00:20:00", new_year) == [local(2027, 1, 2, 0, 20, 0)]
    # ... more than a day ahead is last year
    assert stamped("Jan 02 00:40:00", new_year) == [local(2026, 1, 2, 0, 40, 0)]
    assert stamped("Mar 05 10:00:00", new_year) == [local(2026, 3, 5, 10, 0, 0)]


def test_29_february_is_in_a_leap_year_or_skipped() -> None:
    assert stamped("Feb 29 10:00:00", local(2029, 3, 5, 0, 0, 0)) == [local(2028, 2, 29, 10, 0, 0)]
    log = parse_deliveries([SENT.replace("Nov 30", "Feb 29")], reference=local(2030, 3, 5, 0, 0, 0))
    assert (log.deliveries, log.skipped) == ([], {"impossible date": 1})


def test_the_reference_defaults_to_now() -> None:
    yesterday = time.time() - 86400
    stamp = time.strftime("%b %d %H:%M:%S", time.localtime(yesterday))
    (delivery,) = parse_deliveries([SENT.replace("Nov 30 12:00:01", stamp)]).deliveries
    assert delivery.time == pytest.approx(yesterday, abs=1)


def test_the_period_is_start_inclusive_end_exclusive() -> None:
    lines = [SENT.replace("12:00:01", f"12:00:0{second}") for second in range(5)]
    start, end = local(2026, 11, 30, 12, 0, 1), local(2026, 11, 30, 12, 0, 3)
    log = parse_deliveries(lines, start, end, REFERENCE)
    assert [d.time - start for d in log.deliveries] == [0, 1]
    assert log.outside == 3
    assert len(parse_deliveries(lines, start=start, reference=REFERENCE).deliveries) == 4
    assert len(parse_deliveries(lines, end=end, reference=REFERENCE).deliveries) == 3


# ------------------------------------------------------------------ connections


def line(
    second: int,
    pid: int,
    queue_id: str,
    recipient: str,
    relay: str = "mx.example.net[192.0.2.25]:25",
    conn_use: int | None = None,
    status: str = "sent (250 2.0.0 Ok: queued as 1234ABCD)",
    tag: str = "postfix/pw_main_203_0_113_10/smtp",
) -> str:
    reused = f"conn_use={conn_use}, " if conn_use else ""
    dsn = {"s": "2.0.0", "d": "4.0.0", "b": "5.0.0"}[status[0]]
    return (
        f"Nov 30 12:00:{second:02d} mail {tag}[{pid}]: {queue_id}: to=<{recipient}>, "
        f"relay={relay}, {reused}delay=1.2, delays=0.1/0/0.5/0.6, dsn={dsn}, status={status}"
    )


def test_conn_use_marks_a_reused_connection() -> None:
    deliveries = read(
        line(1, 10, "AAAA01", "a@example.net"),
        line(2, 10, "AAAA02", "b@example.net", conn_use=2),
        line(3, 10, "AAAA03", "c@example.net", conn_use=3),
        line(4, 10, "AAAA04", "d@example.net"),
    )
    assert [d.connection for d in deliveries] == [True, False, False, True]


def test_the_recipients_of_one_session_share_its_connection() -> None:
    deliveries = read(
        line(1, 10, "AAAA01", "a@example.net"),
        line(1, 10, "AAAA01", "b@example.net"),
        line(1, 11, "BBBB01", "c@example.net"),  # another process in between
        line(1, 10, "AAAA01", "e@example.net"),
        line(2, 11, "AAAA01", "d@example.net"),  # the same message, another process
        line(3, 10, "AAAA01", "f@example.org", relay="mx.example.org[192.0.2.26]:25"),
        line(4, 10, "AAAA01", "g@example.org", relay="mx.example.org[192.0.2.26]:25"),
        line(5, 10, "AAAA01", "h@example.org", relay="mx.example.org[192.0.2.26]:25", conn_use=2),
    )
    assert [d.connection for d in deliveries] == [
        True,
        False,
        True,
        False,
        True,
        True,
        False,
        False,
    ]


def test_a_refused_connect_is_an_attempt_and_a_failed_lookup_is_none() -> None:
    refused, again, lookup, suspended = read(
        line(
            1,
            10,
            "AAAA01",
            "a@example.net",
            relay="none",
            status="deferred (connect to mx.example.net[192.0.2.25]:25: Connection refused)",
        ),
        line(
            2,
            10,
            "AAAA01",
            "b@example.net",
            relay="none",
            status="deferred (connect to mx.example.net[192.0.2.25]:25: Connection refused)",
        ),
        line(
            3,
            10,
            "AAAA02",
            "c@nowhere.example",
            relay="none",
            status="bounced (Host or domain name not found. Name service error for "
            "name=nowhere.example type=A: Host not found)",
        ),
        line(
            4,
            12,
            "AAAA03",
            "d@example.net",
            relay="none",
            status="deferred (delivery temporarily suspended: connect to "
            "mx.example.net[192.0.2.25]:25: Connection refused)",
            tag="postfix/error",
        ),
    )
    assert [d.connection for d in (refused, again, lookup, suspended)] == [
        True,
        False,
        False,
        False,
    ]
    assert (refused.status, refused.relay, lookup.status) == ("deferred", "none", "bounced")
    assert not suspended.outbound


# ------------------------------------------------------------ what is skipped


def test_lines_that_cannot_be_read_are_skipped_with_a_reason() -> None:
    log = parse_deliveries(
        [
            "garbage",
            "Nov 30 12:00:01 mail postfix/smtp[1]: 4F1A2B3C4D: to=<a@example.net>, relay=",
            "to=<a@example.net>: 4F1A: to=<a@example.net>, relay=x, delay=1, dsn=2.0.0, "
            "status=sent (ok)",
            SENT.replace("Nov 30", "Foo 30"),
            SENT.replace("12:00:01", "25:00:01"),
            SENT.replace("2026", "x").replace("Nov 30 12:00:01", "2026-13-45T12:00:01Z"),
            SENT.replace("delay=0.9, ", ""),
            SENT.replace("status=sent (250", "status=deliverable (250"),
            SENT.replace("status=sent (250", "status=weird (250"),
            SENT,
        ],
        reference=REFERENCE,
    )
    assert len(log.deliveries) == 1
    assert log.lines == 10
    assert log.skipped == {
        "delivery line without a status": 1,
        "no time stamp": 1,
        "impossible date": 3,
        "delivery line in an unknown form": 1,
        "address verification, not a delivery": 1,
        "unknown status 'weird'": 1,
    }


def test_blocks_of_many_lines_read_as_lines_do() -> None:
    lines = [SENT, "garbage", line(2, 10, "AAAA01", "a@example.net"), "Nov 30 x"]
    one_by_one = parse_deliveries(lines, reference=REFERENCE)
    as_block = parse_deliveries(["\n".join(lines) + "\n"], reference=REFERENCE)
    without_last_newline = parse_deliveries(["\n".join(lines)], reference=REFERENCE)
    for log in (as_block, without_last_newline):
        assert log.deliveries == one_by_one.deliveries
        assert log.lines == one_by_one.lines == 4


def test_a_file_plain_or_compressed(tmp_path: Path) -> None:
    text = "\n".join([SENT, "noise", line(2, 10, "AAAA01", "a@example.net")]) + "\n"
    plain, packed = tmp_path / "postfix.log", tmp_path / "postfix.log.1.gz"
    plain.write_text(text, encoding="utf-8")
    packed.write_bytes(gzip.compress(text.encode()))
    expected = parse_deliveries([text], reference=REFERENCE).deliveries
    assert len(expected) == 2
    assert read_deliveries(plain, reference=REFERENCE).deliveries == expected
    assert read_deliveries(str(packed), reference=REFERENCE).deliveries == expected


def test_a_file_streamed(tmp_path: Path) -> None:
    text = "\n".join([SENT, "noise", line(2, 10, "AAAA01", "a@example.net"), "x: to=<"]) + "\n"
    plain = tmp_path / "postfix.log"
    plain.write_text(text, encoding="utf-8")
    log = DeliveryLog()
    streamed = iter_deliveries(plain, reference=REFERENCE, log=log)
    assert log.lines == 0  # nothing read before the first record is asked for
    assert list(streamed) == read_deliveries(plain, reference=REFERENCE).deliveries
    assert (log.deliveries, log.lines, log.skipped) == ([], 4, {"no time stamp": 1})
    with pytest.raises(PostfixLogUnreadable, match="No such file"):
        iter_deliveries(tmp_path / "missing.log")


def test_an_unreadable_log_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(PostfixLogUnreadable, match=r"postfix\.log: No such file"):
        read_deliveries(tmp_path / "postfix.log")
    with pytest.raises(PostfixLogUnreadable, match="Is a directory"):
        read_deliveries(tmp_path)
    broken = tmp_path / "old.log.gz"
    broken.write_bytes(b"not gzip at all")
    with pytest.raises(PostfixLogUnreadable, match=r"old\.log\.gz"):
        read_deliveries(broken)
    cut = tmp_path / "cut.log.gz"
    cut.write_bytes(gzip.compress(((SENT + "\n") * 100).encode())[:60])
    with pytest.raises(PostfixLogUnreadable, match="cut short"):
        read_deliveries(cut)


# ------------------------------------------------------------------- the report

DEFERRED_GMAIL = (
    "deferred (host gmail-smtp-in.l.google.com[142.250.102.27] said: 421-4.7.28 "
    "[203.0.113.10      15] Our system has detected an unusual rate of 421-4.7.28 "
    "unsolicited mail. 421 4.7.28 https://support.google.com/mail/?p=UnsolicitedRateLimitError "
    "{id} - gsmtp (in reply to end of DATA command))"
)


def report_lines() -> list[str]:
    lines = [
        line(1, 10, "AAAA01", "a@gmail.com"),
        line(1, 10, "AAAA01", "b@googlemail.com"),
        line(2, 10, "AAAA02", "c@gmail.com", conn_use=2),
        line(3, 11, "AAAA03", "d@gmail.com", status=DEFERRED_GMAIL.format(id="d75a77b69052e-4a")),
        line(4, 12, "AAAA04", "e@gmail.com", status=DEFERRED_GMAIL.format(id="a640c23a62f3a-9b")),
        line(5, 13, "AAAA05", "f@hotmail.com", tag="postfix/pw_main_203_0_113_11/smtp"),
        line(
            6,
            13,
            "AAAA06",
            "g@outlook.com",
            tag="postfix/pw_main_203_0_113_11/smtp",
            status="bounced (host outlook-com.olc.protection.outlook.com[52.101.1.1] said: "
            "550 5.5.0 Requested action not taken: mailbox unavailable "
            "(S2017062302). [AM4PEPF00027A6B.eurprd04.prod.outlook.com 2026-11-30T12:00:06.000Z "
            "08DC0A1B2C3D4E5F] (in reply to RCPT TO command))",
        ),
        line(
            7,
            14,
            "AAAA07",
            "h@yahoo.com",
            tag="postfix/relay/smtp",
            relay="none",
            status="deferred (connect to mta5.am0.yahoodns.net[67.195.204.72]:25: "
            "Connection timed out)",
        ),
        line(
            8,
            15,
            "AAAA08",
            "i@aol.com",
            tag="postfix/relay/smtp",
            relay="none",
            status="deferred (connect to mta6.am0.yahoodns.net[67.195.204.73]:25: "
            "Connection timed out)",
        ),
        line(9, 16, "AAAA09", "j@example.net"),
        line(9, 16, "AAAA09", "k@example.net"),
        line(9, 16, "AAAA09", "k2@example.net"),
        line(10, 17, "AAAA10", "l@example.org"),
        line(
            11,
            18,
            "AAAA11",
            "m@example.edu",
            status="bounced (host mx.example.edu[192.0.2.9] "
            "said: 550 5.1.1 <m@example.edu>: Recipient address rejected: User unknown "
            "(in reply to RCPT TO command))",
        ),
        line(
            12,
            19,
            "AAAA12",
            "n@example.com",
            tag="postfix/lmtp",
            relay="mail.example.com[private/dovecot-lmtp]",
        ),
    ]
    return lines


def test_the_report_per_transport_and_provider() -> None:
    by_transport, by_provider, reasons = smtp_out_connections(read(*report_lines()), top=3)
    assert by_transport.title == "Outbound SMTP by transport"
    assert by_transport.columns == ("transport", "connections", "delivered", "deferred", "bounced")
    assert by_transport.chart == "connections"
    assert by_transport.rows == [
        ("pw_main_203_0_113_10", 6, 7, 2, 1),
        ("pw_main_203_0_113_11", 2, 1, 0, 1),
        ("relay", 2, 0, 2, 0),
    ]
    assert by_provider.chart == "delivered"
    assert by_provider.rows == [
        ("gmail", 3, 3, 2, 0),
        ("example.net", 1, 3, 0, 0),
        ("microsoft", 2, 1, 0, 1),
        ("others", 4, 1, 2, 1),  # yahoo (2 deferred), example.org, example.edu
    ]
    assert reasons.chart is None
    assert reasons.rows == [
        (
            "gmail",
            "deferred",
            "421 4.7.28 … Our system has detected an unusual rate of unsolicited mail. "
            "421 4.7.28 https://suppor…",
            2,
        ),
        (
            "microsoft",
            "bounced",
            "550 5.5.0 Requested action not taken: mailbox unavailable (…). … "
            "(in reply to RCPT TO command)",
            1,
        ),
        ("others", "deferred", "connect to …: Connection timed out", 2),
        (
            "others",
            "bounced",
            "550 5.1.1 <…>: Recipient address rejected: User unknown (in reply to RCPT TO command)",
            1,
        ),
    ]


def test_the_report_names_pool_addresses_when_told_them() -> None:
    transports = {
        "pw_main_203_0_113_10": "main 203.0.113.10",
        "pw_main_203_0_113_11": "main 203.0.113.11",
    }
    (by_address, *_) = smtp_out_connections(read(*report_lines()), transports)
    assert by_address.columns[0] == "pool address"
    assert [row[0] for row in by_address.rows] == [
        "main 203.0.113.10",
        "main 203.0.113.11",
        "relay",
    ]


def test_no_others_row_for_a_single_domain() -> None:
    (_, by_provider, _) = smtp_out_connections(read(*report_lines()), top=7)
    assert [row[0] for row in by_provider.rows] == [
        "gmail",
        "example.net",
        "microsoft",
        "yahoo",
        "example.edu",
        "example.org",
    ]


def test_an_empty_log_makes_empty_tables() -> None:
    assert [t.rows for t in smtp_out_connections([])] == [[], [], []]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "host mx1.example.net[192.0.2.1] said: 450 4.2.0 <a@example.net>: Recipient "
            "address rejected: Greylisted (in reply to RCPT TO command)",
            "450 4.2.0 <…>: Recipient address rejected: Greylisted (in reply to RCPT TO command)",
        ),
        (
            "connect to mx2.example.net[2001:db8::25]:25: Connection refused",
            "connect to …: Connection refused",
        ),
        (
            "lost connection with mx.example.net[192.0.2.1] while receiving the initial "
            "server greeting",
            "lost connection with … while receiving the initial server greeting",
        ),
        (
            "Host or domain name not found. Name service error for name=example.invalid "
            "type=MX: Host not found, try again",
            "Host or domain name not found. Name service error for name=… type=MX: Host not "
            "found, try again",
        ),
        (
            "host mta7.am0.yahoodns.net[98.136.96.75] said: 421 4.7.0 [TSS04] Messages from "
            "203.0.113.10 temporarily deferred due to unexpected volume or user complaints - "
            "4.16.55.1; see https://postmaster.yahooinc.com/error-codes (in reply to MAIL FROM "
            "command)",
            "421 4.7.0 … Messages from … temporarily deferred due to unexpected volume or user "
            "complaints - …; s…",
        ),
        ("450 4.7.1 Try again later, ID 4AB9C1F20D", "450 4.7.1 Try again later, ID …"),
        ("451 4.3.0 Temporary failure 123456789", "451 4.3.0 Temporary failure …"),
    ],
)
def test_reasons_lose_what_varies(text: str, expected: str) -> None:
    assert reason(text) == expected


def test_the_benchmarks_log_is_read_whole(tmp_path: Path) -> None:
    """bench/report_bench.py compares with pflogsumm on this generator's lines: every
    delivery line must be one the reader reads, and the same seed the same log."""
    first, second = tmp_path / "a.log", tmp_path / "b.log"
    reference = gen_postfix_log.write(first, lines=3000, days=1, seed=7)
    gen_postfix_log.write(second, lines=3000, days=1, seed=7)
    assert first.read_bytes() == second.read_bytes()
    log = read_deliveries(first, reference=reference)
    assert log.lines == 3000
    assert (log.skipped, log.outside) == ({}, 0)
    text = first.read_text()
    assert len(log.deliveries) == text.count(": to=<")
    statuses = {(d.process, d.status) for d in log.deliveries}
    assert {("smtp", "sent"), ("smtp", "deferred"), ("smtp", "bounced")} <= statuses
    assert {("lmtp", "sent"), ("local", "forwarded")} <= statuses
    assert "conn_use=" in text
