"""What rendering would change on a host: compare a rendered tree with a directory
that mirrors the host (a previous render, or a copy of the host's /etc).

Secret files are compared but their content is never shown.
"""

from __future__ import annotations

import difflib
import json
import stat
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

from postwarden.policy.models import Policy
from postwarden.render.templating import HEADER_LINES
from postwarden.render.tree import RenderedTree
from postwarden.visible import visible, visible_in_markdown

Status = Literal["added", "changed", "removed", "unchanged"]
MANAGED_MARK = HEADER_LINES[0]
DEFAULT_MAX_SHARE = 0.3
MIN_FILES_FOR_SAFETY = 5


@dataclass(frozen=True)
class FileChange:
    path: str
    status: Status
    diff: str = ""
    secret: bool = False
    mode_change: str = ""


@dataclass(frozen=True)
class Suspended:
    login: str
    since: int
    in_policy: bool
    """Whether the planned policy still has this user."""


@dataclass(frozen=True)
class PoolOverride:
    address: str
    pool: str
    state: str
    """The address's state on the host now, set with `postwarden pool`."""
    planned: str | None
    """Its state in the planned policy; None when the planned policy drops it."""


@dataclass(frozen=True)
class RuntimeState:
    """Run-time state on the hosts, which a deploy keeps as it is: suspended logins and
    pool addresses whose state an operator changed. Changed with `postwarden account`
    and `postwarden pool`, never by a plan."""

    source: str
    """The daemon it was read from (HOST:PORT)."""
    suspended: list[Suspended]
    pools: list[PoolOverride]

    def lines(self) -> list[str]:
        found = []
        for entry in self.suspended:
            since = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(entry.since))
            gone = "" if entry.in_policy else "; the planned policy no longer has this user"
            found.append(
                f"{visible(entry.login)} is suspended since {since} "
                f"(postwarden account release){gone}"
            )
        for pool in self.pools:
            planned = (
                f"the planned policy says {pool.planned}"
                if pool.planned is not None
                else "the planned policy no longer has it"
            )
            found.append(
                f"pool address {visible(pool.address)} ({visible(pool.pool)}) is "
                f"{visible(pool.state)}, {planned} (postwarden pool)"
            )
        return found

    def summary(self) -> str:
        return f"run-time state at {self.source}, kept by this deploy"


def runtime_state(source: str, suspensions: object, pools: object, planned: Policy) -> RuntimeState:
    """The state a daemon's admin API reports (GET /suspensions, GET /pools), set
    against the planned policy. Raises ValueError on an answer of another shape."""
    if not isinstance(suspensions, dict) or not isinstance(pools, dict):
        raise ValueError("not the admin API's answer")
    suspended = [
        Suspended(str(entry["login"]), int(entry["since"]), str(entry["login"]) in planned.users)
        for entry in suspensions.get("suspensions", [])
    ]
    states = {
        member.address: member.state
        for pool in planned.ip_pools.values()
        for member in pool.addresses
    }
    overrides = [
        PoolOverride(str(address), str(info["pool"]), str(info["state"]), states.get(address))
        for address, info in sorted(pools.items())
        if info["state"] != states.get(address)
    ]
    return RuntimeState(source, suspended, overrides)


@dataclass(frozen=True)
class Plan:
    changes: list[FileChange]
    runtime: RuntimeState | None = None

    def count(self, status: Status) -> int:
        return sum(1 for c in self.changes if c.status == status)

    @property
    def existing(self) -> int:
        return sum(1 for c in self.changes if c.status != "added")

    @property
    def touched_existing(self) -> int:
        return self.count("changed") + self.count("removed")

    @property
    def has_changes(self) -> bool:
        return any(c.status != "unchanged" for c in self.changes)

    def too_large(self, max_share: float) -> bool:
        """octodns-style safety: refuse to rewrite most of a running host at once."""
        touched = self.touched_existing
        return touched >= MIN_FILES_FOR_SAFETY and touched > max_share * self.existing

    def summary(self) -> str:
        return (
            f"{self.count('added')} to add, {self.count('changed')} to change, "
            f"{self.count('removed')} to remove, {self.count('unchanged')} unchanged"
        )


