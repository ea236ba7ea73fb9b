"""The report timers: one timer and one service per entry of `reports`, each read by
systemd's own `systemd-analyze verify` (strict: any complaint fails), and the
check-config script that guards them on the host."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from postwarden.policy.load import LoadedPolicy
from postwarden.render.guard import UnsafeValue
from postwarden.render.reports import COMMAND, render_reports, timers, unit_name
from tests.render.conftest import SOURCE

UNITS = "etc/systemd/system"


def verify(unit: Path) -> str:
    """systemd-analyze's complaints about a unit; it exits 0 on unknown keys."""
    done = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, check=False
    )
    return done.stderr.strip() + (f"\nexit {done.returncode}" if done.returncode else "")


@pytest.fixture
def units(example: LoadedPolicy, tmp_path: Path) -> Path:
    if shutil.which("systemd-analyze") is None:
        pytest.fail("systemd-analyze is missing: run scripts/setup --test")
    root = tmp_path / UNITS
    root.mkdir(parents=True)
    for rendered in render_reports(example.policy, SOURCE):
        # the roles link COMMAND to their build; verify wants the program to exist
        program = str(Path(sys.executable).parent / "postwarden")
        target = root / Path(rendered.path).name
        target.write_text(rendered.content.replace(COMMAND, program))
    return root


def test_one_timer_and_service_per_report(example: LoadedPolicy, units: Path) -> None:
    assert sorted(p.name for p in units.iterdir()) == [
        "postwarden-audit-passwords.service",
        "postwarden-audit-passwords.timer",
        "postwarden-report-weekly-ops.service",
        "postwarden-report-weekly-ops.timer",
    ]
    assert timers(example.policy) == [
        "postwarden-report-weekly-ops.timer",
        "postwarden-audit-passwords.timer",
    ]
    timer = (units / "postwarden-report-weekly-ops.timer").read_text()
    assert "OnCalendar=weekly\n" in timer
    assert "Persistent=true\n" in timer
    service = (units / "postwarden-report-weekly-ops.service").read_text()
    assert " report --mail weekly-ops\n" in service
    assert "User=postwarden\n" in service


def test_the_password_audit_runs_on_its_schedule(example: LoadedPolicy, units: Path) -> None:
    """password_policy.audit.schedule: weekly in the example; the job reads Dovecot's
    passdb through its group, which the daemon itself does not have."""
    assert example.policy.password_policy.audit is not None
    assert example.policy.password_policy.audit.schedule == "weekly"
    timer = (units / "postwarden-audit-passwords.timer").read_text()
    assert "OnCalendar=weekly\n" in timer
    service = (units / "postwarden-audit-passwords.service").read_text()
    assert " audit passwords --notify\n" in service
    assert "SupplementaryGroups=dovecot\n" in service
    assert "User=postwarden\n" in service
    daily = example.policy.model_copy(
        update={
            "password_policy": example.policy.password_policy.model_copy(
                update={
                    "audit": example.policy.password_policy.audit.model_copy(
                        update={"schedule": "daily"}
                    )
                }
            )
        }
    )
    rendered = {f.path: f.content for f in render_reports(daily, SOURCE)}
    assert "OnCalendar=daily\n" in rendered["/etc/systemd/system/postwarden-audit-passwords.timer"]
    without = example.policy.model_copy(
        update={
            "password_policy": example.policy.password_policy.model_copy(update={"audit": None})
        }
    )
    assert "postwarden-audit-passwords.timer" not in timers(without)
    assert not [f for f in render_reports(without, SOURCE) if "audit" in f.path]


def test_systemd_accepts_the_units(units: Path) -> None:
    for unit in sorted(units.iterdir()):
        assert verify(unit) == "", unit.name


def test_systemd_refuses_a_broken_unit(units: Path) -> None:
    """The check the deploy runs catches what systemd would ignore or refuse."""
    timer = units / "postwarden-report-weekly-ops.timer"
    timer.write_text(timer.read_text().replace("OnCalendar=weekly", "OnCalendar=weakly"))
    assert "Failed to parse calendar specification" in verify(timer)
    timer.write_text(timer.read_text().replace("Persistent=", "Persistant="))
    assert "Unknown key 'Persistant'" in verify(timer)


def test_a_name_that_is_no_unit_name_is_refused() -> None:
    assert unit_name("daily_ops-2") == "postwarden-report-daily_ops-2"
    for hostile in ("../../x", "a b", "a\nExecStart=/bin/sh", "a.timer", "é"):
        with pytest.raises(UnsafeValue):
            unit_name(hostile)
