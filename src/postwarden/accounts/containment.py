"""What a suspension does on each mail host, beyond what the daemon refuses: the
suspended logins' mail still in this host's queue goes to the hold queue, and their
open IMAP and POP3 sessions are closed.

The daemon runs unprivileged and does not touch Postfix's queue or Dovecot; a root
timer on every host runs ``postwarden account contain`` instead, with the
suspensions of the store all hosts share. Which login a queued message is from is
in this host's usage log (queue ID -> login): Postfix's queue knows the envelope
sender only, and a login may send under several addresses.
"""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass

from postwarden.moderation import parse_queue

WAITING = frozenset({"incoming", "active", "deferred"})
"""The queues a message waits in to leave; "hold" is where it is put."""
ARRIVAL_SLACK = 60.0
"""The daemon's usage row is written at END-OF-MESSAGE, a moment before or after
Postfix stamps the queue file's arrival time."""


@dataclass(frozen=True)
class Contained:
    held: dict[str, list[str]]
    """Login -> the queue IDs of its mail put on hold now."""
    kicked: list[str]
    """The logins that had open sessions, closed now."""


def waiting(queue: list[dict[str, object]]) -> dict[str, float]:
    """Queue ID -> arrival time of the messages waiting to leave."""
    return {
        str(entry["queue_id"]): float(str(entry.get("arrival_time", 0)))
        for entry in queue
        if entry.get("queue_name") in WAITING and entry.get("queue_id")
    }


def logins_of(usage_log: str, queued: dict[str, float]) -> dict[str, str]:
    """Queue ID -> login, from the usage log, for the queued messages it has a row of.
    Each queue ID is matched only to a row written within ARRIVAL_SLACK of that
    message's own arrival: Postfix reuses short queue IDs, and an older row under the
    same ID was another message."""
    found: dict[str, str] = {}
    if not queued:
        return found
    db = sqlite3.connect(f"file:{usage_log}?mode=ro", uri=True, timeout=5.0)
    try:
        for queue_id, arrival in queued.items():
            row = db.execute(
                "SELECT login FROM usage WHERE time >= ? AND time <= ? AND queue_id = ? "
                "ORDER BY time DESC LIMIT 1",
                (arrival - ARRIVAL_SLACK, arrival + ARRIVAL_SLACK, queue_id),
            ).fetchone()
            if row is not None and row[0]:
                found[queue_id] = str(row[0])
    finally:
        db.close()
    return found


def to_hold(suspended: Iterable[str], owners: dict[str, str]) -> dict[str, list[str]]:
    """Login -> its queued messages, for the suspended logins."""
    logins = set(suspended)
    held: dict[str, list[str]] = {}
    for queue_id, login in sorted(owners.items()):
        if login in logins:
            held.setdefault(login, []).append(queue_id)
    return held


def kickable(login: str) -> bool:
    """`doveadm kick` takes a mask: a login with a wildcard would close the sessions of
    every user it matches. The store's names are not trusted to be plain."""
    return "@" in login and not any(c in login for c in "*?%\\") and login.isprintable()


def _run(*command: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, input=stdin, capture_output=True, text=True, check=False)


class ContainFailed(Exception):
    """A command of the host failed; its words say why."""

    def __init__(self, reason: str, kicked: list[str]) -> None:
        super().__init__(reason)
        self.kicked = kicked
        """The logins whose sessions were closed before it failed."""


def contain(suspended: list[str], usage_log: str) -> Contained:
    """Close the suspended logins' open sessions, and hold their queued mail. The
    sessions are closed first: a queue or a log that cannot be read must not keep
    them open."""
    if not suspended:
        return Contained({}, [])
    kicked = []
    doveadm = shutil.which("doveadm")
    if doveadm is not None:
        for login in filter(kickable, suspended):
            # exit 68 (EX_NOUSER) is "no session was open": nothing to close
            if _run(doveadm, "kick", "--", login).returncode == 0:
                kicked.append(login)
    listed = _run("postqueue", "-j")
    if listed.returncode != 0:
        raise ContainFailed(f"postqueue -j: {listed.stderr.strip() or listed.returncode}", kicked)
    queued = waiting(parse_queue(listed.stdout))
    try:
        owners = logins_of(usage_log, queued)
    except sqlite3.Error as error:
        raise ContainFailed(f"{usage_log}: {error}", kicked) from None
    held = to_hold(suspended, owners)
    ids = [queue_id for ids in held.values() for queue_id in ids]
    if ids:
        put = _run("postsuper", "-h", "-", stdin="\n".join(ids) + "\n")
        if put.returncode != 0:
            raise ContainFailed(f"postsuper -h: {put.stderr.strip() or put.returncode}", kicked)
    return Contained(held, kicked)
