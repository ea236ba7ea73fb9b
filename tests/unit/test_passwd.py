"""`postwarden passwd`: the password policy where passwords are set, hashes Dovecot
itself verifies, and a secrets file changed in exactly one entry or not at all."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from postwarden.accounts.hashing import matches
from postwarden.accounts.password_rules import Account, problems
from postwarden.cli import app
from postwarden.policy.checks import hash_scheme_of
from postwarden.policy.load import load_policy
from postwarden.policy.models.password_policy import PasswordPolicy

runner = CliRunner()
ANSIBLE_VAULT = str(Path(sys.executable).parent / "ansible-vault")
"""ansible-core's own tool, beside the interpreter that runs the tests."""
GOOD = "Gl4cier-Moth-Ink#"
"""Meets the example's policy: 17 characters, four classes, nobody's name, not common."""

POLICY = """\
server:
  hostname: mail.example.com
  postmaster: ops@example.net
password_policy:
  min_length: 12
  min_character_classes: 3
  forbid_common: true
  forbid_personal: true
  hash_scheme: {scheme}
domains:
  example.com: {{}}
  example.org: {{}}
users:
  alice.smith@example.com:
    name: Alice Smith
  bob@example.org: {{}}
"""
BOB_HASH = (
    "$argon2id$v=19$m=65536,t=3,p=1$H9u6lH/f21cwHWi3grvauA"
    "$1+3PT4eQRMj1fGo7Tpzn10pJQjRR8M/h8FtM/dzGkQQ"
)
SECRETS = f"""\
# Secrets for policy.yml.
relay_password: example-relay-password   # the relay's
password_hashes:
  # the staff
  bob@example.org: "{BOB_HASH}"

# the end
"""


@pytest.fixture
def policy(tmp_path: Path) -> Path:
    (tmp_path / "secrets.yml").write_text(SECRETS, encoding="utf-8")
    path = tmp_path / "policy.yml"
    path.write_text(POLICY.format(scheme="argon2id"), encoding="utf-8")
    return path


def passwd(policy: Path, address: str, password: str, *extra: str) -> tuple[int, str]:
    result = runner.invoke(
        app, ["passwd", address, "--policy", str(policy), "--stdin", *extra], input=password + "\n"
    )
    return result.exit_code, result.output


ACCOUNT = Account("alice.smith@example.com", "Alice Smith")


@pytest.mark.parametrize(
    ("password", "key", "reason"),
    [
        ("Sh0rt-pass!", "min_length", "it has 11 characters; the policy asks for 12"),
        ("lowercaseonly-words", "min_character_classes", "it mixes 2 of"),
        ("Password123!", "forbid_common", "one of the 10,000 most common passwords"),
        ("P@ssw0rd-2026", "forbid_common", "one of the 10,000 most common passwords"),
        ("Dragon-2026!!", "forbid_common", "one of the 10,000 most common passwords"),
        ("Sm1th-Family-77", "forbid_personal", "'smith'"),
        ("Ex4mple-Rocks-9", "forbid_personal", "'example'"),
        ("ALICE-in-chains-4", "forbid_personal", "'alice'"),
    ],
)
def test_each_rule_refuses_and_only_while_it_is_on(password: str, key: str, reason: str) -> None:
    rules = PasswordPolicy()
    assert any(reason in found for found in problems(password, rules, ACCOUNT))
    off: dict[str, object] = {
        "min_length": 8,
        "min_character_classes": 1,
        "forbid_common": False,
        "forbid_personal": False,
    }
    relaxed = PasswordPolicy.model_validate({key: off[key]})
    assert not any(reason in found for found in problems(password, relaxed, ACCOUNT))


def test_a_good_password_passes_every_rule() -> None:
    assert problems(GOOD, PasswordPolicy(), ACCOUNT) == []


def test_the_common_list_is_real() -> None:
    from postwarden.accounts.common_passwords import common_passwords, most_common

    assert len(common_passwords()) >= 9_900  # lower-casing merges a few
    assert most_common(3) == ["123456", "password", "12345678"]


