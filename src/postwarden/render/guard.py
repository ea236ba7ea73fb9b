"""The renderer's own guard: a value is written into a config file only where it cannot
change the file's structure.

The policy models already refuse such values with a positioned error; this is
the second line, at the place each value lands, so that a model that misses a
case (or a caller that skips the models) still cannot add a line, a field or a
directive to a file. A refused value stops the render before anything is
written: ``UnsafeValue`` names the file and the place, never the value itself
(it may be a secret).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from postwarden.policy.units import CONTROL

_WHITESPACE = re.compile(r"\s")


class UnsafeValue(ValueError):
    """A value would change the structure of the file it lands in."""

    def __init__(self, where: str, why: str) -> None:
        self.where = where
        self.why = why
        super().__init__(f"{where}: refused to render a value that {why}")


def one_line(value: str, where: str) -> str:
    """Any value on a line of its own: no line break or other control character."""
    if CONTROL.search(value):
        raise UnsafeValue(where, "holds a line break or control character")
    return value


def field(value: str, where: str, separators: str = "") -> str:
    """A field between separators: one line, no whitespace, none of ``separators``."""
    one_line(value, where)
    if _WHITESPACE.search(value):
        raise UnsafeValue(where, "holds whitespace, which ends the field")
    found = [c for c in separators if c in value]
    if found:
        raise UnsafeValue(where, f"holds {found[0]!r}, which separates fields there")
    return value


def table_line(key: str, value: str, where: str) -> str:
    """A Postfix lookup table source line: KEY <tab> VALUE."""
    field(key, f"{where} (key)")
    if key.startswith("#"):
        raise UnsafeValue(f"{where} (key)", "starts with '#', which makes the line a comment")
    one_line(value, f"{where} (value)")
    if not value.strip():
        raise UnsafeValue(f"{where} (value)", "is empty")
    return f"{key}\t{value}\n"


def table(entries: Iterable[tuple[str, str]], where: str) -> str:
    return "".join(table_line(key, value, where) for key, value in entries)


_ALIAS_SYNTAX = ("|", "/", ":include:", "#", '"')
"""aliases(5) reads a target starting with these as a command, a file, an include, a
comment or a quoted name."""


def alias_line(name: str, targets: list[str], where: str) -> str:
    """A local alias: NAME: TARGET, TARGET (aliases(5))."""
    field(name, f"{where} (name)", ":,#")
    if not targets:
        raise UnsafeValue(f"{where} ({name})", "has no targets")
    for target in targets:
        field(target, f"{where} ({name})", ":,")
        if target.startswith(_ALIAS_SYNTAX):
            raise UnsafeValue(
                f"{where} ({name})", "starts a target with a command, file or include"
            )
    return f"{name}: {', '.join(targets)}\n"


def passwd_line(fields: list[str], where: str, extra: Iterable[str] = ()) -> str:
    """A Dovecot passwd-file line: fields separated by ':', then extra fields
    (name=value) separated by spaces, which may hold ':' themselves."""
    line = ":".join(field(f, where, ":") if f else f for f in fields)
    return line + " ".join(field(e, f"{where} (extra field)") for e in extra) + "\n"


class Continued(str):
    """A value that continues on further lines, each indented, built by
    ``continued``: the one value a template may print across lines."""


def continued(values: Iterable[str], indent: str, where: str) -> Continued:
    """Values on lines of their own, the second and later ones indented (fail2ban)."""
    return Continued(("\n" + indent).join(one_line(v, where) for v in values))


def words(values: Iterable[str], where: str, separators: str = "") -> list[str]:
    """Values written side by side, separated by spaces or commas."""
    return [field(value, where, separators) for value in values]
