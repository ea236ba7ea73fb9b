"""Read secrets.yml: plain, or encrypted with ansible-vault as a whole or value by value.

Decryption uses ansible-core's own vault code, so a file made with
``ansible-vault encrypt`` or ``ansible-vault encrypt_string`` works as it is.
No secret value is ever part of a finding.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from postwarden.policy.problems import Finding
from postwarden.policy.secret_types import VaultText
from postwarden.policy.secrets import PASSWORD_HASHES, PASSWORD_SET, TIME_FORMAT, Secrets
from postwarden.policy.yaml_source import YamlDocument, parse, yaml_findings

VAULT_HEADER = b"$ANSIBLE_VAULT;"
VAULT_PASSWORD_ENV = "ANSIBLE_VAULT_PASSWORD_FILE"


@dataclass
class SecretsSource:
    secrets: Secrets
    document: YamlDocument | None = None
    findings: list[Finding] = field(default_factory=list)


class Vault:
    """Opens the vault lazily: ansible-core is imported only for encrypted files."""

    def __init__(self, password_file: Path | None) -> None:
        self.password_file = password_file
        self._lib: Any = None

    def library(self) -> Any:
        """ansible-core's VaultLib, opened on first use; raises VaultUnavailable."""
        if self._lib is None:
            self._lib = self._open()
        return self._lib

    def decrypt(self, ciphertext: bytes) -> bytes:
        result: bytes = self.library().decrypt(ciphertext)
        return result

    def encrypt_value(self, text: str) -> str:
        """As `ansible-vault encrypt_string` makes it: the vault text, for a !vault value."""
        made: bytes = self.library().encrypt(text.encode("utf-8"))
        return made.decode("ascii")

    def encrypt_file(self, plaintext: bytes, original: bytes) -> bytes:
        """A whole file encrypted again, with the vault ID its header named."""
        header = original.lstrip().split(b"\n", 1)[0].decode("ascii", "replace").split(";")
        vault_id = header[3].strip() if len(header) > 3 and header[3].strip() else None
        made: bytes = self.library().encrypt(plaintext, vault_id=vault_id)
        return made

    def _open(self) -> Any:
        if self.password_file is None:
            raise VaultUnavailable(
                "the secrets file is encrypted with ansible-vault",
                f"pass --vault-password-file FILE or set {VAULT_PASSWORD_ENV}",
            )
        from ansible.parsing.dataloader import DataLoader
        from ansible.parsing.vault import VaultLib, get_file_vault_secret

        try:
            secret = get_file_vault_secret(
                filename=str(self.password_file), vault_id="default", loader=DataLoader()
            )
            secret.load()
        except Exception as error:  # ansible raises its own error types for unreadable files
            raise VaultUnavailable(
                f"cannot read the vault password file {self.password_file}: {type(error).__name__}",
                "check the path and its permissions",
            ) from None
        return VaultLib([("default", secret)])


class VaultUnavailable(Exception):
    def __init__(self, message: str, hint: str) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


def open_vault(password_file: Path | None) -> Vault:
    """The vault to decrypt and encrypt with; VaultUnavailable now when there is no
    password file (named, or in the environment) or it cannot be read."""
    if password_file is None and os.environ.get(VAULT_PASSWORD_ENV):
        password_file = Path(os.environ[VAULT_PASSWORD_ENV])
    vault = Vault(password_file)
    vault.library()
    return vault


def load_secrets(
    path: Path | None, explicit: bool, vault_password_file: Path | None
) -> SecretsSource:
    """Read and decrypt the secrets file; a missing file is fine unless it was named."""
    source = _load(path, explicit, vault_password_file)
    if any(f.severity == "error" for f in source.findings):
        source.secrets = replace(source.secrets, damaged=True)
    return source


