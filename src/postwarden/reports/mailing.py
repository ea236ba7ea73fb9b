"""A report of the policy's `reports` section, mailed to its channels through the
notification relay: an HTML body with the same tables as text beside it."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

from postwarden.policy.models import Policy
from postwarden.policyd.notify import relay_message
from postwarden.policyd.resp import RespClient, RespError, reason
from postwarden.reports.connections import ConnectionCounts
from postwarden.reports.gathered import (
    WAIT_FOR_HOSTS,
    CannotGather,
    gather_counts,
    gathered_key,
    post_counts,
)
from postwarden.reports.html import as_html
from postwarden.reports.make import (
    POSTFIX_LOG,
    Gatherer,
    Report,
    UsageSource,
    budgets_of,
    make_report,
    pool_transports,
    read_connections,
)
from postwarden.reports.output import as_text
from postwarden.reports.period import Period
from postwarden.visible import visible

PERIODS = {"daily": 86400.0, "weekly": 7 * 86400.0, "monthly": 30 * 86400.0}
"""What each schedule reports on: the time since the timer last ran."""


class CannotMail(Exception):
    """The policy gives the report no way to reach its readers."""


def recipients(policy: Policy, name: str) -> list[str]:
    """Every address of the report's email channels, each once. The policy's checks
    refuse a report sent to a channel that is not email, or without a relay."""
    entry = policy.reports.get(name)
    if entry is None:
        known = ", ".join(policy.reports) or "none"
        raise CannotMail(f"the policy has no report {name!r} (its reports: {known})")
    if policy.server.notification_relay is None:
        raise CannotMail("reports are mailed through server.notification_relay, which is not set")
    addresses: list[str] = []
    for channel_name in entry.send_to:
        channel = policy.notifications.get(channel_name)
        if channel is None or channel.email is None:
            raise CannotMail(f"report {name!r}: channel {channel_name!r} is not an email channel")
        addresses += channel.email
    return list(dict.fromkeys(addresses))


def report_message(
    name: str, report: Report, host: str, sender: str, to: list[str], now: float | None = None
) -> EmailMessage:
    now = time.time() if now is None else now
    title = f"postwarden report {name} for {host}"
    period = report.period.describe()
    generated = time.strftime("%Y-%m-%d %H:%M %Z", time.localtime(now))
    message = EmailMessage()
    message["From"] = sender
    message["To"] = ", ".join(to)
    message["Subject"] = f"{title}: {period}"
    message["Date"] = formatdate(now)
    message["Message-ID"] = make_msgid(domain=host)
    message["Auto-Submitted"] = "auto-generated"
    notes = "".join(f"Note: {visible(note)}\n" for note in report.notes)
    message.set_content(f"{title}\n{period}\n\n{notes}{as_text(report.tables, width=100)}")
    message.add_alternative(as_html(report.tables, title, period, generated), subtype="html")
    return message


@dataclass(frozen=True)
class Mailed:
    report: Report
    to: list[str]
    by: str | None = None
    """Another MTA that had already mailed this period's report: nothing was sent."""


