"""A report: the tables of the kinds asked for, over one period, from the sources
each kind is made from, with a word on anything that was left out and why."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import get_args

from postwarden.policy.models.reports import ReportKind
from postwarden.reports.builders import FROM_USAGE, Table, abuse_detection
from postwarden.reports.period import Period
from postwarden.reports.usage import read_events, read_sent

KINDS: tuple[str, ...] = get_args(ReportKind)
MADE = ("smtp_out_usage", "outgoing_spam", "abuse_detection")
"""The kinds this version makes."""


class UnknownKind(ValueError):
    pass


@dataclass(frozen=True)
class Report:
    period: Period
    tables: list[Table]
    notes: list[str] = field(default_factory=list)
    """What the sources held that the report could not use, and why."""


def check_kinds(kinds: list[str]) -> list[str]:
    """The kinds in the order given, each once; UnknownKind names the ones that are not."""
    unknown = [kind for kind in kinds if kind not in MADE]
    if unknown:
        raise UnknownKind(
            f"cannot make {', '.join(unknown)}: the report kinds are {', '.join(MADE)}"
        )
    return list(dict.fromkeys(kinds))


def make_report(kinds: list[str], period: Period, usage_log: str) -> Report:
    """Raises UsageLogUnreadable when the usage log cannot be read."""
    kinds = check_kinds(kinds)
    tables: list[Table] = []
    sent = read_sent(usage_log, period.start, period.end) if set(kinds) & set(FROM_USAGE) else []
    for kind in kinds:
        if kind in FROM_USAGE:
            tables += FROM_USAGE[kind](sent)
        elif kind == "abuse_detection":
            tables += abuse_detection(read_events(usage_log, period.start, period.end))
    return Report(period, tables)