def test_passwd_writes_one_entry_and_keeps_every_other_line(policy: Path) -> None:
    before = (policy.parent / "secrets.yml").read_text()
    code, output = passwd(policy, "Alice.Smith@example.com", GOOD)
    assert code == 0, output
    after = (policy.parent / "secrets.yml").read_text()
    added = [line for line in after.splitlines() if line not in before.splitlines()]
    assert len(added) == 3, after  # the hash, the password_set section and its entry
    assert all(line in after.splitlines() for line in before.splitlines()), "a line was lost"
    loaded = load_policy(policy)
    new_hash = loaded.secrets.password_hashes["alice.smith@example.com"]
    assert hash_scheme_of(new_hash) == "argon2id"
    assert matches(GOOD, new_hash, "argon2id")
    assert "alice.smith@example.com" in loaded.secrets.password_set
    assert os.stat(policy.parent / "secrets.yml").st_mode & 0o777 == 0o644  # kept

    # again: the entry is replaced in place, not added twice
    code, output = passwd(policy, "alice.smith@example.com", "An0ther-Fine-Ink#")
    assert code == 0, output
    again = (policy.parent / "secrets.yml").read_text()
    assert again.count("alice.smith@example.com") == 2
    assert matches(
        "An0ther-Fine-Ink#",
        load_policy(policy).secrets.password_hashes["alice.smith@example.com"],
        "argon2id",
    )


@pytest.mark.parametrize("scheme", ["argon2id", "bcrypt", "sha512-crypt"])
def test_dovecot_verifies_the_hash_of_each_scheme(tmp_path: Path, scheme: str) -> None:
    (tmp_path / "secrets.yml").write_text(SECRETS, encoding="utf-8")
    policy = tmp_path / "policy.yml"
    policy.write_text(POLICY.format(scheme=scheme), encoding="utf-8")
    code, output = passwd(policy, "alice.smith@example.com", GOOD)
    assert code == 0, output
    made = load_policy(policy).secrets.password_hashes["alice.smith@example.com"]
    assert hash_scheme_of(made) == scheme
    prefix = {"argon2id": "{ARGON2ID}", "bcrypt": "{BLF-CRYPT}", "sha512-crypt": "{SHA512-CRYPT}"}
    for password, verified in ((GOOD, True), (GOOD + "x", False)):
        checked = subprocess.run(
            ["doveadm", "-c", "/dev/null", "pw", "-t", prefix[scheme] + made, "-p", password],
            capture_output=True,
            text=True,
            check=False,
        )
        assert (checked.returncode == 0) is verified, checked.stderr


def test_a_refused_password_says_every_reason_and_writes_nothing(policy: Path) -> None:
    before = (policy.parent / "secrets.yml").read_bytes()
    code, output = passwd(policy, "alice.smith@example.com", "smith")
    assert code == 1
    assert "it has 5 characters" in output
    assert "'smith', from the user's address or name" in output
    assert (policy.parent / "secrets.yml").read_bytes() == before


# ------------------------------------------------------------------ vaulted files


def vault(*args: str, password_file: Path, stdin: str | None = None) -> str:
    done = subprocess.run(
        [ANSIBLE_VAULT, *args, "--vault-password-file", str(password_file)],
        capture_output=True,
        text=True,
        input=stdin,
        check=True,
    )
    return done.stdout


@pytest.fixture
def vault_password(tmp_path: Path) -> Path:
    path = tmp_path / "vault-password"
    path.write_text("correct horse battery staple\n")
    return path


def test_a_file_encrypted_whole_stays_encrypted(policy: Path, vault_password: Path) -> None:
    secrets = policy.parent / "secrets.yml"
    vault("encrypt", str(secrets), password_file=vault_password)
    assert secrets.read_bytes().startswith(b"$ANSIBLE_VAULT;")
    code, output = passwd(
        policy, "alice.smith@example.com", GOOD, "--vault-password-file", str(vault_password)
    )
    assert code == 0, output
    assert secrets.read_bytes().startswith(b"$ANSIBLE_VAULT;1.1;AES256")
    plain = vault("view", str(secrets), password_file=vault_password)
    assert all(line in plain.splitlines() for line in SECRETS.splitlines())
    loaded = load_policy(policy, vault_password_file=vault_password)
    assert matches(GOOD, loaded.secrets.password_hashes["alice.smith@example.com"], "argon2id")


