"""The Ansible side of rendering: postwarden.deploy (what the roles are handed) and the
collection's action plugin postwarden.mail.render, run by a real ansible-playbook on
this machine (connection local, nothing deployed)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from postwarden.deploy import (
    CHECKER,
    GROUP_ROLES,
    DeployInvalid,
    DeployRequest,
    host_settings_from_vars,
    render_for_deploy,
)

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "inventories" / "example"
PLAYBOOK = """
- name: Render
  hosts: all
  gather_facts: false
  tasks:
    - name: Render the files
      postwarden.mail.render:
        policy: "{{ policy }}"
        host_settings: "{{ settings | default({}) }}"
        roles: "{{ roles | default([]) }}"
        show_warnings: "{{ show_warnings | default(false) }}"
      register: rendered
    - name: Show what was rendered
      ansible.builtin.debug:
        msg: >-
          PATHS {{ rendered.stage.files | map(attribute='path') | join(' ') }} END
"""


def request(policy: Path = EXAMPLE / "policy.yml", **settings: object) -> DeployRequest:
    return DeployRequest(policy, None, None, settings)


def every_file(rendered: dict[str, Any], kind: str = "both") -> list[dict[str, Any]]:
    kinds = ("files", "secret_files") if kind == "both" else (kind,)
    return [f for part in rendered["roles"].values() for k in kinds for f in part[k]]


def test_files_are_split_into_public_and_secret() -> None:
    rendered = render_for_deploy(request(), "mail")
    public = {f["path"] for f in every_file(rendered, "files")}
    secret = {f["path"]: f for f in every_file(rendered, "secret_files")}
    assert "/etc/postfix/main.cf" in public
    assert set(secret) == {
        "/etc/dovecot/postwarden/passwords",
        "/etc/postwarden/secrets.yml",
        "/etc/prometheus/alertmanager.yml",
    }
    assert secret["/etc/dovecot/postwarden/passwords"]["mode"] == "0640"
    assert secret["/etc/dovecot/postwarden/passwords"]["group"] == "dovecot"
    assert not public & set(secret)


def test_every_file_is_checked_with_its_service_before_it_replaces_the_live_one() -> None:
    rendered = render_for_deploy(request(), "mail")
    by_path = {f["path"]: f for f in every_file(rendered)}
    assert by_path["/etc/postfix/main.cf"]["validate"] == (
        f"{CHECKER} postfix /etc/postfix/main.cf %s"
    )
    assert by_path["/etc/postfix/postwarden/aliases"]["validate"].endswith(" %s postalias")
    assert by_path["/etc/fail2ban/jail.d/postwarden.local"]["validate"].startswith(
        f"{CHECKER} fail2ban "
    )
    assert all(f["validate"].count("%s") == 1 for f in by_path.values())


def test_only_the_roles_asked_for() -> None:
    only = DeployRequest(EXAMPLE / "policy.yml", None, None, {}, roles=("postfix",))
    rendered = render_for_deploy(only, "mail")
    assert list(rendered["roles"]) == ["postfix"]
    postfix = rendered["roles"]["postfix"]
    assert {f["service"] for f in every_file(rendered)} == {"postfix"}
    assert {t["path"] for t in postfix["tables"]} >= {"/etc/postfix/postwarden/virtual_domains"}
    assert "/etc/postfix/postwarden" in postfix["directories"]
    assert postfix["packages"] == ["postfix"]
    assert {f["path"] for f in rendered["stage"]["files"]} == {
        f["path"] for f in every_file(rendered)
    }


@pytest.mark.parametrize(
    ("groups", "roles"),
    [
        (("mail",), ["policyd", "rspamd", "postfix", "dovecot", "fail2ban", "monitoring"]),
        (("mx", "submission"), ["policyd", "rspamd", "postfix", "dovecot", "fail2ban"]),
        (("monitoring",), ["monitoring"]),
        (("ungrouped",), ["policyd", "rspamd", "postfix", "dovecot", "fail2ban", "monitoring"]),
    ],
)
def test_a_host_gets_the_roles_of_its_groups(groups: tuple[str, ...], roles: list[str]) -> None:
    asked = DeployRequest(EXAMPLE / "policy.yml", None, None, {}, groups=groups)
    assert list(render_for_deploy(asked, "mail")["roles"]) == roles


def test_site_yml_runs_the_roles_deploy_names_for_each_group() -> None:
    """GROUP_ROLES says which files a host is handed; site.yml says which roles run."""
    plays = yaml.safe_load((ROOT / "site.yml").read_text())
    ran: dict[str, list[str]] = {}
    for play in plays:
        for group in play["hosts"].split(":"):
            for role in play.get("roles", []):
                ran.setdefault(group, []).append(role["role"].removeprefix("postwarden_"))
    for group, roles in GROUP_ROLES.items():
        assert ran[group] == list(roles), group


def test_everything_staged_is_checked_before_anything_goes_live() -> None:
    stage = render_for_deploy(request(), "mail")["stage"]
    args = stage["check_args"]
    services = [a for a in args if not a.startswith("--table") and ":" not in a]
    assert sorted(services) == [
        "alertmanager",
        "dovecot",
        "fail2ban",
        "postfix",
        "prometheus",
        "rspamd",
    ]
    assert "postmap:/etc/postfix/postwarden/virtual_domains" in args
    assert "postalias:/etc/postfix/postwarden/aliases" in args
    assert "/etc/postfix/postwarden" in stage["directories"]


def test_host_facts_follow_the_policy_and_the_host() -> None:
    facts = render_for_deploy(request(mail_root="/srv/mail"), "mail")["facts"]
    assert facts["tls_cert"] == "/etc/ssl/postwarden/mail.example.com.crt"
    assert facts["dkim_keys"] == [
        {
            "domain": "example.com",
            "selector": "s2026",
            "path": "/var/lib/rspamd/dkim/example.com.s2026.key",
        }
    ]
    assert facts["mail_root"] == "/srv/mail"


def test_a_misspelled_host_setting_names_the_variable_and_the_fix() -> None:
    with pytest.raises(DeployInvalid) as invalid:
        host_settings_from_vars({"relayhots": "[127.0.0.1]:2525"}, "mail1")
    (line,) = invalid.value.lines
    assert line.startswith("mail1: postwarden_host_settings.relayhots: ")
    assert "did you mean 'relayhost'" in line


def test_an_unknown_role_is_refused() -> None:
    with pytest.raises(DeployInvalid, match="unknown role postfx"):
        render_for_deploy(
            DeployRequest(EXAMPLE / "policy.yml", None, None, {}, roles=("postfx",)), "m"
        )


# ------------------------------------------------------------ the action plugin


def ansible_playbook(tmp_path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    playbook = tmp_path / "render.yml"
    playbook.write_text(PLAYBOOK)
    command = shutil.which("ansible-playbook", path=str(Path(sys.executable).parent))
    assert command, "ansible-playbook is not installed beside this Python"
    env = {
        **os.environ,
        "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
        "ANSIBLE_COLLECTIONS_PATH": str(ROOT / "collections"),
        "ANSIBLE_LOCAL_TEMP": str(tmp_path / "ansible-tmp"),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_CALLBACK_RESULT_FORMAT": "json",
    }
    return subprocess.run(
        [command, "-i", "mail.example.com,", "-c", "local", str(playbook), *extra],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


def test_the_action_hands_the_host_its_files_without_showing_secrets(tmp_path: Path) -> None:
    result = ansible_playbook(tmp_path, "-v", "-e", f"policy={EXAMPLE / 'policy.yml'}")
    assert result.returncode == 0, result.stdout + result.stderr
    shown = next(line for line in result.stdout.splitlines() if "PATHS " in line)
    paths = shown.split("PATHS ", 1)[1].split(" END", 1)[0].split()
    assert "/etc/postfix/main.cf" in paths
    assert "/etc/dovecot/postwarden/passwords" in paths
    # the render result holds password hashes and tokens: even -v must not print them
    assert "$argon2id$" not in result.stdout + result.stderr
    assert "censored" in result.stdout


def test_a_bad_policy_fails_the_play_with_positions(tmp_path: Path) -> None:
    broken = tmp_path / "policy.yml"
    text = (EXAMPLE / "policy.yml").read_text().replace("throttle: staff", "throttle: staf", 1)
    broken.write_text(text)
    shutil.copy(EXAMPLE / "secrets.yml", tmp_path / "secrets.yml")
    line = next(n for n, row in enumerate(text.splitlines(), 1) if "throttle: staf" in row)
    result = ansible_playbook(tmp_path, "-e", f"policy={broken}")
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert (
        f"{broken}:{line}:15: users.alice@example.com.throttle: unknown throttle 'staf'" in output
    )
    assert "PATHS" not in output


def test_a_bad_host_setting_fails_the_play(tmp_path: Path) -> None:
    result = ansible_playbook(
        tmp_path,
        "-e",
        f"policy={EXAMPLE / 'policy.yml'}",
        "-e",
        '{"settings": {"policyd_store": "memcached"}}',
    )
    assert result.returncode != 0
    assert "postwarden_host_settings.policyd_store" in result.stdout + result.stderr


def test_the_build_id_changes_with_the_code(tmp_path: Path) -> None:
    from importlib.metadata import version

    from postwarden import deploy

    first = deploy.build_id()
    assert first.startswith(f"{version('postwarden')}-")
    package = Path(deploy.__file__).parent
    added = package / "zz_build_probe.py"
    try:
        added.write_text("# a change to the code\n")
        assert deploy.build_id() != first
    finally:
        added.unlink()
    assert deploy.build_id() == first


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("0.0.0.0/0", "an open relay"),
        ("[::]/0", "an open relay"),
        ("10.0.0.0/33", "is not a network"),
        ("localhost", "is not a network"),
        ("2001:db8::/32", "in brackets (write [2001:db8::]/32)"),
    ],
)
def test_mynetworks_must_be_networks_that_do_not_open_the_relay(entry: str, message: str) -> None:
    with pytest.raises(DeployInvalid) as invalid:
        host_settings_from_vars({"mynetworks": ["127.0.0.0/8", entry]}, "mail1")
    (line,) = invalid.value.lines
    assert line.startswith("mail1: postwarden_host_settings.mynetworks[1]: ")
    assert message in line


def test_mynetworks_in_postfix_notation_are_accepted() -> None:
    settings = host_settings_from_vars({"mynetworks": ["192.0.2.0/24", "[2001:db8::]/32"]}, "m")
    assert settings.mynetworks == ["192.0.2.0/24", "[2001:db8::]/32"]


def test_the_policys_warnings_show_where_asked(tmp_path: Path) -> None:
    e2e = ROOT / "tests" / "fixtures" / "e2e" / "policy.yml"
    quiet = ansible_playbook(tmp_path, "-e", f"policy={e2e}")
    assert quiet.returncode == 0, quiet.stdout + quiet.stderr
    assert "is a loopback address" not in quiet.stdout + quiet.stderr
    shown = ansible_playbook(tmp_path, "-e", f"policy={e2e}", "-e", "show_warnings=true")
    assert shown.returncode == 0, shown.stdout + shown.stderr
    assert "127.0.0.2 is a loopback address" in shown.stdout + shown.stderr


MONITORING_CHECK = """
- name: The monitoring role's check of its settings
  hosts: all
  gather_facts: false
  tasks:
    - name: Check
      ansible.builtin.include_tasks: {tasks}
