"""The end-to-end tests share one real mail host, installed and started once."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import FIXTURES
from tests.e2e.mailhost import MailHost

E2E = FIXTURES / "e2e"


@pytest.fixture(scope="session")
def mailhost(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MailHost]:
    if os.geteuid() != 0:
        pytest.fail("the end-to-end tests install and run Postfix, Dovecot and rspamd: run as root")
    host = MailHost(
        E2E / "policy.yml",
        E2E / "secrets.yml",
        E2E / "host.yml",
        Path(tmp_path_factory.mktemp("mailhost")),
    )
    host.install()
    host.start()
    try:
        yield host
    finally:
        host.stop()
