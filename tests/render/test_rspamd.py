"""rspamd: the rendered local.d files over a copy of Debian's /etc/rspamd, checked and
read back by rspamadm.

Only this form checks the copy (a plain ``-c`` silently reads /etc/rspamd)::

    rspamadm --var=CONFDIR=DIR --var=LOCAL_CONFDIR=DIR configtest -s -c DIR/rspamd.conf

Strict mode (``-s``) fails offline while the fuzzy check wants rspamd's public
servers, so it runs on a render with ``rspamd_fuzzy=False``. The copy leaves out
what this machine's local.d, override.d and postwarden directories hold (the
package ships them empty; other runs leave files there).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from postwarden.policy.load import LoadedPolicy, load_policy
from postwarden.render.host import HostSettings
from postwarden.render.rspamd import render_rspamd
from postwarden.render.tree import RenderedFile
from tests.conftest import MINIMAL_POLICY
from tests.render.conftest import SOURCE, write_files

RSPAMD_ETC = Path("/etc/rspamd")
LOCAL_D = "/etc/rspamd/local.d"
ACTIONS = f"{LOCAL_D}/actions.conf"
SETTINGS = f"{LOCAL_D}/settings.conf"
DKIM_SIGNING = f"{LOCAL_D}/dkim_signing.conf"
SELECTORS = "/etc/rspamd/postwarden/dkim_selectors.map"
OFFLINE = HostSettings(rspamd_fuzzy=False)

WritePolicy = Callable[..., Path]

OUTBOUND_SPAM = """\
abuse:
  outbound_spam:
    add_header_score: 4.5
    hold_score: 9.5
    reject_score: 21
"""


@pytest.fixture(scope="session", autouse=True)
def _tools() -> None:
    assert shutil.which("rspamadm"), "rspamadm is not installed: run scripts/setup --test"


def render(loaded: LoadedPolicy, host: HostSettings = OFFLINE) -> list[RenderedFile]:
    return render_rspamd(loaded.policy, loaded.secrets, host, SOURCE)


def by_path(files: list[RenderedFile]) -> dict[str, str]:
    return {f.path: f.content for f in files}


def run(*command: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(part) for part in command], capture_output=True, text=True, timeout=60, check=False
    )


def rspamd_copy(files: list[RenderedFile], tmp_path: Path) -> Path:
    """Debian's /etc/rspamd with the rendered files over it."""
    root = write_files(files, tmp_path / "root")
    config = tmp_path / "rspamd"

    def leave_out(directory: str, names: list[str]) -> list[str]:
        if Path(directory) in (RSPAMD_ETC / "local.d", RSPAMD_ETC / "override.d"):
            return names
        return ["postwarden"] if Path(directory) == RSPAMD_ETC else []

    shutil.copytree(RSPAMD_ETC, config, ignore=leave_out)
    shutil.copytree(root / "etc" / "rspamd", config, dirs_exist_ok=True)
    return config


def rspamadm(config: Path, command: str, *args: str) -> subprocess.CompletedProcess[str]:
    return run(
        "rspamadm",
        f"--var=CONFDIR={config}",
        f"--var=LOCAL_CONFDIR={config}",
        command,
        *args,
        "-c",
        config / "rspamd.conf",
    )


def configtest(config: Path, strict: bool = True) -> subprocess.CompletedProcess[str]:
    return rspamadm(config, "configtest", *(["-s"] if strict else []))


def dumped_actions(config: Path) -> dict[str, float]:
    """The action thresholds as rspamd reads them from the copy."""
    result = rspamadm(config, "configdump", "actions")
    assert result.returncode == 0, result.stderr
    found = re.findall(r"^(\w+) = ([\d.]+);$", result.stdout, re.MULTILINE)
    return {name: float(value) for name, value in found}


def thresholds(actions_conf: str) -> dict[str, float]:
    found = re.findall(r"^(\w+) = ([\d.]+);$", actions_conf, re.MULTILINE)
    return {name: float(value) for name, value in found}


# ----------------------------------------------------- rspamd reads it all


def test_strict_configtest_passes_with_fuzzy_off(example: LoadedPolicy, tmp_path: Path) -> None:
    files = render(example)
    assert f"{LOCAL_D}/fuzzy_check.conf" in by_path(files)
    result = configtest(rspamd_copy(files, tmp_path))
    assert (result.returncode, result.stdout) == (0, "syntax OK\n"), result.stderr


def test_configtest_passes_with_fuzzy_on(example: LoadedPolicy, tmp_path: Path) -> None:
    files = render(example, HostSettings())
    assert f"{LOCAL_D}/fuzzy_check.conf" not in by_path(files)
    result = configtest(rspamd_copy(files, tmp_path), strict=False)
    assert (result.returncode, result.stdout) == (0, "syntax OK\n"), result.stderr


@pytest.mark.parametrize(
    "broken",
    ["reject = 15;\n}\n", "reject = {\n", 'reject = "15;\n'],
    ids=["unopened-brace", "unclosed-brace", "unclosed-quote"],
)
def test_a_broken_actions_conf_fails(example: LoadedPolicy, tmp_path: Path, broken: str) -> None:
    config = rspamd_copy(render(example), tmp_path)
    (config / "local.d" / "actions.conf").write_text(broken)
    result = configtest(config)
    assert result.returncode != 0
    assert result.stdout == "syntax BAD\n"
    assert "actions.conf" in result.stderr


