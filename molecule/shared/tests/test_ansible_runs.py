"""Ansible runs against the deployed host: `site.yml --check --diff` shows exactly what
a policy change would change, and changes nothing; a broken policy stops the play
before the host is touched; a file that fails its service's check never goes live.

These run Ansible from the controller against the throwaway host, with a copy of the
policy the host runs (the example's, as molecule/shared/lab_policy.py changes it for the
lab) that differs in one setting.
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
sys.path.insert(0, str(ROOT / "molecule" / "shared"))
from lab_policy import lab_policy  # noqa: E402  (beside the tests, not a package)

DEPLOYED = lab_policy((EXAMPLE / "policy.yml").read_text())
"""The text of the policy the scenario deployed."""
HOST = "postwarden-mail"
HOST_SETTINGS = {"mynetworks": ["127.0.0.1/32"], "rspamd_fuzzy": False, "dnsbl_zones": []}


def inventory(tmp_path: Path, policy_text: str, **settings: object) -> Path:
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
                            "postwarden_host_settings": {**HOST_SETTINGS, **settings},
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
    text = DEPLOYED
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
    text = DEPLOYED
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
    text = DEPLOYED
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


LIVE = [
    "/etc/postfix/main.cf",
    "/etc/postfix/master.cf",
    "/etc/dovecot/dovecot.conf",
    "/etc/rspamd/local.d/actions.conf",
    "/etc/fail2ban/jail.d/postwarden.local",
    "/etc/prometheus/prometheus.yml",
    "/etc/postwarden/policy.yml",
]


def said(result: subprocess.CompletedProcess[str]) -> str:
    """What a run printed, with Ansible's line wrapping undone."""
    return " ".join((result.stdout + result.stderr).split())


def live_sums(host: Any) -> dict[str, str]:
    return {path: host.file(path).md5sum for path in LIVE}


def test_a_hostile_host_setting_stops_before_any_file_changes(host: Any, tmp_path: Path) -> None:
    before = live_sums(host)
    hosts = inventory(
        tmp_path,
        DEPLOYED,
        relayhost="[127.0.0.1]:2525\nrelay_domains = static:ALL",
    )
    result = playbook(hosts)
    assert result.returncode != 0
    output = said(result)
    assert "postwarden_host_settings.relayhost" in output
    assert "line break" in output
    assert "Install Postfix" not in result.stdout
    assert live_sums(host) == before
    assert "static:ALL" not in host.check_output("postconf -h relay_domains")


def test_a_hostile_policy_value_stops_before_any_file_changes(host: Any, tmp_path: Path) -> None:
    before = live_sums(host)
    text = DEPLOYED
    hostile = text.replace(
        "cert: /etc/ssl/postwarden/mail.example.com.crt",
        'cert: "/etc/ssl/postwarden/mail.example.com.crt\\nrelay_domains = static:ALL"',
    )
    assert hostile != text
    result = playbook(inventory(tmp_path, hostile))
    assert result.returncode != 0
    assert "server.tls.cert" in said(result)
    assert live_sums(host) == before


def test_one_service_refused_changes_no_service(host: Any, tmp_path: Path) -> None:
    """All or nothing across services: the Postfix change is fine, fail2ban's check fails
    (a jail of someone else's names a filter that does not exist), and so nothing of
    either goes live: not main.cf, whose role runs before fail2ban's."""
    before = live_sums(host)
    text = DEPLOYED
    changed = text.replace("message_size_limit: 50MiB", "message_size_limit: 40MiB").replace(
        "ban_for: 1h", "ban_for: 2h"
    )
    host.run_expect(
        [0],
        "printf '[broken]\\nenabled = true\\nfilter = no-such-filter\\n"
        "logpath = /var/log/postfix.log\\n' > /etc/fail2ban/jail.d/zz-broken.local",
    )
    try:
        result = playbook(inventory(tmp_path, changed))
    finally:
        host.run_expect([0], "rm -f /etc/fail2ban/jail.d/zz-broken.local")
    assert result.returncode != 0
    assert "no-such-filter" in said(result)
    assert "Check every service's new configuration together" in said(result)
    assert live_sums(host) == before
    assert host.check_output("postconf -h message_size_limit") == "52428800"
    for service in ("postfix", "dovecot", "fail2ban"):
        assert host.service(service).is_running


