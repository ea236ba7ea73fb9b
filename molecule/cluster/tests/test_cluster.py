"""Two MTAs sharing postwarden-policyd's counters and bans through Redis.

Run by `molecule verify` with testinfra on both MTAs; the SMTP probe runs on each.
"""

from __future__ import annotations

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
