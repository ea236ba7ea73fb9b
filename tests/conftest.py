"""Shared helpers for the tests."""

from __future__ import annotations

import email
import email.policy
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path

import pytest

from tests.throwaway_redis import RedisServer

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


def closed_port() -> int:
    """A loopback port that nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# ---------------------------------------------------------------------- smtp-sink


@dataclass(frozen=True)
class Sink:
    port: int
    dumps: Path

    def messages(self, count: int = 1, timeout: float = 5.0) -> list[EmailMessage]:
        """The dumped transactions, once ``count`` of them are there."""
        deadline = time.monotonic() + timeout
        while True:
            files = sorted(p for p in self.dumps.rglob("*") if p.is_file())
            if len(files) >= count or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        time.sleep(0.1)  # smtp-sink writes the file while the client says QUIT
        parsed = []
        for path in files:
            message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
            assert isinstance(message, EmailMessage)
            parsed.append(message)
        return parsed


def _smtp_sink() -> str | None:
    return shutil.which("smtp-sink") or shutil.which("smtp-sink", path="/usr/sbin:/usr/bin")


@pytest.fixture
def sink() -> Iterator[Sink]:
    program = _smtp_sink()
    if program is None:
        pytest.fail("Postfix's smtp-sink is missing: run scripts/setup --test")
    # smtp-sink writes as nobody: pytest's tmp_path (mode 0700 under /tmp) is out of reach
    dumps = Path(tempfile.mkdtemp(prefix="postwarden-sink-", dir="/var/tmp"))
    nobody = pwd.getpwnam("nobody")
    shutil.chown(dumps, nobody.pw_uid, nobody.pw_gid)
    port = closed_port()
    process = subprocess.Popen(
        [program, "-u", "nobody", "-d", f"{dumps}/%M.", f"127.0.0.1:{port}", "10"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 5
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"smtp-sink did not start on port {port}")
                time.sleep(0.05)
        yield Sink(port, dumps)
    finally:
        process.terminate()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
        shutil.rmtree(dumps, ignore_errors=True)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    assert shutil.which("redis-server"), "install redis-server (scripts/setup --test)"
    server = RedisServer(closed_port(), tmp_path)
    server.start()
    yield server
    server.stop()
