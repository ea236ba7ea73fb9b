"""Outbound SMTP of every MTA in one scheduled report (reports/gathered.py): each
MTA's report timer posts the counts of its own Postfix log on the Redis they share
(a real Redis here), and the one that mails waits for the others and adds them up;
an MTA that never posts is named, never silently left out. The mail goes to
smtp-sink."""

from __future__ import annotations

import asyncio
import threading
import time
from email.message import EmailMessage
from pathlib import Path

import pytest

from postwarden.policy.load import load_policy
from postwarden.policyd.decide import UsageRow
from postwarden.policyd.resp import RespClient
from postwarden.reports import mailing
from postwarden.reports.connections import ConnectionCounts, count_connections
from postwarden.reports.gathered import CannotGather, gather_counts, post_counts
from postwarden.reports.mailing import Mailed, mail_report
from postwarden.reports.make import Report, UsageSource
from postwarden.reports.period import Period
from postwarden.reports.postfix_log import parse_deliveries
from tests.conftest import Sink
from tests.policyd.test_usage_stream import mirrored, write
from tests.throwaway_redis import RedisServer


def delivery(at: float, queue_id: str, recipient: str, status: str = "sent (250 ok)") -> str:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(at))
    stamp += time.strftime("%z", time.localtime(at))
    return (
        f"{stamp} mx postfix/smtp[41]: {queue_id}: to=<{recipient}>, "
        f"relay=mx.example.net[192.0.2.25]:25, delay=1, delays=0/0/0.5/0.5, "
        f"dsn={ {'s': '2.0.0', 'd': '4.0.0', 'b': '5.0.0'}[status[0]] }, status={status}"
    )


def policy_file(tmp_path: Path, port: int) -> Path:
    path = tmp_path / "policy.yml"
    path.write_text(
        f"""\
server:
  hostname: mail.example.com
  postmaster: ops@example.net
  notification_relay: {{host: 127.0.0.1, port: {port}, starttls: false}}
domains:
  example.com: {{}}
notifications:
  admins: {{email: [ops@example.net]}}
reports:
  daily-ops: {{include: [smtp_out_connections], schedule: daily, send_to: [admins]}}
"""
    )
    return path


def plain(message: EmailMessage) -> str:
    body = message.get_body(("plain",))
    assert isinstance(body, EmailMessage)
    text: str = body.get_content()
    return text


def test_counts_added_up_make_the_tables_of_all_the_lines() -> None:
    now = time.time()
    first = [delivery(now - 9, "A1", "a@gmail.com"), delivery(now - 8, "A2", "b@example.org")]
    second = [
        delivery(now - 7, "B1", "c@gmail.com", "deferred (421 4.7.0 try again later)"),
        delivery(now - 6, "B2", "d@example.net", "bounced (550 5.1.1 no such user)"),
    ]

    def counted(lines: list[str]) -> ConnectionCounts:
        return count_connections(parse_deliveries(lines, reference=now).deliveries)

    added = ConnectionCounts.from_json(counted(first).as_json())
    added.add(ConnectionCounts.from_json(counted(second).as_json()))
    assert added == counted(first + second)
    assert added.by_domain["gmail.com"] == [2, 1, 1, 0]


