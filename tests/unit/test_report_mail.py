"""`postwarden report --mail NAME`, what the report timers run: the policy's report,
through the notification relay (Postfix's smtp-sink here), as HTML with a text part."""

from __future__ import annotations

import time
from pathlib import Path

from typer.testing import CliRunner

from postwarden.cli import app
from postwarden.policyd.decide import Event, UsageRow
from postwarden.policyd.usage import UsageLog
from tests.conftest import Sink, closed_port

runner = CliRunner()


def deployed(tmp_path: Path, relay_port: int) -> Path:
    """A policy with a weekly report, the daemon's settings naming it, and a usage log."""
    (tmp_path / "policy.yml").write_text(
        f"""\
server:
  hostname: mail.example.com
  postmaster: ops@example.net
  notification_relay: {{host: 127.0.0.1, port: {relay_port}, starttls: false}}
domains:
  example.com: {{}}
notifications:
  admins: {{email: [ops@example.net, oncall@example.org]}}
  more: {{email: [ops@example.net]}}
reports:
  weekly-ops:
    include: [smtp_out_usage, abuse_detection]
    schedule: weekly
    send_to: [admins, more]
""",
        encoding="utf-8",
    )
    usage = tmp_path / "usage.sqlite"
    log = UsageLog(str(usage), 90 * 86400, lambda: time.time() - 3600)
    log.add(UsageRow("alice@example.com", "alice@example.com", 3, 2048, "192.0.2.1", None, "DUNNO"))
    log.add_event(Event("abuse.bad_smtp_session", "198.51.100.7", "harvest", client="198.51.100.7"))
    log.close()
    settings = tmp_path / "policyd.yml"
    settings.write_text(
        f"policy: {tmp_path / 'policy.yml'}\nsecrets: {tmp_path / 'secrets.yml'}\n"
        f"usage_log: {usage}\n",
        encoding="utf-8",
    )
    return settings


def test_the_report_is_mailed_as_html_with_a_text_part(tmp_path: Path, sink: Sink) -> None:
    settings = deployed(tmp_path, sink.port)
    result = runner.invoke(app, ["report", "--mail", "weekly-ops", "--settings", str(settings)])
    assert result.exit_code == 0, result.output
    assert "mailed to ops@example.net, oncall@example.org" in result.output

    (message,) = sink.messages()
    assert message.get_all("X-Rcpt-Args") == ["<ops@example.net>", "<oncall@example.org>"]
    assert message["Subject"].startswith("postwarden report weekly-ops for mail.example.com: ")
    assert message["Auto-Submitted"] == "auto-generated"
    assert message.get_content_type() == "multipart/alternative"
    text = message.get_body(("plain",))
    html = message.get_body(("html",))
    assert text is not None
    assert html is not None
    plain = text.get_content()
    assert "Outbound mail by login" in plain
    assert "alice@example.com" in plain
    assert "Abuse rules tripped" in plain
    assert "harvesting ban" in plain
    page = html.get_content()
    assert "<svg" in page
    assert "198.51.100.7" in page


def test_a_report_the_policy_does_not_have(tmp_path: Path, sink: Sink) -> None:
    settings = deployed(tmp_path, sink.port)
    result = runner.invoke(app, ["report", "--mail", "daily", "--settings", str(settings)])
    assert result.exit_code == 1
    assert "the policy has no report 'daily' (its reports: weekly-ops)" in result.output
    assert sink.messages(timeout=0.5) == []


def test_a_relay_that_is_down_is_an_error(tmp_path: Path) -> None:
    settings = deployed(tmp_path, closed_port())
    result = runner.invoke(app, ["report", "--mail", "weekly-ops", "--settings", str(settings)])
    assert result.exit_code == 1
    assert "error: report weekly-ops: email smtp://127.0.0.1:" in result.output
    assert "connect failed" in result.output
    assert "Traceback" not in result.output
