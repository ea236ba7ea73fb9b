"""Ansible runs against the deployed host: `site.yml --check --diff` shows exactly what
a policy change would change, and changes nothing; a broken policy stops the play
before the host is touched; a file that fails its service's check never goes live.

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


def playbook(
    hosts: Path, *options: str, playbook_file: Path = ROOT / "site.yml"
) -> subprocess.CompletedProcess[str]:
    command = Path(sys.executable).parent / "ansible-playbook"
    env = {
        **os.environ,
        "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_FORCE_COLOR": "0",
    }
    return subprocess.run(
        [str(command), "-i", str(hosts), str(playbook_file), *options],
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


FAIL2BAN_ONLY = """
- name: The fail2ban role alone
  hosts: mail
  roles:
    - role: postwarden_fail2ban
"""


def test_a_config_that_fails_its_check_never_replaces_the_live_one(
    host: Any, tmp_path: Path
) -> None:
    jail = "/etc/fail2ban/jail.d/postwarden.local"
    live = host.file(jail).md5sum
    text = (EXAMPLE / "policy.yml").read_text()
    changed = text.replace("ban_for: 1h", "ban_for: 2h")
    assert changed != text
    only_fail2ban = tmp_path / "fail2ban.yml"
    only_fail2ban.write_text(FAIL2BAN_ONLY)
    # a jail of someone else's that names a filter fail2ban does not have: every check
    # of the whole configuration fails from now on, so the new jail must not go live
    host.run_expect(
        [0],
        "printf '[broken]\\nenabled = true\\nfilter = no-such-filter\\n"
        "logpath = /var/log/postfix.log\\n' > /etc/fail2ban/jail.d/zz-broken.local",
    )
    try:
        result = playbook(inventory(tmp_path, changed), playbook_file=only_fail2ban)
    finally:
        host.run_expect([0], "rm -f /etc/fail2ban/jail.d/zz-broken.local")

    assert result.returncode != 0
    assert "failed to validate" in result.stdout
    assert "no-such-filter" in result.stdout
    assert host.file(jail).md5sum == live
    assert host.service("fail2ban").is_running
