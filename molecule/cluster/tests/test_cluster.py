"""Two MTAs sharing postwarden-policyd's counters and bans through Redis.

Run by `molecule verify` with testinfra on both MTAs; the SMTP probe runs on each.
"""

from __future__ import annotations

import email
import email.message
import email.policy
import json
import time
from typing import Any

import pytest
import testinfra

ALICE = ("alice@example.com", "Tulip-Harbor-Quartz-17")
MTAS = ("postwarden-mx1", "postwarden-mx2")


@pytest.fixture(scope="module")
def mtas() -> list[Any]:
    return [testinfra.get_host(f"podman://{name}") for name in MTAS]


def probe(host: Any, *args: str) -> list[list[Any]]:
    result = host.run(" ".join(["smtp_probe", *(f"'{a}'" for a in args)]))
    assert result.rc == 0, result.stderr
    answers: list[list[Any]] = json.loads(result.stdout)["answers"]
    return answers


def test_each_daemon_uses_the_shared_store(host: Any) -> None:
    assert host.service("postwarden-policyd").is_running
    settings = host.file("/etc/postwarden/policyd.yml")
    assert "store: redis" in settings.content_string
    # the URL carries Redis's password: the settings are not for everyone
    assert settings.mode == 0o640


def test_a_user_is_throttled_at_the_count_of_both_mtas(mtas: list[Any]) -> None:
    first, second = mtas
    on_first = probe(first, "submit", *ALICE, ALICE[0], "bob@example.org", "--count", "100")
    on_second = probe(second, "submit", *ALICE, ALICE[0], "bob@example.org", "--count", "100")
    assert [code for code, _ in on_first + on_second] == [250] * 200
    ((code, text),) = probe(first, "submit", *ALICE, ALICE[0], "bob@example.org")
    assert code == 450
    assert "sending limit reached: messages 200/h (staff)" in text
    ((code, _),) = probe(second, "submit", *ALICE, ALICE[0], "bob@example.org")
    assert code == 450


def alice_sent(host: Any, *extra: str) -> dict[str, Any]:
    """alice's row of the outbound usage report made on ``host``."""
    result = host.run(" ".join(["postwarden report smtp_out_usage --format json", *extra]))
    assert result.rc == 0, result.stderr
    rows: list[dict[str, Any]] = json.loads(result.stdout)[0]["rows"]
    return next((row for row in rows if row["login"] == ALICE[0]), {})


def test_one_report_totals_both_mtas(mtas: list[Any]) -> None:
    """The messages of the test above, 100 through each MTA and one refused on each, in
    one report made on either MTA (the rows meet in the Redis both use); --host tells
    them apart."""
    wanted = {"messages": 200, "recipients": 200, "refused": 2}
    for host in mtas:
        deadline = time.monotonic() + 30
        while True:
            row = alice_sent(host)
            if {key: row.get(key) for key in wanted} == wanted:
                break
            assert time.monotonic() < deadline, row
            time.sleep(1)
    first, second = mtas
    names = [host.check_output("hostname") for host in mtas]
    assert alice_sent(first, "--host", names[1])["messages"] == 100
    assert alice_sent(second, "--host", names[0], "--host", names[1])["messages"] == 200


def test_a_harvester_banned_on_one_mta_is_refused_by_the_other(mtas: list[Any]) -> None:
    first, second = mtas
    harvester = "127.0.0.20"
    codes = [code for code, _ in probe(first, "harvest", harvester, "10")]
    assert codes == [550] * 9 + [554]
    ((code, text),) = probe(second, "harvest", harvester, "1")
    assert code == 554
    assert "banned" in text


def test_a_ban_lifted_on_one_mta_is_lifted_on_the_other(mtas: list[Any]) -> None:
    first, second = mtas
    harvester = "127.0.0.25"
    probe(first, "harvest", harvester, "10")
    ((code, _),) = probe(second, "harvest", harvester, "1")
    assert code == 554
    lifted = first.run(f"/opt/postwarden/venv/bin/postwarden ban lift {harvester}")
    assert lifted.rc == 0, lifted.stderr
    assert harvester not in second.check_output("/opt/postwarden/venv/bin/postwarden ban list")
    # mx2 never saw the failures: its firewall has no ban, and its daemon none either now
    ((code, text),) = probe(second, "harvest", harvester, "1")
    assert code == 550, text


def wait_for(check: Any, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found or time.monotonic() > deadline:
            return found
        time.sleep(1)


def test_the_scheduled_report_has_the_connections_of_both_mtas(mtas: list[Any]) -> None:
    """Each MTA's Postfix log stays on it: when both report timers fire, each posts the
    outbound SMTP counts of its own log on the shared Redis, one mails the report
    (through the lab's relay, to postmaster@, alice's alias, on that MTA) and the
    other leaves it to that one. The report has a destination only mx1 sent to and
    one only mx2 did."""
    only = {host: f"someone@only-{name}.example" for host, name in zip(mtas, MTAS, strict=True)}
    for host, recipient in only.items():
        host.check_output(f"printf 'Subject: out\\n\\nout\\n' | sendmail -f root {recipient}")
    for host, recipient in only.items():
        logged = wait_for(
            lambda host=host, recipient=recipient: (
                host.run(
                    f"grep -F 'to=<{recipient}>' /var/log/postfix.log | grep -F status="
                ).stdout
            ),
            timeout=180,
        )
        assert logged, f"no delivery line for {recipient}"
    unit = "postwarden-report-weekly-ops.service"
    for host in mtas:
        host.check_output(f"systemctl start --no-block {unit}")
    journal = f"journalctl -u {unit} --no-pager -n 20 -o cat"
    # what `report --mail` prints (the unit's own description says "mailed to" too)
    mailed, left = ") mailed to ", "): already mailed by "
    for host in mtas:
        assert wait_for(
            lambda host=host: mailed in (said := host.check_output(journal)) or left in said,
            timeout=150,
        ), host.run(f"systemctl status {unit}").stdout
    journals = [host.check_output(journal) for host in mtas]
    mailers = [host for host, said in zip(mtas, journals, strict=True) if mailed in said]
    assert len(mailers) == 1, journals
    (mailer,) = mailers
    other = next(host for host in mtas if host is not mailer)
    assert f"{left}{mailer.check_output('hostname')}" in "".join(journals), journals
    maildir = "/var/vmail/example.com/alice/Maildir"
    subject = "postwarden report weekly-ops"
    found = wait_for(lambda: mailer.run(f"grep -rlF '{subject}' {maildir}/new").stdout, timeout=60)
    assert found, "no report mail on the MTA that said it mailed it"
    message = email.message_from_string(
        mailer.file(found.split()[0]).content_string, policy=email.policy.default
    )
    assert isinstance(message, email.message.EmailMessage)
    body = message.get_body(("plain",))
    assert isinstance(body, email.message.EmailMessage)
    text = body.get_content()
    assert "only-postwarden-mx1.example" in text, text
    assert "only-postwarden-mx2.example" in text, text
    names = ", ".join(sorted(host.check_output("hostname") for host in mtas))
    assert f"outbound SMTP from the Postfix logs of {names}" in text, text
    assert not other.run(f"grep -rlF '{subject}' {maildir}/new").stdout
