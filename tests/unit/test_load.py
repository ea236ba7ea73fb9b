"""Loading whole policies: the contract, secrets and vaults, file-level failures."""

from __future__ import annotations

import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from postwarden.policy.load import LoadedPolicy, PolicyInvalid, load_policy
from postwarden.policy.secret_types import SecretValue
from tests.conftest import CONTRACT, EXAMPLE_INVENTORY, MINIMAL_POLICY

WritePolicy = Callable[..., Path]


def _errors(policy: Path, **kwargs: object) -> list[str]:
    with pytest.raises(PolicyInvalid) as raised:
        load_policy(policy, **kwargs)  # type: ignore[arg-type]
    return [p.text() for p in raised.value.problems if p.severity == "error"]


def test_the_contract_validates_exactly_as_written() -> None:
    loaded = load_policy(CONTRACT)
    policy = loaded.policy
    assert policy.server.message_size_limit == 50 * 1024**2
    assert policy.users["alice@example.com"].aliases == ["info@example.com", "sales@example.com"]
    assert policy.lists["all-staff@example.com"].priority == "low"
    assert policy.throttles["staff"].messages is not None
    assert policy.throttles["staff"].messages.count == 200
    assert policy.throttles["staff"].messages.window == 3600
    assert policy.abuse.internal_spammer is not None
    assert policy.abuse.internal_spammer.size_tolerance == 2.0
    assert [a.state for a in policy.ip_pools["main"].addresses] == ["active", "draining"]
    assert policy.ip_pools["bulk"].failover == "main"
    assert [e.on for e in policy.events][:2] == ["abuse.internal_spammer", "abuse.bad_smtp_session"]
    assert policy.notifications["oncall"].kind == "sms"
    relay = policy.server.notification_relay
    assert relay is not None
    assert isinstance(relay.password, SecretValue)
    assert relay.password.reveal() == "example-relay-password"


def test_the_example_inventory_is_clean() -> None:
    """Not a warning: every setting it has is enforced."""
    loaded = load_policy(EXAMPLE_INVENTORY / "policy.yml")
    assert [f"{w.path}: {w.message}" for w in loaded.warnings] == []
    assert set(loaded.secrets.password_hashes) == {
        "alice@example.com",
        "bob@example.org",
        "newsletter@example.com",
    }


def test_example_hashes_are_of_the_documented_passwords() -> None:
    from argon2 import PasswordHasher

    hashes = load_policy(EXAMPLE_INVENTORY / "policy.yml").secrets.password_hashes
    hasher = PasswordHasher()
    assert hasher.verify(hashes["alice@example.com"], "Tulip-Harbor-Quartz-17")
    assert hasher.verify(hashes["bob@example.org"], "Maple-Ridge-Lantern-42")
    assert hasher.verify(hashes["newsletter@example.com"], "Copper-Falcon-Meadow-93")


def test_defaults_of_optional_sections(write_policy: WritePolicy) -> None:
    policy = load_policy(write_policy(MINIMAL_POLICY)).policy
    assert policy.version == 1
    assert policy.password_policy.min_length == 12
    assert policy.password_policy.hash_scheme == "argon2id"
    assert policy.server.message_size_limit == 25 * 1024**2
    assert policy.users == {}
    assert policy.events == []


def test_secret_resolves_from_the_sibling_secrets_file(write_policy: WritePolicy) -> None:
    text = MINIMAL_POLICY.replace(
        "domains:",
        "  notification_relay:\n    host: relay.example.net\n    password: !secret relay\ndomains:",
    )
    loaded = load_policy(write_policy(text, secrets="relay: s3cret-value\n"))
    relay = loaded.policy.server.notification_relay
    assert relay is not None
    assert relay.password is not None
    assert relay.password.reveal() == "s3cret-value"
    assert "s3cret-value" not in repr(loaded.policy)
    assert "s3cret-value" not in str(relay.password)