def mail_report(
    policy: Policy,
    name: str,
    usage: UsageSource,
    period: Period | None = None,
    postfix_logs: Sequence[str] = (POSTFIX_LOG,),
    now: float | None = None,
    me: str | None = None,
) -> Mailed:
    """Make the policy's report ``name`` and mail it. Without ``period``, the period is
    the schedule's, ending now; then, when the MTAs share a Redis store, each posts its
    outbound SMTP counts, the first of them to get there mails the report with every
    MTA's counts and the others do not (their timers fire together). ``me``: this
    MTA's name there [default: the host name]. Raises CannotMail, DeliveryFailed, or
    the readers' errors."""
    to = recipients(policy, name)
    entry = policy.reports[name]
    now = time.time() if now is None else now
    scheduled = period is None
    period = period or Period(now - PERIODS[entry.schedule], now)
    gatherer: Gatherer | None = None
    if scheduled and usage.redis_url is not None:
        me = me or socket.gethostname()
        holder, gatherer = _share(
            name,
            entry.schedule,
            list(entry.include),
            period,
            usage.redis_url,
            postfix_logs,
            now,
            me,
        )
        if holder is not None:
            return Mailed(Report(period, []), to, by=holder)
    report = make_report(
        list(entry.include),
        period,
        usage,
        postfix_logs,
        pool_transports(policy),
        budgets_of(policy),
        gatherer=gatherer,
    )
    relay = policy.server.notification_relay
    assert relay is not None  # recipients() refuses a policy without one
    sender = policy.server.notification_sender
    host = policy.server.hostname
    relay_message(relay, report_message(name, report, host, sender, to, now), sender, to, host)
    return Mailed(report, to)


CLAIMS = "postwarden:report-mailed:"
SLOTS = {"daily": "%Y-%m-%d", "weekly": "%G-W%V", "monthly": "%Y-%m"}
"""The period a scheduled report stands for, by the local time its timer fired."""


def _share(
    name: str,
    schedule: str,
    kinds: list[str],
    period: Period,
    url: str,
    postfix_logs: Sequence[str],
    now: float,
    me: str,
) -> tuple[str | None, Gatherer | None]:
    """Post this MTA's outbound SMTP counts when the report has them, then claim the
    period: the MTA holding it (None: this one), and how this one gathers every
    MTA's counts when it holds it. Raises CannotMail or PostfixLogUnreadable."""
    key = gathered_key(name, slot_of(schedule, now))
    connections = "smtp_out_connections" in kinds
    try:
        if connections:
            mine, _ = read_connections(postfix_logs, period)
            post_counts(url, key, me, mine, PERIODS[schedule])
    except CannotGather as error:
        raise CannotMail(f"cannot share this MTA's outbound SMTP counts: {error}") from None
    holder = claim_period(url, f"{CLAIMS}{name}:", schedule, now, me)
    if holder is not None or not connections:
        return holder, None

    def gather(hosts: frozenset[str]) -> tuple[ConnectionCounts, list[str]]:
        try:
            found = gather_counts(url, key, hosts | {me}, WAIT_FOR_HOSTS)
        except CannotGather as error:
            raise CannotMail(f"cannot gather the MTAs' outbound SMTP counts: {error}") from None
        return found.counts, found.notes(WAIT_FOR_HOSTS)

    return None, gather


def slot_of(schedule: str, now: float) -> str:
    return time.strftime(SLOTS[schedule], time.localtime(now))


def claim_period(
    url: str, prefix: str, schedule: str, now: float, me: str | None = None
) -> str | None:
    """Claim the period of a job on ``schedule`` that fired at ``now``, for this host:
    the MTAs sharing Redis fire their timers together, and one of them does the job.
    None when claimed here, else the host that holds it; raises CannotMail."""
    return claim(url, f"{prefix}{slot_of(schedule, now)}", PERIODS[schedule], me)


def claim(url: str, key: str, keep: float, me: str | None = None) -> str | None:
    """Take ``key`` for this host; None when taken, else the host that holds it.
    Raises CannotMail when Redis cannot be reached: without the claim, every MTA
    would mail the same report."""

    async def take() -> str | None:
        client = RespClient(url, timeout=5.0)
        try:
            if (
                await client.call("SET", key, me or socket.gethostname(), "NX", "EX", int(keep))
                is not None
            ):
                return None
            holder = await client.call("GET", key)
            return holder.decode() if isinstance(holder, bytes) else str(holder)
        except (RespError, OSError, ConnectionError, TimeoutError) as error:
            raise CannotMail(
                f"cannot tell whether another MTA mailed it: {reason(error)}"
            ) from None
        finally:
            await client.close()

    return asyncio.run(take())
