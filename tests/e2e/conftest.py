"""The end-to-end tests share one real mail host, installed and started once."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import FIXTURES
from tests.e2e.mailhost import MailHost
from tests.fake_dns import FakeDns

E2E = FIXTURES / "e2e"


@pytest.fixture(scope="session")
def blocklist() -> Iterator[FakeDns]:
    """The blocklist the e2e host's policyd watches (tests/fixtures/e2e/host.yml)."""
    server = FakeDns(5353)
    yield server
    server.close()


@pytest.fixture(scope="session")
def mailhost(
    tmp_path_factory: pytest.TempPathFactory, webhook: Webhook, blocklist: FakeDns
) -> Iterator[MailHost]:
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


class Webhook:
    """The tests' own webhook receiver: every JSON body POSTed to it, in order."""

    def __init__(self, port: int) -> None:
        self.received: list[dict[str, Any]] = []
        received = self.received

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                received.append(json.loads(self.rfile.read(length) or b"{}"))
                self.send_response(204)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait_for(
        self, match: Callable[[dict[str, Any]], bool], timeout: float = 30
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for body in list(self.received):
                if match(body):
                    return body
            time.sleep(0.2)
        raise AssertionError(f"no matching webhook call; got {self.received}")


@pytest.fixture(scope="session")
def webhook() -> Iterator[Webhook]:
    receiver = Webhook(8525)
    yield receiver
    receiver.server.shutdown()