def test_unknown_secret_suggests_the_closest_name(write_policy: WritePolicy) -> None:
    text = MINIMAL_POLICY.replace(
        "domains:",
        "  notification_relay:\n    host: relay.example.net\n"
        "    password: !secret relay_pasword\ndomains:",
    )
    policy = write_policy(text, secrets="relay_password: x\nother: y\n")
    assert _errors(policy) == [
        f"{policy}:6:15: server.notification_relay.password: unknown secret 'relay_pasword' "
        "(did you mean 'relay_password'?)"
    ]


def test_secret_without_secrets_file(write_policy: WritePolicy) -> None:
    text = MINIMAL_POLICY.replace(
        "domains:",
        "  notification_relay:\n    host: relay.example.net\n    password: !secret relay\ndomains:",
    )
    (error,) = _errors(write_policy(text))
    assert "no secrets file was found" in error


def test_explicit_missing_secrets_file(write_policy: WritePolicy, tmp_path: Path) -> None:
    (error,) = _errors(write_policy(MINIMAL_POLICY), secrets_path=tmp_path / "nope.yml")
    assert "does not exist" in error


def test_plain_text_where_a_secret_belongs_is_not_echoed(write_policy: WritePolicy) -> None:
    text = MINIMAL_POLICY.replace(
        "domains:",
        "  notification_relay:\n    host: relay.example.net\n    password: hunter2-plain\ndomains:",
    )
    (error,) = _errors(write_policy(text))
    assert "expected a !secret reference" in error
    assert "hunter2-plain" not in error


def test_secret_where_text_belongs(write_policy: WritePolicy) -> None:
    text = MINIMAL_POLICY.replace("mail.example.com", "!secret relay")
    (error,) = _errors(write_policy(text, secrets="relay: mail.example.com\n"))
    assert "a !secret value is not allowed here" in error or "got a !secret value" in error
    assert "mail.example.com" not in error.split(": ", 2)[2]


def _vault_encrypt(plain: bytes, password: bytes) -> bytes:
    from ansible.parsing.vault import VaultLib, VaultSecret

    result: bytes = VaultLib([("default", VaultSecret(password))]).encrypt(plain)
    return result


def _relay_policy(write_policy: WritePolicy) -> Path:
    text = MINIMAL_POLICY.replace(
        "domains:",
        "  notification_relay:\n    host: relay.example.net\n    password: !secret relay\ndomains:",
    )
    return write_policy(text)


def _relay_password(loaded: LoadedPolicy) -> str:
    relay = loaded.policy.server.notification_relay
    assert relay is not None
    assert relay.password is not None
    return relay.password.reveal()


def _password_file(directory: Path, password: str) -> Path:
    path = directory / "vault-pass"
    path.write_text(password + "\n")
    return path


def test_vault_encrypted_secrets_file(write_policy: WritePolicy, tmp_path: Path) -> None:
    policy = _relay_policy(write_policy)
    (tmp_path / "secrets.yml").write_bytes(_vault_encrypt(b"relay: from-the-vault\n", b"pw"))
    loaded = load_policy(policy, vault_password_file=_password_file(tmp_path, "pw"))
    assert _relay_password(loaded) == "from-the-vault"


