"""The roles' checker (roles/postwarden_common/files/check-config) run here with the real
tools: `--all` checks every service's staged files together, and one broken file of
one service fails the whole check, naming it, before anything could go live."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from postwarden.deploy import DeployRequest, render_for_deploy
from tests.conftest import EXAMPLE_INVENTORY, ROOT

CHECKER = ROOT / "roles" / "postwarden_common" / "files" / "check-config"


@pytest.fixture(scope="module")
def rendered() -> dict[str, Any]:
    # the example host's settings, as the molecule host has them: no public fuzzy servers
    settings = {"mynetworks": ["127.0.0.1/32"], "rspamd_fuzzy": False, "dnsbl_zones": []}
    request = DeployRequest(EXAMPLE_INVENTORY / "policy.yml", None, None, settings)
    return render_for_deploy(request, "mail.example.com")


def stage(rendered: dict[str, Any], root: Path, broken: dict[str, str] | None = None) -> Path:
    for staged in rendered["stage"]["files"]:
        target = root / staged["path"].lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        content = staged["content"]
        for old, new in (broken or {}).items():
            if staged["path"] == old.split("|")[0]:
                content = content.replace(old.split("|")[1], new)
        target.write_text(content)
    return root


def check_all(rendered: dict[str, Any], staged: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["sh", str(CHECKER), "--all", *rendered["stage"]["check_args"]],
        capture_output=True,
        text=True,
        env={**os.environ, "POSTWARDEN_STAGE": str(staged)},
        check=False,
        timeout=300,
    )


def test_the_whole_new_configuration_passes(rendered: dict[str, Any], tmp_path: Path) -> None:
    checked = check_all(rendered, stage(rendered, tmp_path))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    for service in ("postfix", "dovecot", "rspamd", "fail2ban", "prometheus", "alertmanager"):
        assert f"check-config: {service}: the new configuration passes its check" in checked.stdout


@pytest.mark.parametrize(
    ("broken", "complaint"),
    [
        ({"/etc/dovecot/dovecot.conf|ssl = required": "ssl = requird"}, "requird"),
        ({"/etc/postfix/main.cf|message_size_limit": "mesage_size_limit"}, "mesage_size_limit"),
        (
            {"/etc/postfix/postwarden/virtual_domains|example.com\tOK": "example.com"},
            "virtual_domains",
        ),
        (
            {"/etc/fail2ban/jail.d/postwarden.local|filter = postwarden-auth": "filter = nope"},
            "nope",
        ),
    ],
    ids=["dovecot", "postfix", "a lookup table", "fail2ban"],
)
def test_one_broken_file_fails_the_check_of_everything(
    rendered: dict[str, Any], tmp_path: Path, broken: dict[str, str], complaint: str
) -> None:
    checked = check_all(rendered, stage(rendered, tmp_path, broken))
    assert checked.returncode != 0
    assert complaint in checked.stdout + checked.stderr


def test_a_report_timer_is_checked_by_systemd(rendered: dict[str, Any], tmp_path: Path) -> None:
    """A report's timer goes in place only if systemd reads it without a complaint."""
    path = "/etc/systemd/system/postwarden-report-weekly-ops.timer"
    (timer,) = [f for f in rendered["roles"]["policyd"]["files"] if f["path"] == path]
    assert (
        timer["validate"]
        == f"/usr/local/libexec/postwarden/check-config postwarden-policyd {path} %s"
    )
    results = []
    for content in (timer["content"], timer["content"].replace("Persistent=", "Persistant=")):
        candidate = tmp_path / "candidate"
        candidate.write_text(content)
        results.append(
            subprocess.run(
                ["sh", str(CHECKER), "postwarden-policyd", path, str(candidate)],
                capture_output=True,
                text=True,
                env={**os.environ, "POSTWARDEN_STAGE": str(tmp_path / "stage")},
                check=False,
                timeout=60,
            )
        )
    good, broken = results
    assert good.returncode == 0, good.stderr
    assert broken.returncode == 1
    assert "Unknown key 'Persistant'" in broken.stderr