def test_a_certificate_and_key_that_do_not_match_stop_the_run(host: Any, tmp_path: Path) -> None:
    """Never a new key over an old certificate: a pair that does not belong together is
    refused before any file goes live, and the live key is left alone."""
    key = "/etc/ssl/postwarden/mail.example.com.key"
    live_key = host.file(key).md5sum
    before = live_sums(host)
    host.run_expect(
        [0],
        "openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=other "
        "-keyout /tmp/other.key -out /etc/ssl/postwarden/other.crt 2>/dev/null",
    )
    text = DEPLOYED
    mismatched = text.replace(
        "cert: /etc/ssl/postwarden/mail.example.com.crt",
        "cert: /etc/ssl/postwarden/other.crt",
    )
    try:
        result = playbook(inventory(tmp_path, mismatched))
    finally:
        host.run_expect([0], "rm -f /etc/ssl/postwarden/other.crt /tmp/other.key")
    assert result.returncode != 0
    assert "do not belong together" in said(result)
    assert host.file(key).md5sum == live_key
    assert live_sums(host) == before


def test_a_certificate_without_its_key_gets_no_new_key(host: Any, tmp_path: Path) -> None:
    text = DEPLOYED
    orphan = text.replace(
        "key: /etc/ssl/postwarden/mail.example.com.key",
        "key: /etc/ssl/postwarden/missing.key",
    )
    result = playbook(inventory(tmp_path, orphan))
    assert result.returncode != 0
    assert "missing.key does not" in said(result)
    assert not host.file("/etc/ssl/postwarden/missing.key").exists


LAB_KEYS = "/tmp/postwarden-dkim-lab"


def test_a_new_dkim_key_shows_the_record_to_publish_once(host: Any, tmp_path: Path) -> None:
    """The role's DKIM step on its own, for a domain of the lab's: the first run makes
    the key and shows its DNS record; the next finds the key and shows nothing."""
    play = [
        {
            "name": "Make a lab DKIM key",
            "hosts": HOST,
            "gather_facts": False,
            "tasks": [
                {
                    "name": "Make the key",
                    "ansible.builtin.include_role": {
                        "name": "postwarden_rspamd",
                        "tasks_from": "dkim",
                    },
                    "vars": {
                        "postwarden_rspamd_dkim_key_dir": LAB_KEYS,
                        "postwarden_rspamd_dkim_keys": [
                            {
                                "domain": "lab.example.net",
                                "selector": "t1",
                                "path": f"{LAB_KEYS}/lab.example.net.t1.key",
                            }
                        ],
                    },
                }
            ],
        }
    ]
    (tmp_path / "dkim.yml").write_text(yaml.safe_dump(play, sort_keys=False))
    hosts = inventory(tmp_path, DEPLOYED)
    try:
        first = playbook(hosts, playbook_file=tmp_path / "dkim.yml")
        assert first.returncode == 0, said(first)[-3000:]
        assert "Publish in the DNS of lab.example.net: t1._domainkey IN TXT" in said(first)
        assert "v=DKIM1; k=rsa;" in said(first)
        kept = host.file(f"{LAB_KEYS}/lab.example.net.t1.key.dns").content_string
        assert "v=DKIM1; k=rsa;" in kept
        again = playbook(hosts, playbook_file=tmp_path / "dkim.yml")
        assert again.returncode == 0, said(again)[-3000:]
        assert "Publish in the DNS of" not in said(again)
    finally:
        host.run(f"rm -rf {LAB_KEYS}")
