"""Where the usage rows of several MTAs meet: each daemon's usage log mirrored to a
stream on the Redis they share (a real Redis here), read back by the reports with
rspamd's corrections applied, per host or all together; Redis away loses nothing
below the cap; a scheduled report is mailed by one MTA only."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from postwarden.cli import app
from postwarden.policyd import usage_stream
from postwarden.policyd.decide import Event, UsageRow
from postwarden.policyd.resp import RespClient
from postwarden.policyd.usage import UsageLog
from postwarden.policyd.usage_stream import UsageStream
from postwarden.reports.shared import read_shared
from tests.conftest import Sink
from tests.throwaway_redis import RedisServer

runner = CliRunner()
DAY = 86400


def mirrored(directory: Path, url: str, host: str) -> UsageLog:
    log = UsageLog(str(directory / f"{host}.sqlite"), 90 * DAY)
    log.mirror = UsageStream(RespClient(url), host, 32 * DAY)
    return log


def row(login: str, queue_id: str, decision: str = "DUNNO") -> UsageRow:
    return UsageRow(login, login, 2, 1000, "192.0.2.1", None, decision, queue_id)


def write(logs: list[UsageLog]) -> None:
    async def flush() -> None:
        for log in logs:
            log.flush()
            assert log.mirror is not None
            await log.mirror.close()

    asyncio.run(flush())


def test_two_hosts_meet_in_one_stream(redis_server: RedisServer, tmp_path: Path) -> None:
    mx1, mx2 = (
        mirrored(tmp_path, redis_server.url, "mx1"),
        mirrored(tmp_path, redis_server.url, "mx2"),
    )
    for number in range(3):
        mx1.add(row("alice@example.com", f"A{number}"))
    mx1.add(row("alice@example.com", "A9", "DEFER 4.7.1 limit"))
    mx2.add(row("alice@example.com", "B1"))
    mx2.add(row("bob@example.org", "B2"))
    # the same queue ID on the other host is another message
    mx2.add(row("bob@example.org", "A1"))
    mx2.mark_spam("A1", "HOLD spam (rspamd score 11.00)", "quarantine", 11.0)
    mx1.add_event(Event("throttle.hit", "alice@example.com/staff", "t", client="192.0.2.1"))
    write([mx1, mx2])

    now = time.time()
    shared = read_shared(redis_server.url, now - 60, now + 1)
    assert shared.hosts == {"mx1", "mx2"}
    by_host = sorted((s.host, s.login, s.queue_id, s.decision) for s in shared.sent)
    assert ("mx2", "bob@example.org", "A1", "HOLD spam (rspamd score 11.00)") in by_host
    assert ("mx1", "alice@example.com", "A1", "DUNNO") in by_host
    assert len(by_host) == 7
    assert [(e.host, e.kind) for e in shared.events] == [("mx1", "throttle.hit")]

    only = read_shared(redis_server.url, now - 60, now + 1, hosts=["mx2"])
    assert {s.host for s in only.sent} == {"mx2"}
    assert only.hosts == {"mx1", "mx2"}
    # a period before the rows
    assert read_shared(redis_server.url, now - 3600, now - 60).sent == []


def test_the_report_covers_every_host(redis_server: RedisServer, tmp_path: Path) -> None:
    mx1, mx2 = (
        mirrored(tmp_path, redis_server.url, "mx1"),
        mirrored(tmp_path, redis_server.url, "mx2"),
    )
    mx1.add(row("alice@example.com", "A1"))
    mx2.add(row("alice@example.com", "B1"))
    mx2.add(row("alice@example.com", "B2", "DEFER 4.7.1 limit"))
    write([mx1, mx2])
    settings = tmp_path / "policyd.yml"
    settings.write_text(f"store: redis\nredis_url: {redis_server.url}\n")

    def usage(*extra: str) -> dict[str, object]:
        result = runner.invoke(
            app,
            ["report", "smtp_out_usage", "--settings", str(settings), "--format", "json", *extra],
        )
        assert result.exit_code == 0, result.output
        by_login = json.loads(result.stdout)[0]["rows"]
        assert len(by_login) == 1
        found: dict[str, object] = by_login[0]
        return found

    assert usage() == {
        "login": "alice@example.com",
        "messages": 2,
        "recipients": 4,
        "bytes": 2000,
        "held": 0,
        "refused": 1,
    }
    assert usage("--host", "mx1")["messages"] == 1
    result = runner.invoke(
        app, ["report", "smtp_out_usage", "--settings", str(settings), "--host", "mx3"]
    )
    assert "no usage rows from mx3 in this period" in result.output


def test_redis_away_keeps_the_records_up_to_a_cap(
    redis_server: RedisServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(usage_stream, "WAITING_AT_MOST", 5)
    log = mirrored(tmp_path, redis_server.url, "mx1")
    assert log.mirror is not None
    stream = log.mirror
    redis_server.stop()
    for number in range(3):
        log.add(row("alice@example.com", f"Q{number}"))
    assert asyncio.run(stream.flush()) == 0
    for number in range(3, 7):
        log.add(row("alice@example.com", f"Q{number}"))
    assert stream.dropped == 2
    redis_server.start()
    stream.client = RespClient(redis_server.url)
    assert asyncio.run(stream.flush()) == 5
    now = time.time()
    kept = [s.queue_id for s in read_shared(redis_server.url, now - 60, now + 1).sent]
    assert kept == ["Q0", "Q1", "Q2", "Q3", "Q4"]
    log.close()


def test_a_scheduled_report_is_mailed_by_one_mta(
    redis_server: RedisServer, tmp_path: Path, sink: Sink
) -> None:
    (tmp_path / "policy.yml").write_text(
        f"""\
