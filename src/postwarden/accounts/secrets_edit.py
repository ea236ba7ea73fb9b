"""Put a user's new password hash, and when it was set, into secrets.yml, changing
nothing else in the file: not a comment, not the order, not the indentation of an
`ansible-vault encrypt_string` value beside it.

A round-trip YAML library keeps comments and order but writes every block scalar
back with its own indentation, which rewrites the vaulted values of other users; so
the edit is made on the text, at the exact place the YAML parser says the entry is,
and the result is read back and compared before anything is written. A file
encrypted as a whole stays encrypted (same vault ID); a value goes in encrypted
when the user's old one was, or when the section's other values are.

The file is replaced atomically (a new file beside it, then a rename) under an
exclusive lock, with its mode kept: a failure at any step leaves it as it was."""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import yaml

from postwarden.policy.secrets import PASSWORD_HASHES, PASSWORD_SET
from postwarden.policy.secrets_file import VAULT_HEADER, Vault, VaultUnavailable, open_vault

VAULT_TAG = "!vault"


class CannotEdit(Exception):
    """The secrets file cannot be changed; it was left as it was."""


@dataclass(frozen=True)
class Entry:
    section: str
    key: str
    value: str


def set_password(
    path: Path, address: str, password_hash: str, set_at: str, vault_password_file: Path | None
) -> None:
    """Raises CannotEdit with the reason; the file is then unchanged."""
    with _locked(path) as raw:
        whole_vault = raw.lstrip().startswith(VAULT_HEADER)
        vault = None
        if whole_vault or VAULT_TAG.encode() in raw:
            try:
                vault = open_vault(vault_password_file)
            except VaultUnavailable as error:
                raise CannotEdit(f"{error.message} ({error.hint})") from None
        text = _text(path, raw, vault if whole_vault else None)
        value = _quoted(password_hash)
        if _vaulted_values(text, PASSWORD_HASHES) and not whole_vault:
            assert vault is not None
            value = vault.encrypt_value(password_hash)
        edited = _with_entry(text, Entry(PASSWORD_HASHES, address, value))
        edited = _with_entry(edited, Entry(PASSWORD_SET, address, _quoted(set_at)))
        _check(text, edited, address)
        out = edited.encode("utf-8")
        if whole_vault:
            assert vault is not None
            out = vault.encrypt_file(out, raw)
        _replace(path, out)


@contextmanager
def _locked(path: Path) -> Iterator[bytes]:
    """The file's bytes (none when it does not exist yet), under an exclusive lock
    that lasts until the edit is in place."""
    try:
        handle = path.open("rb")
    except FileNotFoundError:
        yield b""
        return
    except OSError as error:
        raise CannotEdit(f"cannot read {path}: {error.strerror}") from None
    with handle:
        # no write bit at all: someone meant it to stay as it is, even for root
        if not os.fstat(handle.fileno()).st_mode & 0o222 or not os.access(path, os.W_OK):
            raise CannotEdit(f"{path} is read-only; make it writable to change a password")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise CannotEdit(
                f"{path} is locked: another postwarden passwd is changing it; try again"
            ) from None
        yield handle.read()


def _text(path: Path, raw: bytes, vault: Vault | None) -> str:
    try:
        return (vault.decrypt(raw) if vault is not None else raw).decode("utf-8")
    except UnicodeDecodeError:
        raise CannotEdit(f"{path} is not UTF-8 text") from None
    except Exception:  # ansible's own error types for a wrong password or a damaged file
        raise CannotEdit(f"cannot decrypt {path}: wrong vault password or damaged file") from None


def _quoted(text: str) -> str:
    if any(char in text for char in '"\\\n\r'):
        raise CannotEdit("a hash or time with a quote, backslash or line break cannot be written")
    return f'"{text}"'


def _vaulted_values(text: str, section: str) -> bool:
    """Are the values of ``section`` kept encrypted one by one?"""
    node = _section(_compose(text), section)
    return isinstance(node, yaml.MappingNode) and any(
        value.tag == VAULT_TAG for _, value in node.value
    )


def _compose(text: str) -> yaml.Node | None:
    try:
        return yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as error:
        raise CannotEdit(f"the secrets file is not valid YAML: {error}") from None


def _section(root: yaml.Node | None, name: str) -> yaml.Node | None:
    if root is None:
        return None
    if not isinstance(root, yaml.MappingNode):
        raise CannotEdit("the secrets file must be a mapping of names to values")
    for key, value in root.value:
        if key.value == name:
            return cast(yaml.Node, value)
    return None


