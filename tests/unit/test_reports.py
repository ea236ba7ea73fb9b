"""`postwarden report`: outbound usage and outgoing spam from a real usage log (written
by the daemon's own UsageLog), in the three formats, and clear errors."""

from __future__ import annotations

import csv
import io
import json
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from postwarden.cli import app
from postwarden.policyd.decide import UsageRow
from postwarden.policyd.usage import UsageLog

runner = CliRunner()
DAY = 86400.0


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
    log.mark_spam("Q2", "HOLD spam (rspamd score 10.88)", "quarantine", 10.88)
    log.mark_spam("Q5", "REJECT 5.7.1 spam (rspamd score 16.00)", "reject", 16.0)
    log.mark_spam("Q4", None, "add header", 7.5)
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
    by_login, by_domain, spam = json.loads(output)
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
    assert spam["rows"] == [
        {"login": "=bob@example.org", "marked": 1, "held": 0, "rejected": 0, "highest score": 7.5},
        {
            "login": "alice@example.com",
            "marked": 0,
            "held": 1,
            "rejected": 0,
            "highest score": 10.88,
        },
        {"login": "bob@example.org", "marked": 0, "held": 0, "rejected": 1, "highest score": 16.0},
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
        (["abuse_detection"], "cannot make abuse_detection: this version makes"),
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