server:
  hostname: mail.example.com
  postmaster: ops@example.net
  notification_relay: {{host: 127.0.0.1, port: {sink.port}, starttls: false}}
domains:
  example.com: {{}}
notifications:
  admins: {{email: [ops@example.net]}}
reports:
  daily-ops: {{include: [smtp_out_usage], schedule: daily, send_to: [admins]}}
"""
    )
    settings = tmp_path / "policyd.yml"
    settings.write_text(
        f"policy: {tmp_path / 'policy.yml'}\nstore: redis\nredis_url: {redis_server.url}\n"
    )
    command = ["report", "--mail", "daily-ops", "--settings", str(settings)]
    first, second = runner.invoke(app, command), runner.invoke(app, command)
    assert first.exit_code == 0, first.output
    assert "mailed to ops@example.net" in first.output
    assert second.exit_code == 0, second.output
    assert f"already mailed by {socket.gethostname()}" in second.output
    assert len(sink.messages(count=2, timeout=1.0)) == 1
    # a period asked for by hand is mailed again
    again = runner.invoke(app, [*command, "--since", "1d"])
    assert "mailed to ops@example.net" in again.output
    assert len(sink.messages(count=2)) == 2


def test_a_failed_audit_is_sent_by_one_mta(
    redis_server: RedisServer, tmp_path: Path, sink: Sink
) -> None:
    """The MTAs' audit timers fire together; with a shared store, the first to claim
    the week sends password.audit_failed, the others say who did."""
    (tmp_path / "policy.yml").write_text(
        f"""\
server:
  hostname: mail.example.com
  postmaster: ops@example.net
  notification_relay: {{host: 127.0.0.1, port: {sink.port}, starttls: false}}
password_policy:
  audit: {{schedule: weekly}}
domains:
  example.com: {{}}
users:
  zed@example.com: {{}}
notifications:
  admins: {{email: [ops@example.net]}}
events:
  - on: password.audit_failed
    notify: [admins]
"""
    )
    (tmp_path / "passwords").write_text("# no hash for zed\n")
    settings = tmp_path / "policyd.yml"
    settings.write_text(
        f"policy: {tmp_path / 'policy.yml'}\nstore: redis\nredis_url: {redis_server.url}\n"
    )
    command = [
        "audit",
        "passwords",
        "--notify",
        "--settings",
        str(settings),
        "--passdb",
        str(tmp_path / "passwords"),
    ]
    first, second = runner.invoke(app, command), runner.invoke(app, command)
    assert first.exit_code == 1, first.output  # zed has no password
    assert "password.audit_failed sent to admins" in first.stderr
    assert second.exit_code == 1, second.output
    assert f"password.audit_failed already sent by {socket.gethostname()}" in second.stderr
    assert len(sink.messages(count=2, timeout=1.0)) == 1