@pytest.mark.parametrize(
    ("posted", "why"),
    [
        ([], "not an object"),
        ({"by_transport": {}, "by_domain": {"x": [1, 2]}, "reasons": []}, "not four counts"),
        ({"by_transport": {}, "by_domain": {"x": [1, 2, 3, -4]}, "reasons": []}, "four counts"),
        ({"by_transport": {}, "by_domain": {}, "reasons": [["x", "sent", "ok", 1]]}, "status"),
        ({"by_transport": {}, "by_domain": {}}, "reasons is not a list"),
    ],
)
def test_counts_that_are_not_counts_are_refused(posted: object, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        ConnectionCounts.from_json(posted)


def test_the_mailing_mta_adds_up_what_every_mta_posted(
    redis_server: RedisServer, tmp_path: Path, sink: Sink
) -> None:
    """mx1's timer fires first: it posts, claims the day and waits for mx2 (which wrote
    usage rows in the period); mx2 posts a moment later and leaves the mailing to mx1.
    The one report mailed has both MTAs' destinations."""
    now = time.time()
    for host in ("mx1", "mx2"):
        log = mirrored(tmp_path, redis_server.url, host)
        log.add(UsageRow("a@example.com", "a@example.com", 1, 900, "192.0.2.1", None, "DUNNO", ""))
        write([log])
    (tmp_path / "mx1.log").write_text(delivery(now - 60, "A1", "someone@only-mx1.example") + "\n")
    (tmp_path / "mx2.log").write_text(
        delivery(now - 50, "B1", "someone@only-mx2.example", "deferred (421 4.7.0 later)") + "\n"
    )
    policy = load_policy(policy_file(tmp_path, sink.port)).policy
    usage = UsageSource(redis_url=redis_server.url)
    mailed: dict[str, Mailed] = {}

    def timer(host: str) -> None:
        mailed[host] = mail_report(
            policy, "daily-ops", usage, None, [str(tmp_path / f"{host}.log")], now, host
        )

    first = threading.Thread(target=timer, args=("mx1",))
    first.start()
    time.sleep(1.5)  # mx1 waits for mx2 meanwhile
    timer("mx2")
    first.join(30)
    assert not first.is_alive()
    assert mailed["mx2"].by == "mx1"
    assert mailed["mx1"].by is None
    assert "outbound SMTP from the Postfix logs of mx1, mx2" in mailed["mx1"].report.notes
    (message,) = sink.messages()
    text = plain(message)
    assert "only-mx1.example" in text
    assert "only-mx2.example" in text


def test_an_mta_that_never_posts_is_named(
    redis_server: RedisServer, tmp_path: Path, sink: Sink, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(mailing, "WAIT_FOR_HOSTS", 0.5)
    now = time.time()
    log = mirrored(tmp_path, redis_server.url, "mx3")
    log.add(UsageRow("a@example.com", "a@example.com", 1, 900, "192.0.2.1", None, "DUNNO", ""))
    write([log])
    (tmp_path / "mx1.log").write_text(delivery(now - 60, "A1", "someone@only-mx1.example") + "\n")
    policy = load_policy(policy_file(tmp_path, sink.port)).policy
    mailed = mail_report(
        policy,
        "daily-ops",
        UsageSource(redis_url=redis_server.url),
        None,
        [str(tmp_path / "mx1.log")],
        now,
        "mx1",
    )
    assert mailed.by is None
    assert any(
        note.startswith("no outbound SMTP counts from mx3 within") for note in mailed.report.notes
    ), mailed.report.notes
    (message,) = sink.messages()
    assert "no outbound SMTP counts from mx3" in plain(message)


def test_gathering_waits_only_as_long_as_asked(redis_server: RedisServer) -> None:
    post_counts(redis_server.url, "k", "mx1", ConnectionCounts(), 60)
    slept: list[float] = []
    found = gather_counts(
        redis_server.url,
        "k",
        {"mx1", "mx2"},
        wait=3,
        poll=1,
        clock=lambda: sum(slept),
        sleep=slept.append,
    )
    assert found.hosts == ["mx1"]
    assert found.missing == ["mx2"]
    assert slept == [1, 1, 1]
    # every MTA there: no wait at all
    post_counts(redis_server.url, "k", "mx2", ConnectionCounts(), 60)
    slept.clear()
    found = gather_counts(redis_server.url, "k", {"mx1", "mx2"}, wait=3, sleep=slept.append)
    assert (found.hosts, found.missing, slept) == (["mx1", "mx2"], [], [])


def test_counts_that_cannot_be_read_are_named(redis_server: RedisServer) -> None:
    post_counts(redis_server.url, "k", "mx1", ConnectionCounts(), 60)
    post_counts(redis_server.url, "k", "mx2", ConnectionCounts(), 60)

    async def spoil() -> None:
        client = RespClient(redis_server.url)
        await client.call("HSET", "k", "mx2", b'{"by_domain": 1}')
        await client.close()

    asyncio.run(spoil())
    found = gather_counts(redis_server.url, "k", {"mx1", "mx2"}, wait=0)
    assert (found.hosts, found.unreadable) == (["mx1"], ["mx2"])
    assert "the outbound SMTP counts of mx2 could not be read" in found.notes(0)


def test_a_store_that_cannot_be_read_is_an_error(redis_server: RedisServer) -> None:
    mailing.claim(redis_server.url, "not-a-hash", 60, "mx1")
    with pytest.raises(CannotGather, match="redis"):
        gather_counts(redis_server.url, "not-a-hash", set(), wait=0)
    redis_server.stop()
    with pytest.raises(CannotGather, match="redis"):
        post_counts(redis_server.url, "k", "mx1", ConnectionCounts(), 60)


def test_a_host_name_from_the_store_cannot_drive_a_terminal(
    redis_server: RedisServer, tmp_path: Path, sink: Sink
) -> None:
    """Host names come from the shared Redis: shown in notes (on the operator's
    terminal, in the mail), their control characters are escapes."""
    hostile = "mx\x1b]0;owned\x07"
    post_counts(redis_server.url, "k", hostile, ConnectionCounts(), 60)
    notes = gather_counts(redis_server.url, "k", set(), wait=0).notes(0)
    report = Report(Period(time.time() - 60, time.time()), [], notes)
    message = mailing.report_message("daily-ops", report, "mx", "a@example.com", ["b@example.com"])
    text = plain(message)
    assert "\x1b" not in text
    assert "mx\\u001b]0;owned\\u0007" in text
