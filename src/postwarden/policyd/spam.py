"""rspamd's verdicts on outbound mail, as our rule in rspamd posts them
(render/templates/rspamd/rspamd.lua.j2).

rspamd scans a message after postwarden-policyd has answered its END-OF-MESSAGE
request: Postfix asks the policy service before the milter's verdict. So the usage
row written then says the message passed; a verdict that rejects or holds it arrives
a moment later, names the queue ID, and corrects that row (usage.py).

Only outbound mail is posted: a login's, or a mynetworks client's (the rule decides
that itself). No I/O here.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

ACTIONS = {
    "reject": "REJECT",
    "quarantine": "HOLD",
    "add header": "MARK",
    "rewrite subject": "MARK",
}
"""rspamd's action -> what became of the message: refused, held, or sent marked."""
SYMBOLS_SENT = 5
"""The heaviest symbols of a verdict that the rule sends and the daemon keeps."""
SYMBOL = re.compile(r"[A-Z0-9_]{1,64}")
"""rspamd's symbol names; anything else in the list is dropped, not kept."""


@dataclass(frozen=True)
class SpamVerdict:
    action: str
    """rspamd's name for it: reject, quarantine, add header, rewrite subject."""
    score: float
    queue_id: str
    login: str
    sender: str
    client: str
    recipients: int
    symbols: tuple[str, ...] = ()
    """The rspamd symbols that weighed most, heaviest first."""

    @property
    def outcome(self) -> str:
        return ACTIONS[self.action]

    def describe(self) -> str:
        what = {"REJECT": "refused", "HOLD": "held", "MARK": "marked as spam"}[self.outcome]
        return (
            f"outbound mail from {self.sender or '<>'} {what} by rspamd "
            f"(action {self.action}, score {self.score:.2f}, "
            f"{self.recipients} recipient{'s' if self.recipients != 1 else ''}, "
            f"queue id {self.queue_id or 'unknown'})"
        )


def _text(value: object, limit: int = 320) -> str:
    """One short line: whatever a field holds, it cannot break a log line."""
    if not isinstance(value, str):
        return ""
    return "".join(c for c in value[:limit] if c.isprintable())


def parse_verdict(body: dict[str, object]) -> SpamVerdict | None:
    """The verdict rspamd posted, or None when it does not act on the message or is
    not one rspamd sends."""
    action = body.get("action")
    if not isinstance(action, str) or action not in ACTIONS:
        return None
    score = body.get("score")
    if isinstance(score, bool) or not isinstance(score, int | float) or not math.isfinite(score):
        return None
    recipients = body.get("rcpt")
    symbols = body.get("symbols")
    return SpamVerdict(
        action=action,
        score=float(score),
        queue_id=_text(body.get("qid"), 64),
        login=_text(body.get("user")).lower(),
        sender=_text(body.get("from")).lower(),
        client=_text(body.get("ip"), 64),
        recipients=recipients if type(recipients) is int and recipients >= 0 else 0,
        symbols=tuple(
            name
            for name in (symbols if isinstance(symbols, list) else [])[:SYMBOLS_SENT]
            if isinstance(name, str) and SYMBOL.fullmatch(name)
        ),
    )
