"""How close each throttle came to its limit (reports/peaks.py), from a real usage log
written by the daemon's UsageLog and read by the report's own queries."""

from __future__ import annotations

from pathlib import Path

import pytest

from postwarden.policy.load import load_policy
from postwarden.policyd.decide import UsageRow
from postwarden.policyd.usage import UsageLog
from postwarden.reports.make import budgets_of
from postwarden.reports.peaks import busiest, step_for
from postwarden.reports.usage import read_totals

HOUR = 3600


@pytest.mark.parametrize(
    ("steps", "width", "expected"),
    [
        ([], 1, (0, 0)),
        ([(5, [3])], 1, (3, 5)),
        # a window two steps wide finds the pair, not the single busiest step
        ([(0, [4]), (1, [3]), (7, [5])], 2, (7, 0)),
        ([(0, [4]), (2, [3]), (7, [5])], 2, (5, 7)),
        # a tie keeps the earliest window
        ([(0, [2]), (10, [2])], 1, (2, 0)),
        # what a refused message takes away can leave a step at nothing
        ([(0, [0]), (1, [1])], 24, (1, 0)),
    ],
)
def test_the_busiest_window(
    steps: list[tuple[int, list[int]]], width: int, expected: tuple[int, int]
) -> None:
    assert busiest(steps, 0, width) == expected


@pytest.mark.parametrize(
    ("windows", "step"),
    [
        ([3600, 86400], 3600),
        ([600, 3600], 600),
        ([86400], 3600),  # one hour at most
        ([30], 60),  # a minute at least
        ([], 3600),
        ([5400, 3600], 1800),
    ],
)
def test_the_step_divides_every_window(windows: list[int], step: int) -> None:
    assert step_for(windows) == step


POLICY = """\
server:
  hostname: mail.example.com
  postmaster: ops@example.net
throttles:
  staff:
    messages: 3/h
  daily:
    recipients: 10/d
  shared:
    messages: 4/h
users:
  alice@example.com:
    name: Alice
    send_as: [news@example.org]
    throttle: daily
domains:
  example.com:
    throttle: staff
  example.org:
    shared_throttle: shared
"""


def test_peaks_from_a_usage_log(tmp_path: Path) -> None:
    """bob's own throttle counts his passed and held mail in one clock hour, not the
    refused; alice's daily one spans two hours; example.org's shared budget counts
    what alice sent as news@example.org, not her own domain's mail."""
    policy = tmp_path / "policy.yml"
    policy.write_text(POLICY, encoding="utf-8")
    loaded = load_policy(policy)
    base = 1_800_000_000 - 1_800_000_000 % 86400
    clock = [0.0]
    log = UsageLog(str(tmp_path / "usage.sqlite"), 90 * 86400, lambda: clock[0])
    sent = [
        # when (hours, minutes), login, sender, recipients, decision
        ((9, 10), "bob@example.com", "bob@example.com", 1, "DUNNO"),
        ((9, 20), "bob@example.com", "bob@example.com", 1, "HOLD for review"),
        ((9, 30), "bob@example.com", "bob@example.com", 1, "DEFER 4.7.1 limit"),
        ((10, 5), "bob@example.com", "bob@example.com", 1, "DUNNO"),
        ((9, 50), "alice@example.com", "alice@example.com", 4, "DUNNO"),
        ((10, 10), "alice@example.com", "news@example.org", 5, "DUNNO"),
        ((10, 15), "alice@example.com", "news@example.org", 2, "DUNNO"),
        ((11, 15), "alice@example.com", "news@example.org", 9, "REJECT 5.7.1 spam"),
        # carol sends only as another domain: no empty row under her own
        ((12, 0), "carol@example.com", "news@example.org", 1, "DUNNO"),
    ]
    for number, ((hours, minutes), login, sender, rcpts, decision) in enumerate(sent):
        clock[0] = base + hours * HOUR + minutes * 60
        log.add(UsageRow(login, sender, rcpts, 1000, "192.0.2.1", None, decision, f"Q{number}"))
        log.flush()
    log.close()

    totals = read_totals(
        str(tmp_path / "usage.sqlite"), base, base + 86400, budgets_of(loaded.policy)
    )
    assert totals.peaks is not None
    found = {
        (peak.limit.throttle, peak.limit.what): (peak.used, peak.subject, peak.start)
        for peak in totals.peaks
    }
    assert found == {
        ("staff", "messages"): (2, "bob@example.com", base + 9 * HOUR),
        ("daily", "recipients"): (11, "alice@example.com", base + 9 * HOUR),
        ("shared", "messages"): (2, "example.org", base + 10 * HOUR),
    }
    # and the usage tables put alice's send-as mail under the sender's domain
    by_domain = {(t.login, t.domain): (t.messages, t.refused) for t in totals.senders}
    assert by_domain == {
        ("bob@example.com", "example.com"): (2, 1),
        ("alice@example.com", "example.com"): (1, 0),
        ("alice@example.com", "example.org"): (2, 1),
        ("carol@example.com", "example.org"): (1, 0),
    }
