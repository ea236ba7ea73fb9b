"""Problems found in a policy, and how they are shown: text for people, JSON for bots."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any, Literal

Severity = Literal["error", "warning"]
Path = tuple[str | int, ...]


@dataclass(frozen=True, order=True)
class Problem:
    """One finding with its exact place: file, 1-based line and column, dotted path."""

    file: str
    line: int
    column: int
    path: str
    message: str
    hint: str | None = None
    severity: Severity = "error"

    def text(self) -> str:
        where = f"{self.file}:{self.line}:{self.column}: "
        kind = "warning: " if self.severity == "warning" else ""
        path = f"{self.path}: " if self.path else ""
        hint = f" ({self.hint})" if self.hint else ""
        return f"{where}{kind}{path}{self.message}{hint}"


@dataclass(frozen=True)
class Finding:
    """A problem before it has a position: where in which document, and what."""

    path: Path
    message: str
    hint: str | None = None
    severity: Severity = "error"
    source: Literal["policy", "secrets", "settings"] = "policy"
    point_at: Literal["value", "key", "entry"] = "value"
    """value: the value node; key: the key node; entry: the key of the deepest entry found."""
    at: tuple[int, int] | None = None
    """A known 0-based (line, column), for problems found while reading the YAML itself."""


def dotted(path: Path) -> str:
    text = ""
    for step in path:
        if isinstance(step, int):
            text += f"[{step}]"
        else:
            name = str(step)
            # a key with a line break or space is shown quoted: the message stays one line
            if not name.isprintable() or " " in name:
                name = repr(name)
            text += f".{name}" if text else name
    return text


def sort_problems(problems: list[Problem]) -> list[Problem]:
    return sorted(problems, key=lambda p: (p.file, p.line, p.column, p.message))


def errors(problems: list[Problem]) -> list[Problem]:
    return [p for p in problems if p.severity == "error"]


def to_json(problems: list[Problem]) -> list[dict[str, Any]]:
    return [asdict(p) for p in problems]


def dumps(payload: Any) -> str:
    return json.dumps(payload, indent=2, sort_keys=False, ensure_ascii=False)
