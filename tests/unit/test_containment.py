"""What `account contain` picks from this host's queue: the suspended logins' mail
waiting to leave, found through the daemon's usage log (a real one)."""

from __future__ import annotations

from pathlib import Path

from postwarden.accounts.containment import kickable, logins_of, to_hold, waiting
from postwarden.moderation import parse_queue
from postwarden.policyd.decide import UsageRow
from postwarden.policyd.usage import UsageLog

QUEUE = """\
{"queue_name": "deferred", "queue_id": "4AAA1", "arrival_time": 1000, "sender": "bob@example.org"}
{"queue_name": "active", "queue_id": "4AAA2", "arrival_time": 1100, "sender": "info@example.com"}
{"queue_name": "hold", "queue_id": "4AAA3", "arrival_time": 1200, "sender": "bob@example.org"}
{"queue_name": "incoming", "queue_id": "4AAA4", "arrival_time": 1300, "sender": "carol@example.com"}
{"queue_name": "deferred", "queue_id": "4AAA5", "arrival_time": 1400, "sender": "x@remote.test"}
"""


def usage_log(path: Path, rows: list[tuple[float, str, str]]) -> str:
    """A usage log with (time, login, queue ID) rows, written by the daemon's own code."""
    now = [0.0]
    log = UsageLog(str(path), retention=86400 * 400, clock=lambda: now[0])
    for at, login, queue_id in rows:
        now[0] = at
        log.add(UsageRow(login, login, 1, 500, "192.0.2.1", None, "DUNNO", queue_id))
    log.flush()
    log.close()
    return str(path)


def test_only_mail_waiting_to_leave_is_picked() -> None:
    queued = waiting(parse_queue(QUEUE))
    assert queued == {"4AAA1": 1000.0, "4AAA2": 1100.0, "4AAA4": 1300.0, "4AAA5": 1400.0}


def test_a_suspended_logins_queued_mail_under_any_sender(tmp_path: Path) -> None:
    """alice sent 4AAA2 as info@ (her alias): the login, not the sender, decides."""
    log = usage_log(
        tmp_path / "usage.sqlite",
        [
            (500.0, "alice@example.com", "4OLD0"),
            # an older message under an ID Postfix has used again since: not bob's
            (700.0, "alice@example.com", "4AAA1"),
            (1000.5, "bob@example.org", "4AAA1"),
            (1099.0, "alice@example.com", "4AAA2"),
            (1300.2, "carol@example.com", "4AAA4"),
        ],
    )
    owners = logins_of(log, waiting(parse_queue(QUEUE)))
    assert owners == {
        "4AAA1": "bob@example.org",
        "4AAA2": "alice@example.com",
        "4AAA4": "carol@example.com",
    }
    assert to_hold(["alice@example.com", "bob@example.org"], owners) == {
        "alice@example.com": ["4AAA2"],
        "bob@example.org": ["4AAA1"],
    }
    assert to_hold([], owners) == {}
    assert logins_of(log, {}) == {}


def test_rows_older_than_the_oldest_queued_mail_are_not_read(tmp_path: Path) -> None:
    """A queue ID Postfix used again long ago belongs to another message."""
    log = usage_log(tmp_path / "usage.sqlite", [(100.0, "alice@example.com", "4AAA1")])
    assert logins_of(log, {"4AAA1": 1000.0}) == {}


def test_only_a_plain_login_is_handed_to_doveadm_kick() -> None:
    """It takes a mask: "*@example.com" would close every user's sessions."""
    assert kickable("bob@example.org")
    assert kickable("-bob@example.org")  # passed after "--": a login, not an option
    for mask in ("*@example.org", "b?b@example.org", "bob", "bob@example.org\n", "a%u@x.org"):
        assert not kickable(mask), mask
