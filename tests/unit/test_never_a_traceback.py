"""Property: whatever is done to a good policy, postwarden answers with exit 0 or 1,
positioned problems, and never a traceback."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from postwarden.cli import app
from postwarden.policy.load import PolicyInvalid, load_policy
from postwarden.policy.problems import Problem
from tests.conftest import CONTRACT

runner = CliRunner()
EXAMPLE_TEXT = CONTRACT.read_text(encoding="utf-8")
EXAMPLE_LINES = EXAMPLE_TEXT.splitlines()
EXAMPLE_DATA: dict[str, Any] = yaml.safe_load(EXAMPLE_TEXT.replace("!secret ", ""))
TRICKY = [
    ":",
    ": ",
    "- ",
    "{",
    "}",
    "[",
    "]",
    "!secret",
    "!secret ",
    "!!binary",
    "!!python/object",
    "&a ",
    "*a",
    "*nope",
    "\t",
    "\x00",
    "\ufeff",
    '"',
    "'",
    "%YAML 1.1",
    "---",
    "...",
    "<<: *a",
    "? ",
    "|",
    ">",
    "#",
    "~",
    "null",
    "yes",
    "on",
    "0x",
    "1e999",
    "-.inf",
    "é",
    "💌",
    "\\",
    "${x}",
    "{{ x }}",
    "0o8",
    "_",
    "  ",
    "\r",
    "\u2028",
]
SETTINGS = settings(
    max_examples=int(__import__("os").environ.get("POSTWARDEN_FUZZ_EXAMPLES", "250")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def _check(policy: Path) -> None:
    result = runner.invoke(app, ["validate", str(policy), "--format", "json"])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    assert result.exit_code in (0, 1), result.output
    problems = _problems(policy)
    assert (result.exit_code == 1) == any(p.severity == "error" for p in problems)
    for problem in problems:
        assert problem.line >= 1
        assert problem.column >= 1
        assert problem.message


def _problems(policy: Path) -> list[Problem]:
    try:
        return load_policy(policy).warnings
    except PolicyInvalid as invalid:
        return invalid.problems


line_edits = st.one_of(
    st.tuples(st.just("delete"), st.integers(0, len(EXAMPLE_LINES) - 1)),
    st.tuples(st.just("duplicate"), st.integers(0, len(EXAMPLE_LINES) - 1)),
    st.tuples(
        st.just("insert"),
        st.integers(0, len(EXAMPLE_LINES) - 1),
        st.integers(0, 40),
        st.one_of(st.sampled_from(TRICKY), st.text(max_size=8)),
    ),
    st.tuples(st.just("indent"), st.integers(0, len(EXAMPLE_LINES) - 1), st.integers(-4, 4)),
)


def _apply(lines: list[str], edit: tuple[Any, ...]) -> list[str]:
    kind, index = edit[0], edit[1]
    lines = list(lines)
    if index >= len(lines):
        return lines
    if kind == "delete":
        del lines[index]
    elif kind == "duplicate":
        lines.insert(index, lines[index])
    elif kind == "insert":
        column = min(edit[2], len(lines[index]))
        lines[index] = lines[index][:column] + edit[3] + lines[index][column:]
    elif kind == "indent":
        shift = edit[2]
        lines[index] = (" " * shift + lines[index]) if shift > 0 else lines[index][-shift:]
    return lines


@SETTINGS
@given(edits=st.lists(line_edits, min_size=1, max_size=4))
def test_text_mutations(tmp_path: Path, edits: list[tuple[Any, ...]]) -> None:
    lines = EXAMPLE_LINES
    for edit in edits:
        lines = _apply(lines, edit)
    policy = tmp_path / "policy.yml"
    policy.write_text("\n".join(lines) + "\n", encoding="utf-8", errors="surrogatepass")
    _check(policy)


@SETTINGS
@given(data=st.binary(max_size=300))
def test_binary_junk(tmp_path: Path, data: bytes) -> None:
    policy = tmp_path / "policy.yml"
    policy.write_bytes(data)
    _check(policy)


values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**70), 2**70),
        st.floats(allow_nan=True, allow_infinity=True),
        st.text(max_size=20),
        st.sampled_from(["200/h", "50MiB", "10m", "2%", "a@example.com", "main", "defer"]),
    ),
    lambda children: st.one_of(
        st.lists(children, max_size=3), st.dictionaries(st.text(max_size=10), children, max_size=3)
    ),
    max_leaves=8,
)


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(node, dict):
        for key, value in node.items():
            found += _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found += _paths(value, (*prefix, index))
    return found


ALL_PATHS = _paths(EXAMPLE_DATA)[1:]


def _replace(data: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    copy: Any = dict(data) if isinstance(data, dict) else list(data)
    copy[path[0]] = _replace(copy[path[0]], path[1:], value)
    return copy


@SETTINGS
@given(path=st.sampled_from(ALL_PATHS), value=values)
def test_value_mutations(tmp_path: Path, path: tuple[Any, ...], value: Any) -> None:
    mutated = _replace(EXAMPLE_DATA, path, value)
    policy = tmp_path / "policy.yml"
    policy.write_text(yaml.safe_dump(mutated, allow_unicode=True), encoding="utf-8")
    _check(policy)
