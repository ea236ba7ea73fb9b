"""The policy's scheduled jobs: a systemd timer per entry of `reports` and the
oneshot service it starts, which makes the report and mails it (`report --mail`);
and, with `password_policy.audit`, the password audit on its schedule
(`audit passwords --notify`).

Report names are policy names (lower-case letters, digits, - and _), so they are
safe in a unit's file name and on its command line; the guard checks again.
"""

from __future__ import annotations

from postwarden.policy.models import Policy
from postwarden.render.guard import UnsafeValue
from postwarden.render.policyd import DAEMON_GROUP, DAEMON_USER
from postwarden.render.templating import render_template
from postwarden.render.tree import RenderedFile

UNIT_DIR = "/etc/systemd/system"
UNIT_PREFIX = "postwarden-report-"
COMMAND = "/usr/local/sbin/postwarden"
"""The policyd role links this to its build of postwarden."""
CALENDAR = {"daily": "daily", "weekly": "weekly", "monthly": "monthly"}
"""systemd's calendar events: midnight, Monday midnight, the first of the month."""
LOG_GROUP = "adm"
"""Postfix's log is readable by this group (smtp_out_connections reads it)."""
AUDIT_UNIT = "postwarden-audit-passwords"
HASHES_GROUP = "dovecot"
"""Dovecot's passdb, with the users' hashes, is readable by this group (render/dovecot.py)."""


def unit_name(report: str) -> str:
    if not report.replace("-", "").replace("_", "").isalnum() or not report.isascii():
        raise UnsafeValue(f"reports.{report}", "is not a unit name (letters, digits, - and _ only)")
    return UNIT_PREFIX + report


def render_reports(policy: Policy, source: str) -> list[RenderedFile]:
    files: list[RenderedFile] = []
    for name, entry in policy.reports.items():
        unit = unit_name(name)
        values = {
            "report": name,
            "unit": unit,
            "command": COMMAND,
            "user": DAEMON_USER,
            "group": DAEMON_GROUP,
            "log_group": LOG_GROUP,
            "calendar": CALENDAR[entry.schedule],
        }
        files.append(
            RenderedFile(
                f"{UNIT_DIR}/{unit}.service",
                render_template("reports/report.service.j2", source, **values),
                "postwarden-policyd",
            )
        )
        files.append(
            RenderedFile(
                f"{UNIT_DIR}/{unit}.timer",
                render_template("reports/report.timer.j2", source, **values),
                "postwarden-policyd",
            )
        )
    audit = policy.password_policy.audit
    if audit is not None:
        values = {
            "unit": AUDIT_UNIT,
            "command": COMMAND,
            "user": DAEMON_USER,
            "group": DAEMON_GROUP,
            "hashes_group": HASHES_GROUP,
            "calendar": CALENDAR[audit.schedule],
        }
        for kind in ("service", "timer"):
            files.append(
                RenderedFile(
                    f"{UNIT_DIR}/{AUDIT_UNIT}.{kind}",
                    render_template(f"reports/audit.{kind}.j2", source, **values),
                    "postwarden-policyd",
                )
            )
    return files


def timers(policy: Policy) -> list[str]:
    """The timer units the roles enable; any other postwarden-report or -audit timer
    on the host is stale."""
    found = [f"{unit_name(name)}.timer" for name in policy.reports]
    if policy.password_policy.audit is not None:
        found.append(f"{AUDIT_UNIT}.timer")
    return found
