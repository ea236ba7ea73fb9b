"""A report: the tables of the kinds asked for, over one period, from the sources
each kind is made from, with a word on anything that was left out and why."""

from __future__ import annotations

import os
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import get_args

from postwarden.policy.models import Policy
from postwarden.policy.models.reports import ReportKind
from postwarden.reports.builders import FROM_USAGE, Table, abuse_detection
from postwarden.reports.connections import (
    ConnectionCounts,
    connection_tables,
    count_connections,
)
from postwarden.reports.peaks import Budgets
from postwarden.reports.period import Period
from postwarden.reports.postfix_log import DeliveryLog, iter_deliveries
from postwarden.reports.progress import Progress, Silent
from postwarden.reports.shared import read_shared, totals
from postwarden.reports.usage import Raised, UsageTotals, read_events, read_totals

KINDS: tuple[str, ...] = get_args(ReportKind)
POSTFIX_LOG = "/var/log/postfix.log"
"""Postfix's maillog_file on the hosts (render/postfix.py)."""


class UnknownKind(ValueError):
    pass


@dataclass(frozen=True)
class UsageSource:
    """Where the usage rows and events come from: the host's own usage log, or the
    stream on the Redis store where those of every MTA sharing it meet."""

    path: str | None = None
    redis_url: str | None = None
    hosts: tuple[str, ...] = ()
    """Only these MTAs (the shared stream only); none: all of them."""

    def read(self, period: Period, events: bool, budgets: Budgets | None = None) -> UsageRead:
        """Raises UsageLogUnreadable or SharedUsageUnreadable."""
        if self.redis_url is not None:
            shared = read_shared(self.redis_url, period.start, period.end, self.hosts)
            notes = [f"usage rows of the MTAs {', '.join(sorted(shared.hosts)) or '(none)'}"]
            missing = sorted(set(self.hosts) - shared.hosts)
            if missing:
                notes.append(f"no usage rows from {', '.join(missing)} in this period")
            if shared.skipped:
                notes.append(f"{shared.skipped} record(s) of the usage stream could not be read")
            return UsageRead(
                totals(shared, period.start, period.end, budgets),
                shared.events,
                notes,
                frozenset(shared.hosts),
            )
        assert self.path is not None
        raised = read_events(self.path, period.start, period.end) if events else []
        return UsageRead(read_totals(self.path, period.start, period.end, budgets), raised)


@dataclass(frozen=True)
class UsageRead:
    totals: UsageTotals = field(default_factory=lambda: UsageTotals([], []))
    raised: list[Raised] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    hosts: frozenset[str] = frozenset()
    """The MTAs that wrote in the period (the shared stream only)."""


Gatherer = Callable[[frozenset[str]], tuple[ConnectionCounts, list[str]]]
"""The outbound SMTP counts of every MTA, given those known to have written usage
rows in the period, and notes on what they leave out (reports/gathered.py)."""


@dataclass(frozen=True)
class Report:
    period: Period
    tables: list[Table]
    notes: list[str] = field(default_factory=list)
    """What the sources held that the report could not use, and why."""


def check_kinds(kinds: Sequence[str]) -> list[str]:
    """The kinds in the order given, each once; UnknownKind names the ones that are not."""
    unknown = [kind for kind in kinds if kind not in KINDS]
    if unknown:
        raise UnknownKind(
            f"cannot make {', '.join(unknown)}: the report kinds are {', '.join(KINDS)}"
        )
    return list(dict.fromkeys(kinds))


def pool_transports(policy: Policy) -> dict[str, str]:
    """Postfix's transport (the syslog name of its log lines) -> the pool and address
    it sends from, as the connections report shows them."""
    from postwarden.render.postfix import list_transport_name, transport_name

    named: dict[str, str] = {}
    for pool_name, pool in policy.ip_pools.items():
        for member in pool.addresses:
            named[transport_name(pool_name, str(member.address))] = f"{pool_name} {member.address}"
        named[list_transport_name(pool_name)] = f"{pool_name} (lists)"
    return named


def _staged(shown: Progress, path: str) -> Callable[[int], None]:
    """A new stage of the progress for one log, sized when the log is opened."""
    try:
        size: int | None = os.stat(path).st_size
    except OSError:
        size = None
    shown.stage(f"reading {os.path.basename(path)}", size)
    return shown.update


def budgets_of(policy: Policy) -> Budgets:
    """The throttles each login's mail counts against, as the daemon sees them."""
    from postwarden.policyd.view import compile_view

    return Budgets(compile_view(policy))


def make_report(
    kinds: Sequence[str],
    period: Period,
    usage: UsageSource,
    postfix_logs: Sequence[str] = (POSTFIX_LOG,),
    transports: dict[str, str] | None = None,
    budgets: Budgets | None = None,
    progress: Progress | None = None,
    gatherer: Gatherer | None = None,
) -> Report:
    """Raises UsageLogUnreadable, SharedUsageUnreadable or PostfixLogUnreadable when a
    source the kinds need cannot be read. With ``gatherer``, the connections are every
    MTA's, from it; without, those of ``postfix_logs``."""
    shown = progress or Silent()
    kinds = check_kinds(kinds)
    tables: list[Table] = []
    read = UsageRead()
    gathering = gatherer is not None and "smtp_out_connections" in kinds
    if gathering or set(kinds) & {*FROM_USAGE, "abuse_detection"}:
        shown.stage("summing the usage log", None)
        read = usage.read(period, "abuse_detection" in kinds, budgets)
    notes = list(read.notes)
    for kind in kinds:
        if kind in FROM_USAGE:
            tables += FROM_USAGE[kind](read.totals)
        elif kind == "abuse_detection":
            tables += abuse_detection(read.raised)
        elif kind == "smtp_out_connections" and gatherer is not None:
            counts, said = gatherer(read.hosts)
            tables += connection_tables(counts, transports)
            notes += said
        elif kind == "smtp_out_connections":
            if usage.redis_url is not None:
                notes.append(
                    "outbound SMTP from this host's Postfix log only (the MTAs' logs stay "
                    "on each; a scheduled report adds them all up)"
                )
            counts, said = read_connections(postfix_logs, period, usage.hosts, shown)
            tables += connection_tables(counts, transports)
            notes += said
    return Report(period, tables, notes)


def read_connections(
    postfix_logs: Sequence[str],
    period: Period,
    hosts: Collection[str] = (),
    progress: Progress | None = None,
) -> tuple[ConnectionCounts, list[str]]:
    """The outbound SMTP counts of these logs in the period (of the syslog hosts named,
    when any are), and a note per kind of line skipped; raises PostfixLogUnreadable."""
    shown = progress or Silent()
    logs = [DeliveryLog() for _ in postfix_logs]
    deliveries = (
        delivery
        for path, log in zip(postfix_logs, logs, strict=True)
        for delivery in iter_deliveries(
            path, period.start, period.end, log=log, progress=_staged(shown, path)
        )
        if not hosts or delivery.host in hosts
    )
    counts = count_connections(deliveries)
    notes = [
        f"{path}: {count} line(s) skipped: {why}"
        for path, log in zip(postfix_logs, logs, strict=True)
        for why, count in sorted(log.skipped.items())
    ]
    return counts, notes
