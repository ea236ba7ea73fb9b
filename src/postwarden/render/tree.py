"""Rendered files, and writing them as a tree that mirrors the host's filesystem."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Literal

Service = Literal[
    "postfix", "dovecot", "rspamd", "fail2ban", "prometheus", "alertmanager", "postwarden-policyd"
]


@dataclass(frozen=True)
class RenderedFile:
    """One file for the host: its absolute path there, content, and who owns it."""

    path: str
    content: str
    service: Service
    mode: int = 0o644
    owner: str = "root"
    group: str = "root"
    postmap: Literal["postmap", "postalias"] | None = None
    """A Postfix lookup table source, compiled on the host with this command."""

    def __post_init__(self) -> None:
        if not PurePosixPath(self.path).is_absolute() or ".." in PurePosixPath(self.path).parts:
            raise ValueError(f"rendered paths are absolute host paths, not {self.path!r}")

    @property
    def secret(self) -> bool:
        """Files that others may not read carry secrets (hashes, passwords, tokens)."""
        return not self.mode & 0o004


class RenderedTree(dict[str, RenderedFile]):
    """Rendered files by host path."""

    def add(self, files: Iterable[RenderedFile]) -> None:
        for rendered in files:
            if rendered.path in self:
                raise ValueError(f"two renderers produce {rendered.path}")
            self[rendered.path] = rendered

    def for_service(self, service: Service) -> list[RenderedFile]:
        return [f for f in self.values() if f.service == service]


def write_tree(tree: RenderedTree, directory: Path) -> None:
    """Write every file below ``directory`` (DIR/etc/postfix/main.cf ...) or nothing.

    The tree is written to a sibling temporary directory first and moved into
    place in one rename, so an interrupted run never leaves half a tree.
    """
    directory = directory.resolve()
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    os.chmod(staging, 0o755)  # mkdtemp makes it private; the tree mirrors /, which is not
    try:
        for path in sorted(tree):
            rendered = tree[path]
            target = staging / path.lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(rendered.content, encoding="utf-8")
            os.chmod(target, rendered.mode)
        if directory.exists():
            old = directory.with_name(f".{directory.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            directory.rename(old)
            staging.rename(directory)
            shutil.rmtree(old)
        else:
            staging.rename(directory)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
