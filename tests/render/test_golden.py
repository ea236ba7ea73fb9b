"""The whole rendered tree of the example inventory, byte for byte, and what every
file of it must be: managed, deterministic, and private when it carries a secret.

tests/fixtures/golden/example mirrors the host (etc/postfix/main.cf ...) as
scripts/update-golden writes it; a change to any renderer shows up here as a
diff to review.
"""

from __future__ import annotations

import difflib
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from postwarden.policy.load import LoadedPolicy
from postwarden.render.host import HostSettings
from postwarden.render.render import render
from postwarden.render.templating import HEADER_LINES, header
from postwarden.render.tree import RenderedTree, write_tree
from tests.conftest import EXAMPLE_INVENTORY, FIXTURES, ROOT
from tests.render.conftest import SOURCE

GOLDEN = FIXTURES / "golden" / "example"
EXAMPLE_POLICY = "inventories/example/policy.yml"
UPDATE = "run scripts/update-golden and review the diff (git diff tests/fixtures/golden)"

PASSWORDS = "/etc/dovecot/postwarden/passwords"
SECRET_FILES = {
    PASSWORDS: "dovecot",
    "/etc/postwarden/secrets.yml": "postwarden",
    "/etc/prometheus/alertmanager.yml": "prometheus",
}
"""The files that carry secrets, with the group of the service that reads them."""


@pytest.fixture(scope="module")
def tree(example: LoadedPolicy) -> RenderedTree:
    return render(example, HostSettings())


def files_below(root: Path) -> dict[str, bytes]:
    """Every file below root by its host path (/etc/...), with its bytes."""
    return {
        "/" + path.relative_to(root).as_posix(): path.read_bytes()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def modes_below(root: Path) -> dict[str, int]:
    return {
        path: stat.S_IMODE((root / path.lstrip("/")).stat().st_mode) for path in files_below(root)
    }


def test_the_tree_matches_the_golden_files(tree: RenderedTree) -> None:
    golden = files_below(GOLDEN)
    rendered = {path: f.content.encode("utf-8") for path, f in tree.items()}

    missing = sorted(set(rendered) - set(golden))
    extra = sorted(set(golden) - set(rendered))
    assert (missing, extra) == ([], []), (
        f"the rendered file set differs from {GOLDEN.relative_to(ROOT)}: "
        f"not in the golden tree {missing}, no longer rendered {extra}; {UPDATE}"
    )
    for path, content in rendered.items():
        if content != golden[path]:
            diff = "".join(
                difflib.unified_diff(
                    golden[path].decode("utf-8", "replace").splitlines(keepends=True),
                    content.decode("utf-8").splitlines(keepends=True),
                    fromfile=f"golden{path}",
                    tofile=f"rendered{path}",
                )
            )
            pytest.fail(f"{path} differs from the golden file; {UPDATE}\n{diff}", pytrace=False)


def test_the_golden_tree_is_the_example_inventory() -> None:
    """Guards against a golden tree rendered from something else (a stray policy)."""
    golden = files_below(GOLDEN)
    assert len(golden) == 36
    policy_copy = golden["/etc/postwarden/policy.yml"].decode()
    assert policy_copy == header(SOURCE) + (EXAMPLE_INVENTORY / "policy.yml").read_text()


def test_file_modes_on_disk(tree: RenderedTree, tmp_path: Path) -> None:
    write_tree(tree, tmp_path / "out")
    secret = {path for path, f in tree.items() if f.secret}
    assert secret == set(SECRET_FILES)
    modes = modes_below(tmp_path / "out")
    assert sorted(modes) == sorted(tree)
    for path, rendered in tree.items():
        mode = modes[path]
        if path in SECRET_FILES:
            assert mode == 0o640, f"{path}: {mode:04o}"
            assert (rendered.owner, rendered.group) == ("root", SECRET_FILES[path])
        else:
            assert mode == 0o644, f"{path}: {mode:04o}"
            assert (rendered.owner, rendered.group) == ("root", "root"), path


def test_secret_values_stay_out_of_world_readable_files(
    example: LoadedPolicy, tree: RenderedTree, tmp_path: Path
) -> None:
    values = example.secrets.values
    assert sorted(values) == ["relay_password", "sms_token"]
    root = tmp_path / "out"
    write_tree(tree, root)
    for path, content in files_below(root).items():
        if (root / path.lstrip("/")).stat().st_mode & stat.S_IROTH:
            for name, value in values.items():
                assert value.encode() not in content, f"{name} is in {path}, which anyone reads"
    # and they are where the services need them
    assert values["relay_password"] in tree["/etc/prometheus/alertmanager.yml"].content
    assert values["sms_token"] in tree["/etc/postwarden/secrets.yml"].content


def test_password_hashes_only_in_dovecots_passwords(
    example: LoadedPolicy, tree: RenderedTree
) -> None:
    hashes = example.secrets.password_hashes
    assert len(hashes) == 3
    for address, password_hash in hashes.items():
        digest = password_hash.rsplit("$", 1)[1]
        holding = sorted(path for path, f in tree.items() if digest in f.content)
        assert holding == [PASSWORDS], address
        assert f"{address}:{{ARGON2ID}}{password_hash}\n" in tree[PASSWORDS].content


def test_rendering_twice_gives_identical_trees(example: LoadedPolicy, tmp_path: Path) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    write_tree(render(example, HostSettings()), first)
    write_tree(render(example, HostSettings()), second)
    assert files_below(first) == files_below(second)
    assert modes_below(first) == modes_below(second)


@pytest.mark.parametrize("seed", ["1", "2"])
def test_the_command_line_renders_the_golden_tree(seed: str, tmp_path: Path) -> None:
    """Another process, another hash seed: the same bytes (set order never shows)."""
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, "-m", "postwarden", "render", EXAMPLE_POLICY, "-o", str(out)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONHASHSEED": seed},
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert files_below(out) == files_below(GOLDEN), UPDATE


def test_every_file_starts_with_the_managed_header(tree: RenderedTree) -> None:
    for path, rendered in tree.items():
        # in the file's comment syntax: Lua's is --
        comment = "--" if path.endswith(".lua") else "#"
        assert rendered.content.startswith(f"{comment} {HEADER_LINES[0]}\n"), path
        assert rendered.content.startswith(header(SOURCE, comment)), path
