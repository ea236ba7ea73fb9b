"""`ansible-playbook site.yml --check --diff` against the deployed host shows exactly
what a policy change would change, and changes nothing; a broken policy stops the
play before the host is touched.

These run Ansible from the controller against the throwaway host, with a copy of the
example policy that differs in one setting.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[3]
EXAMPLE = ROOT / "inventories" / "example"
HOST = "postwarden-mail"
HOST_SETTINGS = {"mynetworks": ["127.0.0.1/32"], "rspamd_fuzzy": False, "dnsbl_zones": []}


def inventory(tmp_path: Path, policy_text: str) -> Path:
    (tmp_path / "policy.yml").write_text(policy_text)
    shutil.copy(EXAMPLE / "secrets.yml", tmp_path / "secrets.yml")
    hosts = {
        "all": {
            "children": {
                "mail": {
                    "hosts": {
                        HOST: {
                            "ansible_connection": "containers.podman.podman",
                            "postwarden_policy_file": str(tmp_path / "policy.yml"),
                            "postwarden_secrets_file": str(tmp_path / "secrets.yml"),
                            "postwarden_host_settings": HOST_SETTINGS,
                        }
                    }
                }
            }
        }
    }
    path = tmp_path / "hosts.yml"
    path.write_text(yaml.safe_dump(hosts))
    return path


def playbook(hosts: Path, *options: str) -> subprocess.CompletedProcess[str]:
    command = Path(sys.executable).parent / "ansible-playbook"
    env = {
        **os.environ,
        "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_FORCE_COLOR": "0",
    }
    return subprocess.run(
        [str(command), "-i", str(hosts), str(ROOT / "site.yml"), *options],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=900,
        check=False,
    )


def test_check_diff_shows_exactly_the_policy_change(host: Any, tmp_path: Path) -> None:
    live = host.file("/etc/postfix/main.cf").md5sum
    text = (EXAMPLE / "policy.yml").read_text()
    changed = text.replace("message_size_limit: 50MiB", "message_size_limit: 40MiB")
    assert changed != text

    result = playbook(inventory(tmp_path, changed), "--check", "--diff")

    assert result.returncode == 0, result.stdout[-3000:] + result.stderr
    diffed = set(re.findall(r"^\+\+\+ after: (\S+)", result.stdout, re.MULTILINE))
    # Postfix's limit, and the policy file postwarden-policyd enforces
    assert diffed == {"/etc/postfix/main.cf", "/etc/postwarden/policy.yml"}
    assert "-message_size_limit = 52428800" in result.stdout
    assert "+message_size_limit = 41943040" in result.stdout
    # the password hashes and tokens the run handles never show
    assert "$argon2id$" not in result.stdout + result.stderr
    assert host.file("/etc/postfix/main.cf").md5sum == live


def test_a_broken_policy_stops_before_the_host_is_touched(host: Any, tmp_path: Path) -> None:
    live = host.file("/etc/postfix/main.cf").md5sum
    text = (EXAMPLE / "policy.yml").read_text()
    broken = text.replace("message_size_limit: 50MiB", "message_size_limit: 50MB of mail")

    result = playbook(inventory(tmp_path, broken))

    assert result.returncode != 0
    line = next(n for n, row in enumerate(broken.splitlines(), 1) if "50MB of mail" in row)
    assert f"policy.yml:{line}:" in result.stdout + result.stderr
    assert "server.message_size_limit" in result.stdout + result.stderr
    assert "Install Postfix" not in result.stdout
    assert host.file("/etc/postfix/main.cf").md5sum == live
