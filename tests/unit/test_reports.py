"""`postwarden report`: outbound usage and outgoing spam from a real usage log (written
by the daemon's own UsageLog), in the three formats, and clear errors."""

from __future__ import annotations

import csv
import io
import json
import sqlite3
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from postwarden.cli import app
from postwarden.policyd.decide import Event, UsageRow
from postwarden.policyd.usage import UsageLog

runner = CliRunner()
DAY = 86400.0
POLICY = """\
server:
  hostname: mail.example.com
  postmaster: ops@example.net
throttles:
  staff:
    messages: 2/h
    recipients: 100/d
  org-wide:
    messages: 10/h
domains:
  example.com:
    throttle: staff
  example.org:
    shared_throttle: org-wide
"""


@pytest.fixture(autouse=True)
def deployed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The policy and daemon settings the report finds as the deployed ones, so that
    nothing on the machine running the tests is read."""
    policy = tmp_path / "policy.yml"
    policy.write_text(POLICY, encoding="utf-8")
    settings = tmp_path / "policyd.yml"
    settings.write_text(
        f"policy: {policy}\nsecrets: {tmp_path / 'none.yml'}\n"
        f"usage_log: {tmp_path / 'no-usage.sqlite'}\n",
        encoding="utf-8",
    )
    monkeypatch.setattr("postwarden.policyd.settings.SETTINGS_PATH", str(settings))
    return settings


@pytest.fixture
def usage_log(tmp_path: Path) -> str:
    path = str(tmp_path / "usage.sqlite")
    now = time.time()
    clock = [now - 10 * DAY]
    log = UsageLog(path, 90 * 86400, lambda: clock[0])
    # ten days ago: outside a 7d report
    log.add(UsageRow("old@example.com", "old@example.com", 9, 9, "192.0.2.9", None, "DUNNO", "Q0"))
    log.flush()
    clock[0] = now - DAY
    rows = [
        ("alice@example.com", "alice@example.com", 3, 2048, "DUNNO", "Q1"),
        ("alice@example.com", "info@example.com", 2, 1000, "DUNNO", "Q2"),
        ("alice@example.com", "alice@example.com", 1, 500, "DEFER 4.7.1 limit", "Q3"),
        ("=bob@example.org", "=bob@example.org", 1, 100, "DUNNO", "Q4"),
        ("bob@example.org", "bob@example.org", 4, 700, "DUNNO", "Q5"),
    ]
    for login, sender, recipients, size, decision, queue_id in rows:
        log.add(UsageRow(login, sender, recipients, size, "192.0.2.1", None, decision, queue_id))
    log.flush()
    log.mark_spam("Q2", "HOLD spam (rspamd score 10.88)", "quarantine", 10.88, ("BAYES_SPAM",))
    log.mark_spam(
        "Q5", "REJECT 5.7.1 spam (rspamd score 16.00)", "reject", 16.0, ("FUZZY_DENIED", "URIBL")
    )
    log.mark_spam("Q4", None, "add header", 7.5)
    events = [
        Event(
            "throttle.hit",
            "alice@example.com/default",
            "t",
            client="192.0.2.1",
            login="alice@example.com",
        ),
        Event(
            "throttle.hit",
            "alice@example.com/default",
            "t",
            client="192.0.2.2",
            login="alice@example.com",
        ),
        Event("abuse.bad_smtp_session", "198.51.100.7", "harvest", client="198.51.100.7"),
        Event(
            "abuse.auth_failures",
            "198.51.100.8",
            "logins",
            client="198.51.100.8",
            login="bob@example.org",
        ),
        Event("list.post_held", "team@example.com", "post from x held", client="192.0.2.3"),
    ]
    for event in events:
        log.add_event(event)
    log.flush()
    clock[0] = now - 10 * DAY
    log.add_event(Event("abuse.internal_spammer", "old@example.com", "long ago"))
    log.close()
    return path


def report(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, ["report", *args])
    return result.exit_code, result.output


def test_usage_and_spam_as_json(usage_log: str) -> None:
    code, output = report(
        "smtp_out_usage", "outgoing_spam", "--usage-log", usage_log, "--format", "json"
    )
    assert code == 0, output
    by_login, by_domain, peaks, spam = json.loads(output)
    assert by_login["rows"] == [
        {
            "login": "alice@example.com",
            "messages": 1,
            "recipients": 3,
            "bytes": 2048,
            "held": 1,
            "refused": 1,
        },
        {
            "login": "=bob@example.org",
            "messages": 1,
            "recipients": 1,
            "bytes": 100,
            "held": 0,
            "refused": 0,
        },
        {
            "login": "bob@example.org",
            "messages": 0,
            "recipients": 0,
            "bytes": 0,
            "held": 0,
            "refused": 1,
        },
    ]
    assert [row["domain"] for row in by_domain["rows"]] == ["example.com", "example.org"]
    assert by_domain["rows"][1]["refused"] == 1
    # what each throttle counted at its busiest: alice's refused message is not counted,
    # her held one is; the shared budget of example.org counts bob's passed message
    with sqlite3.connect(usage_log) as db:
        (written,) = db.execute("SELECT max(time) FROM usage").fetchone()
    hour = time.strftime("%Y-%m-%d %H:00 UTC", time.gmtime(written))
    assert peaks["rows"] == [
        {
            "throttle": "staff (messages)",
            "limit": "2/h",
            "peak": 2,
            "% used": 100.0,
            "by": "alice@example.com",
            "window from": hour,
        },
        {
            "throttle": "org-wide (messages)",
            "limit": "10/h",
            "peak": 1,
            "% used": 10.0,
            "by": "example.org",
            "window from": hour,
        },
        {
            "throttle": "staff (recipients)",
            "limit": "100/d",
            "peak": 5,
            "% used": 5.0,
            "by": "alice@example.com",
            "window from": hour,
        },
    ]
    assert spam["rows"] == [
        {
            "login": "=bob@example.org",
            "marked": 1,
            "held": 0,
            "rejected": 0,
            "highest score": 7.5,
            "top symbols": "",
        },
        {
            "login": "alice@example.com",
            "marked": 0,
            "held": 1,
            "rejected": 0,
            "highest score": 10.88,
            "top symbols": "BAYES_SPAM",
        },
        {
            "login": "bob@example.org",
            "marked": 0,
            "held": 0,
            "rejected": 1,
            "highest score": 16.0,
            "top symbols": "FUZZY_DENIED URIBL",
        },
    ]


def test_csv_keeps_a_login_from_being_a_formula(usage_log: str, tmp_path: Path) -> None:
    target = tmp_path / "out.csv"
    code, output = report(
        "smtp_out_usage", "--usage-log", usage_log, "--format", "csv", "-o", str(target)
    )
    assert (code, output) == (0, "")
    blocks = target.read_text().split("\n\n")
    rows = list(csv.reader(io.StringIO(blocks[0])))
    assert rows[0] == ["# Outbound mail by login"]
    assert rows[1] == ["login", "messages", "recipients", "bytes", "held", "refused"]
    assert ["'=bob@example.org", "1", "1", "100", "0", "0"] in rows


def test_the_table_for_a_person(usage_log: str) -> None:
    code, output = report("outgoing_spam", "--usage-log", usage_log)
    assert code == 0, output
    assert "Outgoing spam by login" in output
    assert "alice@example.com" in output
    assert "10.88" in output


def test_a_sender_is_shown_as_it_is(tmp_path: Path) -> None:
    path = str(tmp_path / "usage.sqlite")
    log = UsageLog(path, 90 * 86400)
    sender = "[bold]x@[red]example.com"
    log.add(UsageRow("", sender, 1, 10, "127.0.0.1", None, "DUNNO", "Q9"))
    log.close()
    code, output = report("smtp_out_usage", "--usage-log", path)
    assert code == 0, output
    assert "[red]example.com" in output


def test_an_empty_period_says_so(usage_log: str) -> None:
    code, output = report("smtp_out_usage", "--usage-log", usage_log, "--since", "1h")
    assert code == 0, output
    assert "nothing in this period" in output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["smtp_in"], "cannot make smtp_in: the report kinds are smtp_out_usage"),
        (["smtp_out_usage", "--since", "1d", "--from", "2026-01-01"], "not both"),
        (["smtp_out_usage", "--from", "2026-12-08", "--to", "2026-12-01"], "is empty"),
        (["smtp_out_usage", "--from", "last week"], "--from 'last week': not a date"),
        (["smtp_out_usage", "--since", "soon"], "--since: 'soon' is not a duration"),
        (
            ["smtp_out_usage", "--usage-log", "/nonexistent/usage.sqlite"],
            "cannot read the usage log",
        ),
    ],
)
def test_bad_requests_get_a_clear_error(args: list[str], message: str, usage_log: str) -> None:
    if "--usage-log" not in args:
        args = [*args, "--usage-log", usage_log]
    code, output = report(*args)
    assert code == 1
    assert message in output
    assert "Traceback" not in output


def test_abuse_rules_and_who_tripped_them(usage_log: str) -> None:
    code, output = report("abuse_detection", "--usage-log", usage_log, "--format", "json")
    assert code == 0, output
    rules, subjects = json.loads(output)
    assert rules["rows"][0] == {
        "rule": "throttle hit",
        "times": 2,
        "subjects": 1,
        "client addresses": 2,
        "logins": 1,
    }
    assert {row["rule"] for row in rules["rows"]} == {
        "throttle hit",
        "harvesting ban",
        "failed-login ban",
        "list post held",
    }
    first = subjects["rows"][0]
    assert (first["subject"], first["times"]) == ("alice@example.com/default", 2)
    assert first["client addresses"] == "192.0.2.1, 192.0.2.2"
    ban = next(row for row in subjects["rows"] if row["rule"] == "failed-login ban")
    assert (ban["subject"], ban["logins"]) == ("198.51.100.8", "bob@example.org")


def test_dates_choose_the_period(usage_log: str) -> None:
    """--from/--to: the row of ten days ago and nothing since."""
    old = time.localtime(time.time() - 10 * DAY)
    day = time.strftime("%Y-%m-%d", old)
    code, output = report(
        "smtp_out_usage",
        "abuse_detection",
        "--usage-log",
        usage_log,
        "--from",
        day,
        "--to",
        day,
        "--format",
        "json",
    )
    assert code == 0, output
    by_login, _, _, rules, _ = json.loads(output)
    assert [row["login"] for row in by_login["rows"]] == ["old@example.com"]
    assert [row["rule"] for row in rules["rows"]] == ["same-size burst"]


def test_a_corrupt_log_is_an_error_not_a_report(tmp_path: Path) -> None:
    path = tmp_path / "usage.sqlite"
    path.write_bytes(b"this is not a database" * 100)
    code, output = report("smtp_out_usage", "--usage-log", str(path))
    assert code == 1
    assert "cannot read the usage log" in output
    assert "Traceback" not in output


def test_a_deployed_policy_that_cannot_be_read_is_said(
    usage_log: str, deployed: Path, tmp_path: Path
) -> None:
    """Without the policy the peaks table has no limits to measure against: say so
    rather than leave it out silently."""
    args = ["report", "smtp_out_usage", "--usage-log", usage_log, "--format", "json"]
    read = runner.invoke(app, args)
    assert read.exit_code == 0, read.output
    assert "Throttles at their peak" in read.stdout
    assert "cannot be read" not in read.stderr
    (tmp_path / "policy.yml").write_text("server: [\n", encoding="utf-8")
    broken = runner.invoke(app, args)
    assert broken.exit_code == 0, broken.output
    assert "Throttles at their peak" not in broken.stdout
    assert f"note: the deployed policy {tmp_path / 'policy.yml'} cannot be read" in broken.stderr
