"""The reports, as tables: pure functions of the usage rows of a period."""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

from postwarden.reports.peaks import Peak
from postwarden.reports.usage import Raised, UsageTotals


@dataclass(frozen=True)
class Table:
    title: str
    columns: tuple[str, ...]
    rows: list[tuple[str | int | float, ...]] = field(default_factory=list)
    chart: str | None = None
    """The column a picture shows (bars per row, labelled by the first column); None
    for a table that is only read."""


def smtp_out_usage(totals: UsageTotals) -> list[Table]:
    """Per login and per sender domain: messages, recipients and bytes sent on, and
    the messages held (for a moderator) or refused (deferred or rejected, by a
    throttle or as spam)."""
    by_login: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0, 0])
    by_domain: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0, 0])
    for sent in totals.senders:
        numbers = (sent.messages, sent.recipients, sent.bytes, sent.held, sent.refused)
        for counts in (by_login[sent.login], by_domain[sent.domain or "<>"]):
            for slot, number in enumerate(numbers):
                counts[slot] += number
    columns = ("messages", "recipients", "bytes", "held", "refused")
    peaks = [] if totals.peaks is None else [throttle_peaks(totals.peaks)]
    return [
        Table(
            "Outbound mail by login",
            ("login", *columns),
            [(key, *counts) for key, counts in _busiest(by_login)],
            chart="messages",
        ),
        Table(
            "Outbound mail by sender domain",
            ("domain", *columns),
            [(key, *counts) for key, counts in _busiest(by_domain)],
            chart="messages",
        ),
        *peaks,
    ]


def throttle_peaks(peaks: list[Peak]) -> Table:
    """Each throttle's limits, fullest first, with the subject that came closest and
    when (reports/peaks.py says how a window is counted)."""
    ordered = sorted(peaks, key=lambda p: (-p.share, p.limit.throttle, p.limit.what))
    return Table(
        "Throttles at their peak",
        ("throttle", "limit", "peak", "% used", "by", "window from"),
        [
            (
                f"{peak.limit.throttle} ({peak.limit.what})",
                peak.limit.text,
                peak.used,
                round(100 * peak.share, 1),
                peak.subject,
                _when(peak.start) if peak.used else "",
            )
            for peak in ordered
        ],
        chart="% used",
    )


def outgoing_spam(totals: UsageTotals) -> list[Table]:
    """Per login: the messages rspamd acted on, by what became of them, and the
    highest score."""
    by_login: dict[str, list[float]] = defaultdict(lambda: [0, 0, 0, 0.0])
    for spam in totals.spam:
        counts = by_login[spam.login]
        counts[{"reject": 2, "quarantine": 1}.get(spam.action, 0)] += spam.messages
        counts[3] = max(counts[3], spam.highest)
    ordered = sorted(by_login.items(), key=lambda item: (-sum(item[1][:3]), item[0]))
    return [
        Table(
            "Outgoing spam by login",
            ("login", "marked", "held", "rejected", "highest score", "top symbols"),
            [
                (
                    login,
                    int(c[0]),
                    int(c[1]),
                    int(c[2]),
                    round(c[3], 2),
                    " ".join(
                        name for name, _ in totals.symbols.get(login, Counter()).most_common(3)
                    ),
                )
                for login, c in ordered
            ],
            chart="highest score",
        )
    ]


RULES = {
    "throttle.hit": "throttle hit",
    "abuse.internal_spammer": "same-size burst",
    "abuse.bad_smtp_session": "harvesting ban",
    "abuse.auth_failures": "failed-login ban",
    "abuse.compromised_login": "login suspended",
    "list.post_held": "list post held",
    "spam.outbound": "outgoing spam",
    "message.large": "large message",
    "ip.blacklisted": "pool address listed",
}
"""The events the abuse report counts, by the name an administrator knows the rule by."""
NAMED_AT_MOST = 3
"""Client addresses and logins named in one cell; the rest are counted."""


def abuse_detection(events: list[Raised]) -> list[Table]:
    """Which abuse rules tripped and how often, then who tripped them: the subject
    (login, client address, list, throttle) with the clients and logins involved."""
    by_rule: dict[str, list[Raised]] = defaultdict(list)
    by_subject: dict[tuple[str, str], list[Raised]] = defaultdict(list)
    for event in events:
        rule = RULES.get(event.kind)
        if rule is None:
            continue
        by_rule[rule].append(event)
        by_subject[(rule, event.subject)].append(event)
    rules = sorted(by_rule.items(), key=lambda item: (-len(item[1]), item[0]))
    subjects = sorted(by_subject.items(), key=lambda item: (-len(item[1]), item[0]))
    return [
        Table(
            "Abuse rules tripped",
            ("rule", "times", "subjects", "client addresses", "logins"),
            [
                (
                    rule,
                    len(raised),
                    len({event.subject for event in raised}),
                    len({event.client for event in raised if event.client}),
                    len({event.login for event in raised if event.login}),
                )
                for rule, raised in rules
            ],
            chart="times",
        ),
        Table(
            "Who tripped them",
            ("rule", "subject", "times", "first", "last", "client addresses", "logins"),
            [
                (
                    rule,
                    subject,
                    len(raised),
                    _when(raised[0].time),
                    _when(raised[-1].time),
                    _some(event.client for event in raised),
                    _some(event.login for event in raised),
                )
                for (rule, subject), raised in subjects
            ],
        ),
    ]


def _when(moment: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(moment))


def _some(values: Iterable[str]) -> str:
    """The first few distinct values, and how many more there were."""
    distinct = list(dict.fromkeys(value for value in values if value))
    shown = ", ".join(distinct[:NAMED_AT_MOST])
    more = len(distinct) - NAMED_AT_MOST
    return f"{shown} and {more} more" if more > 0 else shown


def _busiest(totals: dict[str, list[int]]) -> list[tuple[str, list[int]]]:
    return sorted(totals.items(), key=lambda item: (-item[1][0], -item[1][4], item[0]))


FROM_USAGE = {"smtp_out_usage": smtp_out_usage, "outgoing_spam": outgoing_spam}
"""Reports made from the usage rows; abuse_detection is made from the events."""
