"""Held mail (list posts awaiting a moderator, throttled mail, outbound spam) in
Postfix's hold queue: list it, release it, delete it.

Postfix keeps no reason with a held message; postwarden-policyd records one for each
hold it decides or hears of from rspamd (the ``holds`` table of its usage log), and
the list shows it with the login or sender it was held for."""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from email.parser import BytesHeaderParser
from email.policy import default

from postwarden.reports.usage import read_holds
from postwarden.visible import visible


@dataclass(frozen=True)
class Held:
    queue_id: str
    arrival: int
    sender: str
    recipients: tuple[str, ...]
    size: int
    subject: str
    header_from: str
    reason: str = ""
    """Why: the daemon's words ("post to LIST awaits a moderator", a throttle's,
    "spam (rspamd score S)"); empty when the daemon did not hold it."""
    held_for: str = ""
    """The login, or for mail without one the envelope sender, the hold concerns."""


def parse_queue(output: str) -> list[dict[str, object]]:
    """postqueue -j prints one JSON object per line."""
    return [json.loads(line) for line in output.splitlines() if line.strip()]


def held_entries(queue: list[dict[str, object]]) -> list[dict[str, object]]:
    return [entry for entry in queue if entry.get("queue_name") == "hold"]


def _run(*command: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(command, capture_output=True, check=False)


def _headers(queue_id: str) -> tuple[str, str]:
    shown = _run("postcat", "-h", "-q", queue_id).stdout
    headers = BytesHeaderParser(policy=default).parsebytes(shown)
    return str(headers.get("Subject", "")), str(headers.get("From", ""))


def list_held(usage_log: str) -> list[Held]:
    queue = parse_queue(_run("postqueue", "-j").stdout.decode("utf-8", "replace"))
    entries = held_entries(queue)
    reasons = read_holds(usage_log, [str(entry["queue_id"]) for entry in entries])
    held = []
    for entry in entries:
        queue_id = str(entry["queue_id"])
        subject, header_from = _headers(queue_id)
        reason, login, sender = reasons.get(queue_id, ("", "", ""))
        recipients = entry.get("recipients") or []
        assert isinstance(recipients, list)
        held.append(
            Held(
                queue_id,
                int(str(entry.get("arrival_time", 0))),
                str(entry.get("sender", "")),
                tuple(str(r.get("address", "")) for r in recipients if isinstance(r, dict)),
                int(str(entry.get("message_size", 0))),
                subject,
                header_from,
                reason,
                login or sender,
            )
        )
    return held


class NotHeld(Exception):
    """A queue ID that is not in the hold queue."""


def _check_held(queue_ids: list[str]) -> None:
    held = {
        h["queue_id"]
        for h in held_entries(
            parse_queue(_run("postqueue", "-j").stdout.decode("utf-8", "replace"))
        )
    }
    missing = [q for q in queue_ids if q not in held]
    if missing:
        raise NotHeld(", ".join(missing))


def release(queue_ids: list[str]) -> None:
    """Back to the queue and out now. A released message does not pass the milter
    again, so rspamd is not asked twice."""
    _check_held(queue_ids)
    for queue_id in queue_ids:
        _run("postsuper", "-H", queue_id)
        _run("postqueue", "-i", queue_id)


def delete(queue_ids: list[str]) -> None:
    _check_held(queue_ids)
    for queue_id in queue_ids:
        _run("postsuper", "-d", queue_id, "hold")


def held_line(message: Held) -> str:
    """One held message for a person: everything that came from outside (sender,
    recipients, subject, and the reason and login that may hold them) made visible."""
    why = (
        f"  held: {visible(message.reason)} (for {visible(message.held_for) or '<>'})"
        if message.reason
        else "  held: not by postwarden (no reason recorded)"
    )
    recipients = ", ".join(visible(r) for r in message.recipients)
    return (
        f"{visible(message.queue_id)}  from {visible(message.sender) or '<>'} to "
        f"{recipients}  {message.size} bytes  {visible(repr(message.subject))}{why}"
    )
