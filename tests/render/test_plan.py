"""plan: what a render would change in a directory that mirrors the host, and the
`render` and `plan` commands. Pure: no daemon, no tool, only files in tmp_path."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from postwarden.cli import app
from postwarden.policy.load import LoadedPolicy, load_policy
from postwarden.render.host import HostSettings
from postwarden.render.plan import (
    DEFAULT_MAX_SHARE,
    MIN_FILES_FOR_SAFETY,
    FileChange,
    Plan,
    as_json,
    as_markdown,
    as_text,
    make_plan,
)
from postwarden.render.render import render
from postwarden.render.templating import header
from postwarden.render.tree import RenderedTree, write_tree
from tests.conftest import EXAMPLE_INVENTORY, MINIMAL_POLICY, ROOT
from tests.render.conftest import SOURCE

runner = CliRunner()
EXAMPLE = EXAMPLE_INVENTORY / "policy.yml"
PASSWORDS = "/etc/dovecot/postwarden/passwords"
USERS = "/etc/dovecot/postwarden/users"
POLICY_COPY = "/etc/postwarden/policy.yml"
SECRET_FILES = {PASSWORDS, "/etc/postwarden/secrets.yml", "/etc/prometheus/alertmanager.yml"}
TOTAL = 36

Edit = Callable[[str, str], tuple[str, str]]
"""(policy text, secrets text) -> the same, edited."""


@pytest.fixture(scope="module")
def tree(example: LoadedPolicy) -> RenderedTree:
    return render(example, HostSettings())


@pytest.fixture
def rendered_dir(tree: RenderedTree, tmp_path: Path) -> Path:
    """The example as a previous render left it on the host."""
    write_tree(tree, tmp_path / "host")
    return tmp_path / "host"


def variant(tmp_path: Path, edit: Edit) -> Path:
    """A copy of the example inventory's policy and secrets, edited; the policy's path."""
    directory = tmp_path / "variant"
    directory.mkdir()
    policy = (EXAMPLE_INVENTORY / "policy.yml").read_text()
    secrets = (EXAMPLE_INVENTORY / "secrets.yml").read_text()
    new_policy, new_secrets = edit(policy, secrets)
    assert (new_policy, new_secrets) != (policy, secrets), "the edit changed nothing"
    (directory / "policy.yml").write_text(new_policy)
    (directory / "secrets.yml").write_text(new_secrets)
    return directory / "policy.yml"


def replace_once(text: str, old: str, new: str) -> str:
    assert text.count(old) == 1, old
    return text.replace(old, new)


def render_variant(tmp_path: Path, edit: Edit) -> RenderedTree:
    return render(load_policy(variant(tmp_path, edit)), HostSettings())


def statuses(plan: Plan) -> dict[str, str]:
    return {c.path: c.status for c in plan.changes if c.status != "unchanged"}


def change(plan: Plan, path: str) -> FileChange:
    (found,) = [c for c in plan.changes if c.path == path]
    return found


def files_below(root: Path) -> dict[str, bytes]:
    return {
        path.relative_to(root).as_posix(): path.read_bytes()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def touch_up(root: Path, host_paths: list[str]) -> None:
    """Change files on the 'host' so that the plan must change them back."""
    for host_path in host_paths:
        with (root / host_path.lstrip("/")).open("a") as file:
            file.write("# edited on the host\n")


# ------------------------------------------------------------------ make_plan


@pytest.mark.parametrize("exists", [False, True], ids=["missing-dir", "empty-dir"])
def test_against_nothing_everything_is_added(
    tree: RenderedTree, tmp_path: Path, exists: bool
) -> None:
    against = tmp_path / "host"
    if exists:
        against.mkdir()
    plan = make_plan(tree, against)
    assert [c.path for c in plan.changes] == sorted(tree)
    assert {c.status for c in plan.changes} == {"added"}
    assert all(c.diff == "" for c in plan.changes)
    assert {c.path for c in plan.changes if c.secret} == SECRET_FILES
    assert (plan.has_changes, plan.existing, plan.touched_existing) == (True, 0, 0)
    assert not plan.too_large(DEFAULT_MAX_SHARE)
    assert plan.summary() == f"{TOTAL} to add, 0 to change, 0 to remove, 0 unchanged"


def test_against_its_own_render_nothing_changes(tree: RenderedTree, rendered_dir: Path) -> None:
    plan = make_plan(tree, rendered_dir)
    assert len(plan.changes) == TOTAL
    assert {c.status for c in plan.changes} == {"unchanged"}
    assert not plan.has_changes
    assert plan.existing == TOTAL
    assert as_text(plan) == f"Plan: 0 to add, 0 to change, 0 to remove, {TOTAL} unchanged.\n"


def _staff_throttle(policy: str, secrets: str) -> tuple[str, str]:
    return replace_once(policy, "messages: 200/h", "messages: 300/h"), secrets


def _bob_quota(policy: str, secrets: str) -> tuple[str, str]:
    return replace_once(policy, "quota: 2GiB", "quota: 3GiB"), secrets


def _bob_alias(policy: str, secrets: str) -> tuple[str, str]:
    bob = "  bob@example.org:\n    name: Bob Example\n"
    return replace_once(policy, bob, bob + "    aliases: [robert@example.org]\n"), secrets


@pytest.mark.parametrize(
    ("edit", "changed", "removed_line", "added_line"),
    [
        (_staff_throttle, {POLICY_COPY}, "-    messages: 200/h", "+    messages: 300/h"),
        (
            _bob_quota,
            {POLICY_COPY, USERS},
            "-bob@example.org:::::::userdb_quota_rule=*:storage=2147483648B",
            "+bob@example.org:::::::userdb_quota_rule=*:storage=3221225472B",
        ),
        (
            _bob_alias,
            {
                POLICY_COPY,
                "/etc/postfix/postwarden/sender_login",
                "/etc/postfix/postwarden/virtual_aliases",
            },
            None,
            "+robert@example.org\tbob@example.org",
        ),
    ],
    ids=["throttle", "user-quota", "user-alias"],
)
def test_a_policy_change_changes_the_right_files(
    rendered_dir: Path,
    tmp_path: Path,
    edit: Edit,
    changed: set[str],
    removed_line: str | None,
    added_line: str,
) -> None:
    plan = make_plan(render_variant(tmp_path, edit), rendered_dir)
    assert statuses(plan) == dict.fromkeys(changed, "changed")
    assert plan.summary() == f"0 to add, {len(changed)} to change, 0 to remove, " + (
        f"{TOTAL - len(changed)} unchanged"
    )
    diffs = "".join(c.diff for c in plan.changes)
    assert added_line in diffs.splitlines()
    if removed_line:
        assert removed_line in diffs.splitlines()
    for path in changed:
        diff = change(plan, path).diff
        assert diff.startswith(f"--- a{path}\n+++ b{path}\n@@ "), diff
        assert not change(plan, path).secret


def _bob_hash(policy: str, secrets: str) -> tuple[str, str]:
    """bob's hash becomes newsletter's (a valid argon2id hash all the same)."""
    lines = secrets.splitlines(keepends=True)
    (bob,) = [line for line in lines if line.startswith("  bob@example.org:")]
    (newsletter,) = [line for line in lines if line.startswith("  newsletter@example.com:")]
    new_bob = "  bob@example.org:" + newsletter.split(":", 1)[1]
    return policy, replace_once(secrets, bob, new_bob)


def test_a_changed_secret_file_shows_no_content(
    example: LoadedPolicy, rendered_dir: Path, tmp_path: Path
) -> None:
    plan = make_plan(render_variant(tmp_path, _bob_hash), rendered_dir)
    assert statuses(plan) == {PASSWORDS: "changed"}
    passwords = change(plan, PASSWORDS)
    assert (passwords.diff, passwords.secret, passwords.mode_change) == ("", True, "")
    outputs = as_text(plan) + as_markdown(plan) + as_json(plan)
    assert f"~ {PASSWORDS} (secret: content not shown)" in as_text(plan)
    for password_hash in example.secrets.password_hashes.values():
        assert password_hash.rsplit("$", 1)[1] not in outputs


def test_a_changed_secret_value_shows_no_content(rendered_dir: Path, tmp_path: Path) -> None:
    def relay_password(policy: str, secrets: str) -> tuple[str, str]:
        return policy, replace_once(secrets, "example-relay-password", "another-relay-password")

    plan = make_plan(render_variant(tmp_path, relay_password), rendered_dir)
    assert statuses(plan) == {
        "/etc/postwarden/secrets.yml": "changed",
        "/etc/prometheus/alertmanager.yml": "changed",
    }
    assert all(c.diff == "" and c.secret for c in plan.changes if c.status == "changed")
    outputs = as_text(plan) + as_markdown(plan) + as_json(plan)
    assert "relay-password" not in outputs


def test_a_managed_file_no_longer_rendered_is_removed(
    tree: RenderedTree, rendered_dir: Path
) -> None:
    maps = rendered_dir / "etc" / "postfix" / "postwarden"
    (maps / "old_table").write_text(header(SOURCE) + "old@example.com\tOK\n")
    # not managed: no header, the header on a later line, a compiled table
    (maps / "notes").write_text("kept by hand\n")
    (maps / "late").write_text("# kept by hand\n" + header(SOURCE))
    (maps / "sender_login.db").write_bytes(b"\x00\x06\x15\x61binary")
    plan = make_plan(tree, rendered_dir)
    assert statuses(plan) == {"/etc/postfix/postwarden/old_table": "removed"}
    removed = change(plan, "/etc/postfix/postwarden/old_table")
    assert (removed.diff, removed.secret) == ("", False)
    assert plan.summary() == f"0 to add, 0 to change, 1 to remove, {TOTAL} unchanged"
    assert "- /etc/postfix/postwarden/old_table\n" in as_text(plan)


def test_the_files_the_roles_write_themselves_are_not_removals(
    tree: RenderedTree, rendered_dir: Path
) -> None:
    """A plan against a copy of a deployed host's /etc: the sshd jail switch that the
    fail2ban role writes (not the renderer) is neither a change nor a removal."""
    tasks = yaml.safe_load((ROOT / "roles/postwarden_fail2ban/tasks/main.yml").read_text())
    (written,) = [
        task["ansible.builtin.copy"]
        for task in tasks
        if task.get("ansible.builtin.copy", {}).get("dest", "").endswith("postwarden-sshd.local")
    ]
    jail = rendered_dir / written["dest"].lstrip("/")
    jail.parent.mkdir(parents=True, exist_ok=True)
    jail.write_text(
        written["content"].replace(
            "{{ postwarden_fail2ban_auth_log.stat.exists | lower }}", "false"
        )
    )
    plan = make_plan(tree, rendered_dir)
    assert statuses(plan) == {}
    assert plan.summary() == f"0 to add, 0 to change, 0 to remove, {TOTAL} unchanged"


def test_a_mode_change_is_reported(tree: RenderedTree, rendered_dir: Path) -> None:
    os.chmod(rendered_dir / PASSWORDS.lstrip("/"), 0o644)
    os.chmod(rendered_dir / "etc/postfix/main.cf", 0o600)
    plan = make_plan(tree, rendered_dir)
    assert statuses(plan) == {PASSWORDS: "changed", "/etc/postfix/main.cf": "changed"}
    assert change(plan, PASSWORDS).mode_change == "0644 -> 0640"
    main_cf = change(plan, "/etc/postfix/main.cf")
    assert (main_cf.mode_change, main_cf.diff) == ("0600 -> 0644", "")
    text = as_text(plan)
    assert f"~ {PASSWORDS} (mode 0644 -> 0640; secret: content not shown)\n" in text
    assert "~ /etc/postfix/main.cf (mode 0600 -> 0644)\n" in text


def test_too_large_refuses_a_large_share_of_the_files(
    tree: RenderedTree, rendered_dir: Path
) -> None:
    paths = sorted(p for p in tree if p not in SECRET_FILES)
    assert pytest.approx(10.8) == DEFAULT_MAX_SHARE * TOTAL
    touch_up(rendered_dir, paths[:10])
    plan = make_plan(tree, rendered_dir)
    assert (plan.touched_existing, plan.existing) == (10, TOTAL)
    assert not plan.too_large(DEFAULT_MAX_SHARE)

    touch_up(rendered_dir, paths[10:11])
    plan = make_plan(tree, rendered_dir)
    assert plan.touched_existing == 11
    assert plan.too_large(DEFAULT_MAX_SHARE)
    assert not plan.too_large(0.5)


def test_too_large_leaves_small_trees_alone(tree: RenderedTree, tmp_path: Path) -> None:
    """Below MIN_FILES_FOR_SAFETY touched files, any share is fine."""
    paths = sorted(p for p in tree if p not in SECRET_FILES)[:MIN_FILES_FOR_SAFETY]
    host = tmp_path / "host"
    for path in paths:
        target = host / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(tree[path].content + "# edited on the host\n")
        os.chmod(target, tree[path].mode)

    all_of_five = make_plan(tree, host)
    assert (all_of_five.touched_existing, all_of_five.existing) == (MIN_FILES_FOR_SAFETY,) * 2
    assert all_of_five.too_large(DEFAULT_MAX_SHARE)

    (host / paths[0].lstrip("/")).unlink()
    fewer = make_plan(tree, host)
    assert (fewer.touched_existing, fewer.existing) == (MIN_FILES_FOR_SAFETY - 1,) * 2
    assert not fewer.too_large(DEFAULT_MAX_SHARE)
    assert not fewer.too_large(0.0)


def test_removed_files_count_toward_too_large(tree: RenderedTree, rendered_dir: Path) -> None:
    for number in range(10):
        path = rendered_dir / "etc" / "postfix" / "postwarden" / f"old_{number}"
        path.write_text(header(SOURCE))
    plan = make_plan(tree, rendered_dir)
    assert (plan.count("removed"), plan.existing) == (10, TOTAL + 10)
    assert not plan.too_large(DEFAULT_MAX_SHARE)  # 10 of 46
    assert plan.too_large(0.2)


def test_an_existing_file_that_is_not_utf8_is_changed(
    tree: RenderedTree, rendered_dir: Path
) -> None:
    (rendered_dir / "etc/postfix/main.cf").write_bytes(b"# \xe9dit\xe9 \xe0 la main\n")
    plan = make_plan(tree, rendered_dir)
    assert statuses(plan) == {"/etc/postfix/main.cf": "changed"}
    assert plan.existing == TOTAL


def test_the_three_formats(tree: RenderedTree, rendered_dir: Path) -> None:
    (rendered_dir / USERS.lstrip("/")).unlink()
    touch_up(rendered_dir, ["/etc/postfix/main.cf"])
    (rendered_dir / "etc" / "postfix" / "old.cf").write_text(header(SOURCE))
    plan = make_plan(tree, rendered_dir)
    summary = f"1 to add, 1 to change, 1 to remove, {TOTAL - 2} unchanged"
    assert plan.summary() == summary

    lines = as_text(plan).splitlines()
    assert lines[:4] == [
        f"+ {USERS}",
        "~ /etc/postfix/main.cf",
        "--- a/etc/postfix/main.cf",
        "+++ b/etc/postfix/main.cf",
    ]
    assert lines[4].startswith("@@ ")
    assert lines[-3:] == ["-# edited on the host", "- /etc/postfix/old.cf", f"Plan: {summary}."]

    markdown = as_markdown(plan)
    assert markdown.startswith(f"### postwarden plan\n\n**{summary}**\n")
    assert "| changed | `/etc/postfix/main.cf` |  |" in markdown
    assert f"| added | `{USERS}` |  |" in markdown
    assert "| removed | `/etc/postfix/old.cf` |  |" in markdown
    assert "```diff\n--- a/etc/postfix/main.cf\n" in markdown

    payload = json.loads(as_json(plan))
    assert payload["summary"] == {"added": 1, "changed": 1, "removed": 1, "unchanged": TOTAL - 2}
    assert [(c["path"], c["status"]) for c in payload["changes"]] == [
        (USERS, "added"),
        ("/etc/postfix/main.cf", "changed"),
        ("/etc/postfix/old.cf", "removed"),
    ]
    assert payload["changes"][1]["diff"] == change(plan, "/etc/postfix/main.cf").diff
    assert set(payload["changes"][1]) == {"path", "status", "diff", "secret", "mode_change"}


# ------------------------------------------------------------- the commands


def test_render_writes_the_tree(tree: RenderedTree, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = runner.invoke(app, ["render", str(EXAMPLE), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert result.stdout == f"rendered {TOTAL} files into {out} (3 readable by owners only)\n"
    assert files_below(out) == {p.lstrip("/"): f.content.encode() for p, f in tree.items()}


@pytest.mark.parametrize("existed", [False, True], ids=["new-dir", "existing-dir"])
def test_render_of_an_invalid_policy_writes_nothing(
    write_policy: Callable[[str], Path], tmp_path: Path, existed: bool
) -> None:
    policy = write_policy(MINIMAL_POLICY + "throttles:\n  staff: {messages: lots}\n")
    parent = tmp_path / "render"
    parent.mkdir()
    out = parent / "out"
    if existed:
        (out / "etc").mkdir(parents=True)
        (out / "etc" / "kept").write_text("from an earlier render\n")
    before = sorted(p.relative_to(parent) for p in parent.rglob("*"))

    result = runner.invoke(app, ["render", str(policy), "-o", str(out)])
    assert result.exit_code == 1
    assert f"{policy}: 1 error, nothing was changed" in result.stderr
    assert sorted(p.relative_to(parent) for p in parent.rglob("*")) == before
    assert out.exists() == existed
    if existed:
        assert (out / "etc" / "kept").read_text() == "from an earlier render\n"


def test_plan_formats(rendered_dir: Path, tmp_path: Path) -> None:
    policy = variant(tmp_path, _staff_throttle)
    before = files_below(rendered_dir)
    base = ["plan", str(policy), "--against", str(rendered_dir)]
    summary = f"0 to add, 1 to change, 0 to remove, {TOTAL - 1} unchanged"

    text = runner.invoke(app, [*base, "--format", "text"])
    assert text.exit_code == 0, text.output
    assert text.stdout.startswith(f"~ {POLICY_COPY}\n--- a{POLICY_COPY}\n")
    assert "+    messages: 300/h\n" in text.stdout
    assert text.stdout.endswith(f"Plan: {summary}.\n")

    markdown = runner.invoke(app, [*base, "--format", "markdown"])
    assert markdown.exit_code == 0, markdown.output
    assert markdown.stdout.startswith(f"### postwarden plan\n\n**{summary}**\n")
    assert f"| changed | `{POLICY_COPY}` |  |" in markdown.stdout

    json_out = runner.invoke(app, [*base, "--format", "json"])
    assert json_out.exit_code == 0, json_out.output
    payload = json.loads(json_out.stdout)
    assert payload["summary"] == {"added": 0, "changed": 1, "removed": 0, "unchanged": TOTAL - 1}
    (changed,) = payload["changes"]
    assert (changed["path"], changed["status"], changed["secret"]) == (
        POLICY_COPY,
        "changed",
        False,
    )
    assert "+    messages: 300/h\n" in changed["diff"]

    assert files_below(rendered_dir) == before, "plan wrote to the directory"


def test_plan_refuses_a_plan_that_rewrites_most_of_the_host(
    write_policy: Callable[[str], Path], rendered_dir: Path
) -> None:
    policy = write_policy(MINIMAL_POLICY)
    before = files_below(rendered_dir)
    base = ["plan", str(policy), "--against", str(rendered_dir)]

    refused = runner.invoke(app, base)
    assert refused.exit_code == 1
    assert refused.stdout.rstrip().splitlines()[-1].startswith("Plan: ")
    assert refused.stderr.startswith("refusing: the plan changes or removes ")
    assert f"of {TOTAL} existing files (more than 30%)" in refused.stderr

    forced = runner.invoke(app, [*base, "--force"])
    assert forced.exit_code == 0, forced.output
    assert forced.stdout == refused.stdout
    assert "refusing" not in forced.stderr
    assert runner.invoke(app, [*base, "--max-change-share", "1"]).exit_code == 0
    assert files_below(rendered_dir) == before


@pytest.mark.parametrize("command", ["render", "plan"])
def test_unknown_host_variable_is_a_positioned_error(
    tmp_path: Path, rendered_dir: Path, command: str
) -> None:
    host_vars = tmp_path / "host.yml"
    host_vars.write_text("relayhost: '[127.0.0.1]:2525'\nsmtpd_port: [25]\n")
    target = (
        ["-o", str(tmp_path / "out")] if command == "render" else ["--against", str(rendered_dir)]
    )
    result = runner.invoke(app, [command, str(EXAMPLE), *target, "--host-vars", str(host_vars)])
    assert result.exit_code == 1
    assert (
        f"{host_vars}:2:1: smtpd_port: unknown key 'smtpd_port' (did you mean 'smtpd_ports'?)"
        in result.stderr.splitlines()
    )
    assert result.stdout == ""
    assert not (tmp_path / "out").exists()


def test_host_variables_reach_the_render(tmp_path: Path) -> None:
    host_vars = tmp_path / "host.yml"
    host_vars.write_text("relayhost: '[127.0.0.1]:2525'\n")
    out = tmp_path / "out"
    result = runner.invoke(
        app, ["render", str(EXAMPLE), "-o", str(out), "--host-vars", str(host_vars)]
    )
    assert result.exit_code == 0, result.output
    assert "relayhost = [127.0.0.1]:2525\n" in (out / "etc/postfix/main.cf").read_text()


def test_the_inventorys_own_host_vars_file_is_taken_as_it_is(tmp_path: Path) -> None:
    """Its settings are under postwarden_host_settings, beside Ansible's own variables."""
    inventory_vars = EXAMPLE.parent / "host_vars" / "mail.example.com.yml"
    out = tmp_path / "out"
    result = runner.invoke(
        app, ["render", str(EXAMPLE), "-o", str(out), "--host-vars", str(inventory_vars)]
    )
    assert result.exit_code == 0, result.output
    assert "mynetworks = 127.0.0.1/32\n" in (out / "etc/postfix/main.cf").read_text()
    # a mistake in it is placed inside the inventory variable
    host_vars = tmp_path / "mail.yml"
    host_vars.write_text("ansible_host: mail\npostwarden_host_settings:\n  relayhots: x\n")
    result = runner.invoke(
        app, ["render", str(EXAMPLE), "-o", str(out), "--host-vars", str(host_vars)]
    )
    assert result.exit_code == 1
    assert (
        f"{host_vars}:3:3: postwarden_host_settings.relayhots: unknown key 'relayhots' "
        "(did you mean 'relayhost'?)" in result.stderr.splitlines()
    )


def test_render_replaces_an_earlier_render(tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert runner.invoke(app, ["render", str(EXAMPLE), "-o", str(out)]).exit_code == 0
    (out / "etc" / "stale").write_text("left over\n")
    shutil.rmtree(out / "etc" / "rspamd")
    assert runner.invoke(app, ["render", str(EXAMPLE), "-o", str(out)]).exit_code == 0
    assert not (out / "etc" / "stale").exists()
    assert (out / "etc" / "rspamd" / "local.d" / "actions.conf").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