NOT_TEXT = "(the file on the host is not UTF-8 text: no diff shown)\n"


def _read(path: Path) -> str | None:
    """The file's text; None when it cannot be read at all."""
    try:
        data = path.read_bytes()
    except OSError:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return NOT_TEXT


def _managed(path: Path) -> bool:
    text = _read(path)
    return text is not None and MANAGED_MARK in text.split("\n", 2)[0]


def make_plan(tree: RenderedTree, against: Path) -> Plan:
    changes = []
    for host_path in sorted(tree):
        rendered = tree[host_path]
        current_path = against / host_path.lstrip("/")
        current = _read(current_path) if current_path.is_file() else None
        if current is None:
            changes.append(FileChange(host_path, "added", secret=rendered.secret))
            continue
        mode = stat.S_IMODE(current_path.stat().st_mode)
        mode_change = f"{mode:04o} -> {rendered.mode:04o}" if mode != rendered.mode else ""
        if current == rendered.content and not mode_change:
            changes.append(FileChange(host_path, "unchanged", secret=rendered.secret))
            continue
        if rendered.secret:
            diff = ""
        elif current == NOT_TEXT:
            diff = NOT_TEXT
        else:
            diff = _diff(host_path, current, rendered.content)
        changes.append(FileChange(host_path, "changed", diff, rendered.secret, mode_change))
    if against.is_dir():
        for path in sorted(p for p in against.rglob("*") if p.is_file()):
            host_path = "/" + path.relative_to(against).as_posix()
            if host_path not in tree and _managed(path):
                changes.append(FileChange(host_path, "removed"))
    return Plan(changes)


def _diff(host_path: str, before: str, after: str) -> str:
    return "".join(
        difflib.unified_diff(
            before.splitlines(keepends=True),
            after.splitlines(keepends=True),
            fromfile=f"a{host_path}",
            tofile=f"b{host_path}",
        )
    )


_MARKS = {"added": "+", "changed": "~", "removed": "-", "unchanged": " "}


def as_text(plan: Plan) -> str:
    lines = []
    for change in plan.changes:
        if change.status == "unchanged":
            continue
        note = _note(change)
        lines.append(f"{_MARKS[change.status]} {change.path}{note}")
        if change.diff:
            lines.append(change.diff.rstrip("\n"))
    lines.append(f"Plan: {plan.summary()}.")
    if plan.runtime is not None:
        state = plan.runtime.lines()
        lines.append(f"{plan.runtime.summary().capitalize()}:" + ("" if state else " none."))
        lines += [f"  {line}" for line in state]
    return "\n".join(lines) + "\n"


def _note(change: FileChange) -> str:
    notes = []
    if change.mode_change:
        notes.append(f"mode {change.mode_change}")
    if change.secret and change.status != "removed":
        notes.append("secret: content not shown")
    return f" ({'; '.join(notes)})" if notes else ""


def as_markdown(plan: Plan) -> str:
    lines = ["### postwarden plan", "", f"**{plan.summary()}**", ""]
    shown = [c for c in plan.changes if c.status != "unchanged"]
    if shown:
        lines += ["| | file | |", "|---|---|---|"]
        lines += [f"| {c.status} | `{c.path}` | {_note(c).strip(' ()')} |" for c in shown]
        lines.append("")
    for change in shown:
        if change.diff:
            lines += [
                f"<details><summary><code>{change.path}</code></summary>",
                "",
                "```diff",
                change.diff.rstrip("\n"),
                "```",
                "</details>",
                "",
            ]
    if plan.runtime is not None:
        state = plan.runtime.lines()
        lines += [f"**{plan.runtime.summary().capitalize()}:**" + ("" if state else " none."), ""]
        lines += [f"- {visible_in_markdown(line)}" for line in state]
        if state:
            lines.append("")
    return "\n".join(lines) + "\n"


def as_json(plan: Plan) -> str:
    payload: dict[str, object] = {
        "summary": {s: plan.count(s) for s in ("added", "changed", "removed", "unchanged")},
        "changes": [asdict(c) for c in plan.changes if c.status != "unchanged"],
    }
    if plan.runtime is not None:
        payload["runtime"] = asdict(plan.runtime)
    return json.dumps(payload, indent=2) + "\n"
