"""The benchmark's synthetic policies are valid, and its broken copy has exactly one error."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.gen_policy import write
from bench.validate_bench import break_one_user
from postwarden.policy.load import PolicyInvalid, load_policy


def test_generated_policy_is_valid_without_warnings(tmp_path: Path) -> None:
    """None but the warnings that say which of its settings are not enforced yet."""
    policy = write(tmp_path / "gen", users=500, domains=50, lists=10)
    loaded = load_policy(policy)
    assert [w for w in loaded.warnings if "by this version of postwarden" not in w.message] == []
    assert len(loaded.policy.users) == 500
    assert len(loaded.policy.domains) == 50
    assert len(loaded.policy.lists) == 10
    assert len(loaded.secrets.password_hashes) == 500


def test_broken_copy_reports_its_one_defect(tmp_path: Path) -> None:
    policy = write(tmp_path / "gen", users=300, domains=30, lists=5)
    broken = tmp_path / "broken" / "policy.yml"
    break_one_user(policy, broken)
    with pytest.raises(PolicyInvalid) as raised:
        load_policy(broken)
    (error,) = [p for p in raised.value.problems if p.severity == "error"]
    assert error.path == "users.user299@d29.bench.example.throttle"
    assert error.message == "unknown throttle 'staf'"
    assert error.hint == "did you mean 'staff'?"
    line = broken.read_text().splitlines()[error.line - 1]
    assert line[error.column - 1 :] == "staf"
