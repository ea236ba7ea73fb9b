"""Every broken policy in tests/fixtures/invalid/ fails with exactly the error it expects.

Each fixture has one defect. Its first lines name the expected error:

    # expect: LINE:COL: dotted.path: message (hint)

and, when the defect is in the secrets file, a sibling NAME.secrets.yml holds it
and the expectation names that file: ``# expect-in: secrets``. The test compares
the whole line, so a moved position or a changed message fails it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from postwarden.policy.load import PolicyInvalid, load_policy
from tests.conftest import FIXTURES

INVALID = FIXTURES / "invalid"
CASES = sorted(INVALID.glob("*.yml"))
CASES = [c for c in CASES if not c.name.endswith(".secrets.yml")]


def _expectations(path: Path) -> tuple[list[str], str]:
    expected, where = [], "policy"
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        if line.startswith("# expect: "):
            expected.append(line.removeprefix("# expect: "))
        elif line.startswith("# expect-in: "):
            where = line.removeprefix("# expect-in: ").strip()
        elif not line.startswith("#"):
            break
    return expected, where


def test_there_are_enough_cases() -> None:
    assert len(CASES) >= 40


@pytest.mark.parametrize("case", CASES, ids=[c.stem for c in CASES])
def test_invalid_policy_reports_exactly_its_defect(case: Path) -> None:
    expected, where = _expectations(case)
    assert expected, f"{case.name} has no '# expect:' line"
    secrets = case.with_name(case.stem + ".secrets.yml")
    with pytest.raises(PolicyInvalid) as raised:
        load_policy(case, secrets if secrets.exists() else None)
    shown_file = str(secrets) if where == "secrets" else str(case)
    errors = [p for p in raised.value.problems if p.severity == "error"]
    got = [p.text().removeprefix(f"{p.file}:") for p in errors]
    assert [p.file for p in errors] == [shown_file] * len(errors)
    assert got == expected