def _load(path: Path | None, explicit: bool, vault_password_file: Path | None) -> SecretsSource:
    if vault_password_file is None and os.environ.get(VAULT_PASSWORD_ENV):
        vault_password_file = Path(os.environ[VAULT_PASSWORD_ENV])
    if path is None or not path.exists():
        source = SecretsSource(Secrets())
        if explicit and path is not None:
            source.findings.append(
                Finding((), f"the secrets file {path} does not exist", source="secrets", at=(0, 0))
            )
        return source
    vault = Vault(vault_password_file)
    try:
        raw = path.read_bytes()
        if raw.lstrip().startswith(VAULT_HEADER):
            raw = vault.decrypt(raw)
    except VaultUnavailable as error:
        return _failed(path, error.message, error.hint)
    except OSError as error:
        return _failed(path, f"cannot read the secrets file: {error.strerror}", None)
    except Exception as error:  # ansible's AnsibleError on a wrong password or damaged file
        return _failed(path, f"cannot decrypt the secrets file: {_vault_reason(error)}", None)
    document = parse(raw)
    source = SecretsSource(Secrets(path=str(path)), document)
    source.findings.extend(yaml_findings(document, "secrets"))
    if document.root is None:
        return source
    if not isinstance(document.data, dict):
        source.findings.append(
            Finding((), "the secrets file must be a mapping of names to values", source="secrets")
        )
        return source
    values, hashes, set_at = _read_entries(document.data, vault, source.findings)
    source.secrets = Secrets(values, hashes, str(path), password_set=set_at)
    return source


def _failed(path: Path, message: str, hint: str | None) -> SecretsSource:
    source = SecretsSource(Secrets(path=str(path)))
    source.findings.append(Finding((), message, hint, source="secrets", at=(0, 0)))
    return source


def _vault_reason(error: Exception) -> str:
    text = str(error).splitlines()[0] if str(error) else type(error).__name__
    if "no vault secrets" in text.lower() or "decryption failed" in text.lower():
        return "wrong vault password"
    return text


def _read_entries(
    data: dict[Any, Any], vault: Vault, findings: list[Finding]
) -> tuple[dict[str, str], dict[str, str], dict[str, float]]:
    values: dict[str, str] = {}
    hashes: dict[str, str] = {}
    set_at: dict[str, float] = {}
    for name, value in data.items():
        if name == PASSWORD_HASHES:
            hashes = _read_hashes(value, vault, findings)
            continue
        if name == PASSWORD_SET:
            set_at = _read_times(value, findings)
            continue
        text = _secret_text(value, (str(name),), vault, findings)
        if text is not None:
            values[str(name)] = text
    return values, hashes, set_at


def _read_times(value: Any, findings: list[Finding]) -> dict[str, float]:
    """password_set: address -> when its password was set (UTC, as passwd writes it)."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        findings.append(
            Finding(
                (PASSWORD_SET,),
                "password_set must map user addresses to times",
                "postwarden passwd writes it; for example 2026-12-07T10:00:00Z",
                source="secrets",
            )
        )
        return {}
    times = {}
    for address, item in value.items():
        try:
            moment = datetime.datetime.strptime(str(item), TIME_FORMAT)
        except ValueError:
            findings.append(
                Finding(
                    (PASSWORD_SET, str(address)),
                    f"{item!r} is not a time as postwarden passwd writes it",
                    "write it as 2026-12-07T10:00:00Z (UTC)",
                    source="secrets",
                )
            )
            continue
        times[str(address).lower()] = moment.replace(tzinfo=datetime.UTC).timestamp()
    return times


def _read_hashes(value: Any, vault: Vault, findings: list[Finding]) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        findings.append(
            Finding(
                (PASSWORD_HASHES,),
                "password_hashes must map user addresses to password hashes",
                source="secrets",
            )
        )
        return {}
    hashes = {}
    for address, item in value.items():
        text = _secret_text(item, (PASSWORD_HASHES, str(address)), vault, findings)
        if text is not None:
            hashes[str(address)] = text
    return hashes


def _secret_text(
    value: Any, path: tuple[str, ...], vault: Vault, findings: list[Finding]
) -> str | None:
    if isinstance(value, VaultText):
        try:
            return vault.decrypt(value.ciphertext.encode()).decode()
        except VaultUnavailable as error:
            findings.append(Finding(path, error.message, error.hint, source="secrets"))
        except Exception as error:  # ansible's own errors for a bad or damaged value
            findings.append(
                Finding(
                    path, f"cannot decrypt this value: {_vault_reason(error)}", source="secrets"
                )
            )
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    findings.append(
        Finding(path, "a secret must be a text value", "quote it, or use !vault", source="secrets")
    )
    return None
