"""Dovecot: the rendered dovecot.conf read by doveconf, the passdb checked by doveadm,
the userdb read as Dovecot's passwd-file format lays it out.

- ``doveconf -c FILE -n`` parses the file without opening the files it names
  (``ssl_cert = <...``, the passwd-files), so the rendered file is checked as is;
- ``doveconf -c FILE -x`` also reads the ``<file`` values: the test copy points
  ssl_cert and ssl_key at a self-signed pair made in tmp_path;
- ``doveadm pw -t HASH -p PASSWORD`` verifies a hash (exit 0, "(verified)") and
  exits non-zero on a wrong password; it runs with an empty config of its own.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from postwarden.policy.load import LoadedPolicy, load_policy
from postwarden.render.dovecot import render_dovecot
from postwarden.render.host import HostSettings
from postwarden.render.tree import RenderedFile
from tests.conftest import MINIMAL_POLICY
from tests.render.conftest import SOURCE, write_files

CONF = "/etc/dovecot/dovecot.conf"
PASSWORDS = "/etc/dovecot/postwarden/passwords"
USERS = "/etc/dovecot/postwarden/users"
ALICE_PASSWORD = "Tulip-Harbor-Quartz-17"  # the README's throwaway test password
CONFIG_ERROR = 89  # doveconf's exit status for a configuration it cannot use

WritePolicy = Callable[..., Path]


@pytest.fixture(scope="session", autouse=True)
def _tools() -> None:
    for tool in ("doveconf", "doveadm", "openssl"):
        assert shutil.which(tool), f"{tool} is not installed: run scripts/setup --test"


def render(loaded: LoadedPolicy) -> list[RenderedFile]:
    return render_dovecot(loaded.policy, loaded.secrets, HostSettings(), SOURCE)


def by_path(files: list[RenderedFile]) -> dict[str, str]:
    return {f.path: f.content for f in files}


def run(*command: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(part) for part in command], capture_output=True, text=True, timeout=60, check=False
    )


def entries(text: str) -> list[str]:
    return [line for line in text.splitlines() if line and not line.startswith("#")]


def written_conf(example: LoadedPolicy, root: Path) -> Path:
    write_files(render(example), root)
    return root / CONF.lstrip("/")


def self_signed_pair(directory: Path) -> tuple[Path, Path]:
    cert, key = directory / "mail.example.com.crt", directory / "mail.example.com.key"
    result = run(
        "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        "-subj", "/CN=mail.example.com", "-keyout", key, "-out", cert,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return cert, key


def point_tls_at(conf: Path, example: LoadedPolicy, cert: Path, key: Path) -> None:
    tls = example.policy.server.tls
    assert tls is not None
    text = conf.read_text()
    for old, new in ((tls.cert, cert), (tls.key, key)):
        assert text.count(f"<{old}\n") == 1
        text = text.replace(f"<{old}\n", f"<{new}\n")
    conf.write_text(text)


# ---------------------------------------------------------------- doveconf


def test_doveconf_reads_the_rendered_file(example: LoadedPolicy, tmp_path: Path) -> None:
    result = run("doveconf", "-c", written_conf(example, tmp_path), "-n")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    shown = result.stdout.splitlines()
    # what Dovecot understood: logins need TLS, and come from the rendered passwd-files
    assert "ssl = required" in shown
    assert f"  args = username_format=%Lu {PASSWORDS}" in shown
    assert f"  args = username_format=%Lu {USERS}" in shown
    assert "  postmaster_address = postmaster@example.com" in shown
    assert "lmtp_rcpt_check_quota = yes" in shown


def test_doveconf_rejects_an_unknown_setting(example: LoadedPolicy, tmp_path: Path) -> None:
    conf = written_conf(example, tmp_path)
    conf.write_text(conf.read_text() + "ssl_mininum_protocol = TLSv1.2\n")
    result = run("doveconf", "-c", conf, "-n")
    assert result.returncode == CONFIG_ERROR
    assert "Unknown setting: ssl_mininum_protocol" in result.stderr


def test_doveconf_reads_the_certificate_files(example: LoadedPolicy, tmp_path: Path) -> None:
    conf = written_conf(example, tmp_path / "root")
    cert, key = self_signed_pair(tmp_path)
    point_tls_at(conf, example, cert, key)

    result = run("doveconf", "-c", conf, "-x", "ssl_cert")
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"ssl_cert = {cert.read_text()}\n"
    assert run("doveconf", "-c", conf, "-x").returncode == 0

    cert.unlink()
    result = run("doveconf", "-c", conf, "-x")
    assert result.returncode == CONFIG_ERROR
    assert f"ssl_cert: Can't open file {cert}" in result.stderr


# --------------------------------------------------------------- the passdb


def test_passwords_hold_the_active_users_with_a_hash(example: LoadedPolicy) -> None:
    lines = entries(by_path(render(example))[PASSWORDS])
    users = [line.split(":", 1)[0] for line in lines]
    assert users == ["alice@example.com", "bob@example.org", "newsletter@example.com"]
    policy, hashes = example.policy, example.secrets.password_hashes
    assert policy.users["former@example.com"].disabled
    assert set(users) == {a for a, u in policy.users.items() if not u.disabled and a in hashes}
    for line in lines:
        user, password_hash = line.split(":", 1)
        assert password_hash.startswith("{ARGON2ID}$argon2id$"), user
        assert password_hash == "{ARGON2ID}" + hashes[user]


def test_passwords_leave_out_disabled_users_and_users_without_a_hash(
    example: LoadedPolicy, write_policy: WritePolicy
) -> None:
    policy = MINIMAL_POLICY + (
        "users:\n"
        "  carol@example.com: {}\n"
        "  dave@example.com: {}\n"
        "  erin@example.com: {disabled: true}\n"
    )
    a_hash = example.secrets.password_hashes["alice@example.com"]
    secrets = f'password_hashes:\n  carol@example.com: "{a_hash}"\n  erin@example.com: "{a_hash}"\n'
    files = by_path(render(load_policy(write_policy(policy, secrets))))
    assert entries(files[PASSWORDS]) == [f"carol@example.com:{{ARGON2ID}}{a_hash}"]
    assert [line.split(":", 1)[0] for line in entries(files[USERS])] == [
        "carol@example.com",
        "dave@example.com",
        "erin@example.com",
    ]


def verify(password_hash: str, password: str) -> subprocess.CompletedProcess[str]:
    return run("doveadm", "-c", "/dev/null", "pw", "-t", password_hash, "-p", password)


def test_doveadm_verifies_the_rendered_hash(example: LoadedPolicy) -> None:
    lines = entries(by_path(render(example))[PASSWORDS])
    (alice,) = [line for line in lines if line.startswith("alice@example.com:")]
    password_hash = alice.split(":", 1)[1]

    result = verify(password_hash, ALICE_PASSWORD)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"{password_hash} (verified)"

    wrong = verify(password_hash, ALICE_PASSWORD.replace("17", "18"))
    assert wrong.returncode != 0
    assert "Password mismatch" in wrong.stderr


# --------------------------------------------------------------- the userdb


def test_users_list_every_mailbox_with_its_quota_in_bytes(example: LoadedPolicy) -> None:
    lines = entries(by_path(render(example))[USERS])
    by_user = {line.split(":", 1)[0]: line for line in lines}
    assert list(by_user) == sorted(example.policy.users)
    assert len(by_user) == 4
    for user, quota in (("alice@example.com", 5 * 1024**3), ("bob@example.org", 2 * 1024**3)):
        assert by_user[user].endswith(f"userdb_quota_rule=*:storage={quota}B"), user
    for user in ("former@example.com", "newsletter@example.com"):
        assert "quota" not in by_user[user], user


def passwd_file_fields(line: str) -> list[str]:
    """A passwd-file line as Dovecot splits it: user:password:uid:gid:gecos:home:shell:extra
    (src/auth/db-passwd-file.c; the extra fields are the rest, colons and all)."""
    return line.split(":", 7)


def test_the_quota_is_in_the_extra_fields(example: LoadedPolicy) -> None:
    lines = entries(by_path(render(example))[USERS])
    (alice,) = [line for line in lines if line.startswith("alice@example.com:")]
    fields = passwd_file_fields(alice)
    assert len(fields) == 8
    assert fields[6] == ""  # shell
    assert fields[7].split() == [f"userdb_quota_rule=*:storage={5 * 1024**3}B"]
