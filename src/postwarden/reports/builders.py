"""The reports, as tables: pure functions of the usage rows of a period."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from postwarden.reports.usage import Sent

BUILT = ("smtp_out_usage", "outgoing_spam")
"""The report kinds this version makes; the policy names two more, built later."""


@dataclass(frozen=True)
class Table:
    title: str
    columns: tuple[str, ...]
    rows: list[tuple[str | int | float, ...]] = field(default_factory=list)


def _refused(row: Sent) -> bool:
    return row.decision.startswith(("REJECT", "DEFER"))


def smtp_out_usage(rows: list[Sent]) -> list[Table]:
    """Per login and per sender domain: messages, recipients and bytes sent on, and
    the messages held (for a moderator) or refused (deferred or rejected, by a
    throttle or as spam)."""
    by_login: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0, 0])
    by_domain: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0, 0])
    for row in rows:
        for key, totals in (
            (row.login, by_login),
            (row.sender.rpartition("@")[2] or "<>", by_domain),
        ):
            counts = totals[key]
            if _refused(row):
                counts[4] += 1
            elif row.decision.startswith("HOLD"):
                counts[3] += 1
            else:
                counts[0] += 1
                counts[1] += row.recipients
                counts[2] += row.size
    columns = ("messages", "recipients", "bytes", "held", "refused")
    return [
        Table(
            "Outbound mail by login",
            ("login", *columns),
            [(key, *counts) for key, counts in _busiest(by_login)],
        ),
        Table(
            "Outbound mail by sender domain",
            ("domain", *columns),
            [(key, *counts) for key, counts in _busiest(by_domain)],
        ),
    ]


def outgoing_spam(rows: list[Sent]) -> list[Table]:
    """Per login: the messages rspamd acted on, by what became of them, and the
    highest score."""
    by_login: dict[str, list[float]] = defaultdict(lambda: [0, 0, 0, 0.0])
    for row in rows:
        if row.spam_action is None:
            continue
        counts = by_login[row.login]
        slot = {"reject": 2, "quarantine": 1}.get(row.spam_action, 0)
        counts[slot] += 1
        counts[3] = max(counts[3], row.spam_score or 0.0)
    ordered = sorted(by_login.items(), key=lambda item: (-sum(item[1][:3]), item[0]))
    return [
        Table(
            "Outgoing spam by login",
            ("login", "marked", "held", "rejected", "highest score"),
            [(login, int(c[0]), int(c[1]), int(c[2]), round(c[3], 2)) for login, c in ordered],
        )
    ]


def _busiest(totals: dict[str, list[int]]) -> list[tuple[str, list[int]]]:
    return sorted(totals.items(), key=lambda item: (-item[1][0], -item[1][4], item[0]))


BUILDERS = {"smtp_out_usage": smtp_out_usage, "outgoing_spam": outgoing_spam}