def _with_entry(text: str, entry: Entry) -> str:
    """``text`` with ``entry.key: entry.value`` under ``entry.section``: in place of
    the key's value when it is there, else after the section's last entry."""
    root = _compose(text)
    section = _section(root, entry.section)
    if section is None:
        ending = "" if not text or text.endswith("\n") else "\n"
        return f"{text}{ending}{entry.section}:\n  {_line(entry, 2)}"
    if not isinstance(section, yaml.MappingNode):
        if isinstance(section, yaml.ScalarNode) and section.value in ("", "~", "null"):
            return _replace_span(text, section, f"\n  {_line(entry, 2).rstrip(chr(10))}")
        raise CannotEdit(f"{entry.section} must map user addresses to values")
    for key, value in section.value:
        if str(key.value).lower() == entry.key.lower():
            return _replace_span(text, value, _value(entry, key.start_mark.column))
    if section.flow_style:
        return _as_block(text, section, entry)
    column = section.value[0][0].start_mark.column if section.value else 2
    last = section.value[-1][1] if section.value else section
    at = _line_end(text, last.end_mark.index)
    return text[:at] + " " * column + _line(entry, column) + text[at:]


PLAIN_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9._%+=-]*@[A-Za-z0-9.-]+")
"""An address that YAML reads as itself without quotes."""


def _line(entry: Entry, column: int) -> str:
    key = entry.key if PLAIN_KEY.fullmatch(entry.key) else _quoted(entry.key)
    return f"{key}: {_value(entry, column)}\n"


def _value(entry: Entry, column: int) -> str:
    """A vaulted value as ansible-vault encrypt_string writes it, indented under the key."""
    if not entry.value.startswith("$ANSIBLE_VAULT"):
        return entry.value
    pad = " " * (column + 4)
    lines = entry.value.strip().splitlines()
    return f"{VAULT_TAG} |\n" + "".join(f"{pad}{line}\n" for line in lines).rstrip("\n")


def _replace_span(text: str, node: yaml.Node, replacement: str) -> str:
    start, end = node.start_mark.index, node.end_mark.index
    # a block scalar's span runs to the start of the next line: keep that line break
    if text[start:end].endswith("\n") and not replacement.endswith("\n"):
        replacement += "\n"
    return text[:start] + replacement + text[end:]


def _line_end(text: str, index: int) -> int:
    """The start of the line after ``index`` (or the end of the text)."""
    if index > 0 and text[index - 1] == "\n":
        return index
    newline = text.find("\n", index)
    return len(text) if newline < 0 else newline + 1


def _as_block(text: str, section: yaml.MappingNode, entry: Entry) -> str:
    """A flow mapping ({} or {a: b}) rewritten as a block, with the new entry last."""
    lines = [
        f"  {text[key.start_mark.index : key.end_mark.index]}: "
        f"{text[value.start_mark.index : value.end_mark.index]}"
        for key, value in section.value
    ]
    lines.append("  " + _line(entry, 2).rstrip("\n"))
    start = section.start_mark.index
    gap = len(text[:start]) - len(text[:start].rstrip(" "))  # no space left after the colon
    edited = _replace_span(text, section, "\n" + "\n".join(lines))
    return edited[: start - gap] + edited[start:]


def _check(before: str, after: str, address: str) -> None:
    """Read back: every other entry as it was, the new ones where they belong."""
    old, new = _load(before) or {}, _load(after) or {}
    if not isinstance(old, dict) or not isinstance(new, dict):
        raise CannotEdit("the edited file did not read back as a mapping; nothing was written")
    for name in set(old) | set(new):
        if name in (PASSWORD_HASHES, PASSWORD_SET):
            was, now = dict(old.get(name) or {}), dict(new.get(name) or {})
            was = {k: v for k, v in was.items() if str(k).lower() != address.lower()}
            now = {k: v for k, v in now.items() if str(k).lower() != address.lower()}
            if was != now:
                raise CannotEdit(
                    f"the edit would change other entries of {name}; nothing was written"
                )
        elif old.get(name) != new.get(name):
            raise CannotEdit(f"the edit would change {name}; nothing was written")
    if not any(str(k).lower() == address.lower() for k in new.get(PASSWORD_HASHES) or {}):
        raise CannotEdit("the edited file does not hold the new hash; nothing was written")


class _PlainLoader(yaml.SafeLoader):
    """Reads a !vault value as its ciphertext, for comparing before and after."""


def _vault_text(loader: yaml.SafeLoader, node: yaml.Node) -> tuple[str, str]:
    assert isinstance(node, yaml.ScalarNode)
    return ("vault", str(loader.construct_scalar(node)).strip())


_PlainLoader.add_constructor(VAULT_TAG, _vault_text)


def _load(text: str) -> object:
    try:
        return yaml.load(text, Loader=_PlainLoader)  # a SafeLoader that knows !vault
    except yaml.YAMLError as error:
        raise CannotEdit(f"the secrets file is not valid YAML: {error}") from None


def _replace(path: Path, content: bytes) -> None:
    mode = path.stat().st_mode & 0o7777 if path.exists() else 0o600
    directory = path.parent
    try:
        descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=directory)
    except OSError as error:
        raise CannotEdit(f"cannot write beside {path}: {error.strerror}") from None
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, mode)
        if path.exists():
            stat = path.stat()
            with contextlib.suppress(PermissionError):  # not ours to give away
                os.chown(temporary, stat.st_uid, stat.st_gid)
        os.replace(temporary, path)
    except OSError as error:
        Path(temporary).unlink(missing_ok=True)
        raise CannotEdit(f"cannot replace {path}: {error.strerror}") from None
