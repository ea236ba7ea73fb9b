"""Shared helpers for the tests."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"
CONTRACT = FIXTURES / "valid" / "contract" / "policy.yml"
EXAMPLE_INVENTORY = ROOT / "inventories" / "example"

MINIMAL_POLICY = """\
server:
  hostname: mail.example.com
  postmaster: ops@example.net
domains:
  example.com: {}
"""


@pytest.fixture
def write_policy(tmp_path: Path):  # type: ignore[no-untyped-def]
    """Write a policy (and optionally a secrets file) into a fresh directory."""

    def write(text: str, secrets: str | None = None) -> Path:
        policy = tmp_path / "policy.yml"
        policy.write_text(text, encoding="utf-8")
        if secrets is not None:
            (tmp_path / "secrets.yml").write_text(secrets, encoding="utf-8")
        return policy

    return write
