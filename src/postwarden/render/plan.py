"""What rendering would change on a host: compare a rendered tree with a directory
that mirrors the host (a previous render, or a copy of the host's /etc).

Secret files are compared but their content is never shown.
"""

from __future__ import annotations

import difflib
import json
import stat
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

from postwarden.render.templating import HEADER_LINES
from postwarden.render.tree import RenderedTree

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
class Plan:
    changes: list[FileChange]

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
    return "\n".join(lines) + "\n"


def as_json(plan: Plan) -> str:
    payload = {
        "summary": {s: plan.count(s) for s in ("added", "changed", "removed", "unchanged")},
        "changes": [asdict(c) for c in plan.changes if c.status != "unchanged"],
    }
    return json.dumps(payload, indent=2) + "\n"