def test_vault_password_from_the_environment(
    write_policy: WritePolicy, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    policy = _relay_policy(write_policy)
    (tmp_path / "secrets.yml").write_bytes(_vault_encrypt(b"relay: env\n", b"pw"))
    monkeypatch.setenv("ANSIBLE_VAULT_PASSWORD_FILE", str(_password_file(tmp_path, "pw")))
    assert _relay_password(load_policy(policy)) == "env"


def test_vault_password_script(write_policy: WritePolicy, tmp_path: Path) -> None:
    policy = _relay_policy(write_policy)
    (tmp_path / "secrets.yml").write_bytes(_vault_encrypt(b"relay: scripted\n", b"pw2"))
    script = tmp_path / "vault-pass.sh"
    script.write_text("#!/bin/sh\necho pw2\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    assert _relay_password(load_policy(policy, vault_password_file=script)) == "scripted"


def test_vault_without_password(
    write_policy: WritePolicy, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    policy = _relay_policy(write_policy)
    (tmp_path / "secrets.yml").write_bytes(_vault_encrypt(b"relay: x\n", b"pw"))
    monkeypatch.delenv("ANSIBLE_VAULT_PASSWORD_FILE", raising=False)
    errors = _errors(policy)
    assert any("encrypted with ansible-vault" in e and "--vault-password-file" in e for e in errors)


def test_vault_with_wrong_password(write_policy: WritePolicy, tmp_path: Path) -> None:
    policy = _relay_policy(write_policy)
    (tmp_path / "secrets.yml").write_bytes(_vault_encrypt(b"relay: x\n", b"right"))
    errors = _errors(policy, vault_password_file=_password_file(tmp_path, "wrong"))
    assert any("cannot decrypt the secrets file" in e for e in errors)
    assert not any("right" in e for e in errors)


def test_inline_vault_values(write_policy: WritePolicy, tmp_path: Path) -> None:
    policy = _relay_policy(write_policy)
    cipher = _vault_encrypt(b"inline-secret", b"pw").decode()
    indented = "\n".join("  " + line for line in cipher.splitlines())
    (tmp_path / "secrets.yml").write_text(f"relay: !vault |\n{indented}\n")
    loaded = load_policy(policy, vault_password_file=_password_file(tmp_path, "pw"))
    assert _relay_password(loaded) == "inline-secret"


def test_unreadable_policy(tmp_path: Path) -> None:
    (error,) = _errors(tmp_path / "missing.yml")
    assert (
        error
        == f"{tmp_path / 'missing.yml'}:1:1: cannot read the policy file: No such file or directory"
    )


def test_vault_encrypted_policy_is_refused(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yml"
    policy.write_bytes(_vault_encrypt(MINIMAL_POLICY.encode(), b"pw"))
    (error,) = _errors(policy)
    assert "encrypted with ansible-vault" in error


def test_all_structural_errors_at_once(write_policy: WritePolicy) -> None:
    text = (
        "server:\n  hostname: mail.example.com\n  postmaster: bad\n"
        "domains:\n  example.com: {throttle: Nope}\n"
        "throttles:\n  staff: {messages: 200/hour}\n"
    )
    errors = _errors(write_policy(text))
    assert len(errors) == 3
    assert [e.split(": ", 2)[1] for e in errors] == [
        "server.postmaster",
        "domains.example.com.throttle",
        "throttles.staff.messages",
    ]


def test_checks_still_run_for_sections_that_validated(write_policy: WritePolicy) -> None:
    text = (
        "server:\n  hostname: mail.example.com\n  postmaster: bad\n"
        "domains:\n  example.com: {throttle: staf}\n"
        "throttles:\n  staff: {messages: 200/h}\n"
    )
    errors = _errors(write_policy(text))
    assert len(errors) == 2
    assert "unknown throttle 'staf' (did you mean 'staff'?)" in errors[1]


def test_checks_skip_sections_that_failed(write_policy: WritePolicy) -> None:
    text = (
        "server:\n  hostname: mail.example.com\n  postmaster: postmaster@example.com\n"
        "domains:\n  example.com: {throttle: staff}\n"
        "throttles:\n  staff: {messages: 200/hour}\n"
    )
    errors = _errors(write_policy(text))
    assert len(errors) == 1, "no follow-on 'unknown throttle' for a throttle that is merely broken"


def test_many_missing_hashes_are_summarized(write_policy: WritePolicy) -> None:
    users = "".join(f"  u{i}@example.com: {{}}\n" for i in range(30))
    loaded = load_policy(write_policy(MINIMAL_POLICY + "users:\n" + users, secrets="x: y\n"))
    messages = [w.message for w in loaded.warnings if w.path.startswith("users")]
    assert len(messages) == 11
    assert "20 more users have no password hash" in messages


def test_entries_without_settings(write_policy: WritePolicy) -> None:
    text = MINIMAL_POLICY + "  example.org:\nusers:\n  bob@example.org:\n"
    policy = load_policy(write_policy(text)).policy
    assert policy.domains["example.org"].ip_pool is None
    assert policy.users["bob@example.org"].disabled is False