"""


@pytest.mark.parametrize(
    ("address", "accepted"),
    [
        ("127.0.0.1", True),
        ("[::1]", True),
        ("127.0.0.1 --web.enable-admin-api", False),
        ('127.0.0.1"', False),
        ("::1", False),
    ],
)
def test_the_monitoring_listen_address_is_one_address(
    tmp_path: Path, address: str, accepted: bool
) -> None:
    """It lands unquoted in the services' command lines: nothing may ride along."""
    playbook = tmp_path / "check.yml"
    playbook.write_text(
        MONITORING_CHECK.format(
            tasks=ROOT / "roles" / "postwarden_monitoring" / "tasks" / "validate.yml"
        )
    )
    command = shutil.which("ansible-playbook", path=str(Path(sys.executable).parent))
    assert command
    result = subprocess.run(
        [
            command,
            "-i",
            "mail.example.com,",
            "-c",
            "local",
            str(playbook),
            "-e",
            json.dumps({"postwarden_monitoring_listen_address": address}),
        ],
        capture_output=True,
        text=True,
        env={
            **os.environ,
            "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
            "ANSIBLE_ROLES_PATH": str(ROOT / "roles"),
            "ANSIBLE_LOCAL_TEMP": str(tmp_path / "ansible-tmp"),
            "ANSIBLE_NOCOLOR": "1",
        },
        timeout=120,
        check=False,
    )
    assert (result.returncode == 0) == accepted, result.stdout + result.stderr
    if not accepted:
        assert "must be an IPv4 address or an IPv6 address" in result.stdout