def test_a_labelled_vault_keeps_its_vault_id(policy: Path, vault_password: Path) -> None:
    secrets = policy.parent / "secrets.yml"
    subprocess.run(
        [ANSIBLE_VAULT, "encrypt", str(secrets), "--vault-id", f"prod@{vault_password}"],
        capture_output=True,
        check=True,
    )
    assert secrets.read_bytes().startswith(b"$ANSIBLE_VAULT;1.2;AES256;prod\n")
    code, output = passwd(
        policy, "alice.smith@example.com", GOOD, "--vault-password-file", str(vault_password)
    )
    assert code == 0, output
    assert secrets.read_bytes().startswith(b"$ANSIBLE_VAULT;1.2;AES256;prod\n")
    shown = subprocess.run(
        [ANSIBLE_VAULT, "view", str(secrets), "--vault-id", f"prod@{vault_password}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "alice.smith@example.com:" in shown


def test_values_encrypted_one_by_one_get_a_new_one_the_same_way(
    policy: Path, vault_password: Path
) -> None:
    secrets = policy.parent / "secrets.yml"
    encrypted = vault(
        "encrypt_string",
        "--stdin-name",
        "bob@example.org",
        password_file=vault_password,
        stdin=BOB_HASH,
    )
    text = SECRETS.replace(
        f'  bob@example.org: "{BOB_HASH}"\n',
        "".join("  " + line + "\n" for line in encrypted.strip().splitlines()),
    )
    secrets.write_text(text)
    code, output = passwd(
        policy, "alice.smith@example.com", GOOD, "--vault-password-file", str(vault_password)
    )
    assert code == 0, output
    after = secrets.read_text()
    assert all(line in after.splitlines() for line in text.splitlines()), "bob's value changed"
    assert "alice.smith@example.com: !vault |" in after
    loaded = load_policy(policy, vault_password_file=vault_password)
    new_hash = loaded.secrets.password_hashes["alice.smith@example.com"]
    assert matches(GOOD, new_hash, "argon2id")
    assert new_hash not in after, "the new hash is in clear beside encrypted ones"
    assert loaded.secrets.password_hashes["bob@example.org"].startswith("$argon2id$")


# ------------------------------------------------------------------ bad input


def test_bad_input_gets_a_clear_error_and_the_file_stays(
    policy: Path, vault_password: Path
) -> None:
    secrets = policy.parent / "secrets.yml"
    before = secrets.read_bytes()

    code, output = passwd(policy, "carol@example.com", GOOD)
    assert code == 1
    assert "carol@example.com is not a user of" in output

    with secrets.open("rb") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        code, output = passwd(policy, "alice.smith@example.com", GOOD)
    assert code == 1
    assert "is locked" in output

    secrets.chmod(0o444)  # even root is told: nobody meant it to be written
    try:
        code, output = passwd(policy, "alice.smith@example.com", GOOD)
        assert code == 1
        assert "read-only" in output
    finally:
        secrets.chmod(0o644)
    assert secrets.read_bytes() == before

    vault("encrypt", str(secrets), password_file=vault_password)
    encrypted = secrets.read_bytes()
    code, output = passwd(policy, "alice.smith@example.com", GOOD)
    assert code == 1
    assert "--vault-password-file" in output
    assert secrets.read_bytes() == encrypted
    assert not [p for p in policy.parent.iterdir() if p.name.startswith(".secrets.yml.")]


@pytest.mark.parametrize(
    ("before", "after"),
    [
        # no section yet, no line break at the end
        ("relay_password: x", 'relay_password: x\npassword_hashes:\n  a@example.com: "H"\n'),
        # an empty flow mapping, as the example has
        ("password_hashes: {}\n", 'password_hashes:\n  a@example.com: "H"\n'),
        # a flow mapping with entries becomes a block, the old entry as written
        (
            'password_hashes: {b@example.com: "B"}\n',
            'password_hashes:\n  b@example.com: "B"\n  a@example.com: "H"\n',
        ),
        # a section left empty
        ("password_hashes:\nother: 1\n", 'password_hashes:\n  a@example.com: "H"\nother: 1\n'),
        # four-space indentation and a comment after the last entry are kept
        (
            'password_hashes:\n    b@example.com: "B"  # bob\n# next\nother: 1\n',
            'password_hashes:\n    b@example.com: "B"  # bob\n    a@example.com: "H"\n'
            "# next\nother: 1\n",
        ),
        # the entry is replaced where it is, whatever the case of the key
        (
            'password_hashes:\n  A@Example.com: "old"  # hers\n  b@example.com: "B"\n',
            'password_hashes:\n  A@Example.com: "H"  # hers\n  b@example.com: "B"\n',
        ),
    ],
)
def test_the_entry_lands_where_a_person_would_put_it(before: str, after: str) -> None:
    from postwarden.accounts.secrets_edit import Entry, _with_entry

    assert _with_entry(before, Entry("password_hashes", "a@example.com", '"H"')) == after