# ------------------------------------------------------ what rspamd enforces


def dumped_rules(config: Path) -> dict[str, str]:
    """The settings rules as rspamd reads them from the copy, by name."""
    result = rspamadm(config, "configdump", "settings")
    assert result.returncode == 0, result.stderr
    return dict(re.findall(r"^(\w+) \{\n(.*?)^\}$", result.stdout, re.MULTILINE | re.DOTALL))


def rule_thresholds(rule: str) -> dict[str, float]:
    return {name: float(value) for name, value in re.findall(r"(\w+) = ([\d.]+);", rule)}


def test_inbound_mail_keeps_rspamds_thresholds_and_is_never_held(
    example: LoadedPolicy, tmp_path: Path
) -> None:
    files = render(example)
    assert thresholds(by_path(files)[ACTIONS]) == {"reject": 15, "add_header": 6}
    config = rspamd_copy(files, tmp_path)
    dumped = rspamadm(config, "configdump", "actions").stdout
    assert dumped_actions(config) == {"reject": 15, "add_header": 6}
    # declared, so that the outbound rules can lower it, at a score nothing reaches
    assert re.search(r"quarantine \{\s+score = 10000;\s+\}", dumped), dumped
    assert "greylist" not in dumped


def test_outbound_scores_apply_to_logins_and_mynetworks_only(
    example: LoadedPolicy, tmp_path: Path
) -> None:
    host = HostSettings(rspamd_fuzzy=False, mynetworks=["127.0.0.1/32", "[2001:db8::]/64"])
    rules = dumped_rules(rspamd_copy(render(example, host), tmp_path))
    assert set(rules) == {"postwarden_outbound_login", "postwarden_outbound_networks"}
    login, networks = rules["postwarden_outbound_login"], rules["postwarden_outbound_networks"]
    assert "authenticated = true;" in login
    assert re.search(r'ip \[\s+"127.0.0.1/32",\s+"2001:db8::/64",\s+\]', networks), networks
    for rule in (login, networks):
        assert 'priority = "high";' in rule
        assert rule_thresholds(rule) == {"reject": 15, "quarantine": 10, "add_header": 6}


def test_rspamd_reads_the_thresholds_from_the_rendered_file(
    write_policy: WritePolicy, tmp_path: Path
) -> None:
    """Scores no default has: they can only come from the rendered settings.conf."""
    loaded = load_policy(write_policy(MINIMAL_POLICY + OUTBOUND_SPAM))
    rules = dumped_rules(rspamd_copy(render(loaded), tmp_path))
    assert rule_thresholds(rules["postwarden_outbound_login"]) == {
        "reject": 21,
        "quarantine": 9.5,
        "add_header": 4.5,
    }


def test_without_outbound_spam_outbound_mail_meets_inbounds_thresholds(
    write_policy: WritePolicy, tmp_path: Path
) -> None:
    loaded = load_policy(write_policy(MINIMAL_POLICY))
    assert loaded.policy.abuse.outbound_spam is None
    files = render(loaded)
    assert "abuse.outbound_spam is not configured" in by_path(files)[SETTINGS]
    config = rspamd_copy(files, tmp_path)
    assert configtest(config).returncode == 0
    assert dumped_rules(config) == {}
    assert dumped_actions(config) == {"reject": 15, "add_header": 6}


def test_greylisting_is_off(example: LoadedPolicy, tmp_path: Path) -> None:
    dumped = rspamadm(rspamd_copy(render(example), tmp_path), "configdump", "greylist")
    assert dumped.returncode == 0, dumped.stderr
    assert "enabled = false;" in dumped.stdout


def test_dkim_signing_with_the_selector_map(example: LoadedPolicy, tmp_path: Path) -> None:
    files = by_path(render(example))
    signing = files[DKIM_SIGNING]
    assert "enabled = true;" in signing.splitlines()
    assert f'selector_map = "{SELECTORS}";' in signing.splitlines()
    assert "example.com s2026" in files[SELECTORS].splitlines()
    assert [line for line in files[SELECTORS].splitlines() if not line.startswith("#")] == [
        "example.com s2026"
    ]

    config = rspamd_copy(render(example), tmp_path)
    dumped = rspamadm(config, "configdump", "dkim_signing")
    assert dumped.returncode == 0, dumped.stderr
    assert "enabled = true;" in dumped.stdout
    assert f'selector_map = "{SELECTORS}";' in dumped.stdout


def test_no_selectors_no_signing(write_policy: WritePolicy, tmp_path: Path) -> None:
    loaded = load_policy(write_policy(MINIMAL_POLICY))
    files = render(loaded)
    signing = by_path(files)[DKIM_SIGNING]
    assert "enabled = false;" in signing.splitlines()
    assert "selector_map" not in signing
    dumped = rspamadm(rspamd_copy(files, tmp_path), "configdump", "dkim_signing")
    assert dumped.returncode == 0, dumped.stderr
    assert "enabled = false;" in dumped.stdout
