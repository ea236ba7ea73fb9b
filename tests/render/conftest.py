"""Fixtures for render tests: the example policy, and writing rendered files to disk."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import pytest

from postwarden.policy.load import LoadedPolicy, load_policy
from postwarden.render.tree import RenderedFile, RenderedTree, write_tree
from tests.conftest import EXAMPLE_INVENTORY

SOURCE = "policy.yml"


@pytest.fixture(scope="session")
def example() -> LoadedPolicy:
    return load_policy(EXAMPLE_INVENTORY / "policy.yml")


def write_files(files: Iterable[RenderedFile], root: Path) -> Path:
    """Write rendered files below root (root/etc/postfix/main.cf ...) and return root."""
    tree = RenderedTree()
    tree.add(files)
    write_tree(tree, root)
    return root
