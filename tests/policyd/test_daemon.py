"""postwarden-policyd as a process: reload on SIGHUP without dropping connections,
refuse a bad policy, keep counting across a crash, stop cleanly, survive fuzzing."""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from postwarden.policyd import daemon as policyd
from postwarden.policyd.decide import Event
from postwarden.policyd.runtime import build_runtime
from postwarden.policyd.settings import PolicydSettings
from postwarden.policyd.stores import LocalStore
from postwarden.reports.usage import read_events
from tests.e2e.mailhost import wait_for_port

POLICY = """\
server: {hostname: mail.example.com, postmaster: ops@example.net}
domains:
  example.com: {}
users:
  alice@example.com: {throttle: staff}
throttles:
  staff: {messages: LIMIT/h}
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Daemon:
    directory: Path
    port: int
    process: subprocess.Popen[bytes] | None = None

    @property
    def log(self) -> str:
        return (self.directory / "policyd.log").read_text(encoding="utf-8")

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "postwarden",
                "policyd",
                "--settings",
                str(self.directory / "policyd.yml"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        wait_for_port("127.0.0.1", self.port, timeout=30)

    def signal(self, number: int) -> None:
        assert self.process is not None
        self.process.send_signal(number)

    def wait(self, timeout: float = 15) -> int:
        assert self.process is not None
        return self.process.wait(timeout=timeout)


def write_policy(directory: Path, limit: str) -> None:
    rate = limit if "/" in limit else f"{limit}/h"
    (directory / "policy.yml").write_text(POLICY.replace("LIMIT/h", rate), encoding="utf-8")


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    port = free_port()
    write_policy(tmp_path, "2")
    (tmp_path / "policyd.yml").write_text(
        f"policy: {tmp_path / 'policy.yml'}\nsecrets: {tmp_path / 'secrets.yml'}\n"
        f"listen: ['127.0.0.1:{port}']\nsqlite_path: {tmp_path / 'counters.sqlite'}\n"
        f"log_file: {tmp_path / 'policyd.log'}\nusage_log: {tmp_path / 'usage.sqlite'}\n"
        f"metrics_listen: 127.0.0.1:{free_port()}\nsocketmap_listen: 127.0.0.1:{free_port()}\n"
        f"pool_state: {tmp_path / 'pools.json'}\n",
        encoding="utf-8",
    )
    running = Daemon(tmp_path, port)
    running.start()
    yield running
    if running.process is not None and running.process.poll() is None:
        running.process.kill()
        running.process.wait()


def ask(connection: socket.socket, login: str = "alice@example.com") -> str:
    request = (
        "request=smtpd_access_policy\nprotocol_state=END-OF-MESSAGE\n"
        f"sasl_username={login}\nsender={login}\nsize=100\nclient_address=192.0.2.1\n\n"
    )
    connection.sendall(request.encode())
    data = b""
    while not data.endswith(b"\n\n"):
        chunk = connection.recv(4096)
        assert chunk, "the daemon closed the connection"
        data += chunk
    return data.decode().removeprefix("action=").strip()


def connect(daemon: Daemon) -> socket.socket:
    return socket.create_connection(("127.0.0.1", daemon.port), timeout=10)


def wait_for(predicate: object, timeout: float = 10.0) -> None:
    assert callable(predicate)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError("condition not met in time")


def test_sighup_reloads_without_dropping_the_connection(daemon: Daemon) -> None:
    with connect(daemon) as connection:
        assert [ask(connection) for _ in range(2)] == ["DUNNO", "DUNNO"]
        assert ask(connection).startswith("DEFER")
        write_policy(daemon.directory, "4")
        daemon.signal(signal.SIGHUP)
        wait_for(lambda: "reloaded the policy" in daemon.log)
        # same connection, new limit, counts kept
        assert [ask(connection) for _ in range(2)] == ["DUNNO", "DUNNO"]
        assert ask(connection).startswith("DEFER")


def test_replies_go_on_while_a_reload_loads(daemon: Daemon) -> None:
    # the policy becomes a pipe nobody writes to yet: the loader is stuck reading it
    policy = daemon.directory / "policy.yml"
    policy.unlink()
    os.mkfifo(policy)
    with connect(daemon) as connection:
        daemon.signal(signal.SIGHUP)
        wait_for(lambda: "reloading the policy" in daemon.log)
        assert [ask(connection) for _ in range(2)] == ["DUNNO", "DUNNO"]
        assert ask(connection).startswith("DEFER")
        assert "reloaded the policy" not in daemon.log
        with policy.open("w", encoding="utf-8") as pipe:
            pipe.write(POLICY.replace("LIMIT", "4"))
        wait_for(lambda: "reloaded the policy" in daemon.log)
        assert [ask(connection) for _ in range(2)] == ["DUNNO", "DUNNO"]
        assert ask(connection).startswith("DEFER")


def test_a_bad_policy_is_refused_and_the_old_one_stays(daemon: Daemon) -> None:
    with connect(daemon) as connection:
        assert ask(connection) == "DUNNO"
        (daemon.directory / "policy.yml").write_text("server: [broken\n", encoding="utf-8")
        daemon.signal(signal.SIGHUP)
        wait_for(lambda: "reload refused" in daemon.log)
        assert "YAML syntax error" in daemon.log
        assert ask(connection) == "DUNNO"
        assert ask(connection).startswith("DEFER")


def test_counts_continue_after_a_crash(daemon: Daemon) -> None:
    with connect(daemon) as connection:
        assert ask(connection) == "DUNNO"
    time.sleep(1.5)  # one write-behind interval
    daemon.signal(signal.SIGKILL)
    daemon.wait()
    daemon.start()
    with connect(daemon) as connection:
        assert ask(connection) == "DUNNO"
        assert ask(connection).startswith("DEFER")


def test_sigterm_stops_cleanly(daemon: Daemon) -> None:
    with connect(daemon) as connection:
        assert ask(connection) == "DUNNO"
    started = time.monotonic()
    daemon.signal(signal.SIGTERM)
    assert daemon.wait() == 0
    assert time.monotonic() - started < 10
    assert "stopping" in daemon.log


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_ten_thousand_fuzzed_requests(daemon: Daemon) -> None:
    assert daemon.process is not None
    rng = random.Random(20261130)
    names = [
        "request",
        "protocol_state",
        "sasl_username",
        "sender",
        "recipient",
        "size",
        "client_address",
        "recipient_count",
        "x" * 40,
    ]
    states = ["RCPT", "END-OF-MESSAGE", "DATA", "", "rcpt", "\u00e9"]
    closed = 0
    connection = connect(daemon)
    before = None
    for number in range(10_000):
        if number == 1000:
            before = _rss_kib(daemon.process.pid)
        lines = []
        for _ in range(rng.randint(0, 12)):
            name = rng.choice(names)
            value = rng.choice(
                [
                    rng.choice(states),
                    str(rng.randint(-10, 10**12)),
                    f"u{rng.randint(0, 50)}@example.com",
                    "".join(chr(rng.randint(0, 0x2FF)) for _ in range(rng.randint(0, 30))),
                ]
            )
            lines.append(f"{name}={value}")
        if rng.random() < 0.05:
            lines.append(rng.choice(["no-equals", "=novalue", "\xff\xfe"]))
        payload = ("\n".join(lines) + "\n\n").encode("utf-8", "replace")
        try:
            connection.sendall(payload)
            data = connection.recv(4096)
        except OSError:
            data = b""
        if not data.startswith(b"action="):
            closed += 1
            connection.close()
            connection = connect(daemon)
    connection.close()
    assert daemon.process.poll() is None, "the daemon died"
    assert before is not None
    assert _rss_kib(daemon.process.pid) - before < 50_000
    assert closed > 0, "malformed requests should have closed some connections"
    with connect(daemon) as fresh:
        assert ask(fresh, "nobody@example.com") == "DUNNO"
    assert os.path.exists(daemon.directory / "counters.sqlite")


def in_process(directory: Path) -> policyd.Daemon:
    settings = PolicydSettings(
        policy=str(directory / "policy.yml"),
        secrets=str(directory / "secrets.yml"),
        sqlite_path=str(directory / "counters.sqlite"),
        usage_log=str(directory / "usage.sqlite"),
        pool_state=str(directory / "pools.json"),
        dnsbl_zones=[],
    )
    return policyd.Daemon.start(settings, build_runtime(settings))


async def test_counts_are_kept_as_long_as_the_longest_window(tmp_path: Path) -> None:
    write_policy(tmp_path, "1000/30d")
    daemon = in_process(tmp_path)
    store = daemon.engine.store
    assert isinstance(store, LocalStore)
    assert store.longest_window == 30 * 86400
    write_policy(tmp_path, "2/h")
    await daemon.reload()
    assert store.longest_window == 3600
    daemon.usage.close()
    await store.close()


async def test_the_state_label_is_one_of_postfixs_states(tmp_path: Path) -> None:
    write_policy(tmp_path, "2")
    daemon = in_process(tmp_path)
    for state in ("RCPT", "END-OF-MESSAGE", "rcpt", "x" * 20, "y" * 20, "", "\u00e9"):
        daemon.decide_now({"request": "smtpd_access_policy", "protocol_state": state})
    assert dict(daemon.metrics.stats.requests) == {"RCPT": 1, "END-OF-MESSAGE": 1, "other": 5}
    assert all(policyd.state_label({"protocol_state": s}) == s for s in policyd.PROTOCOL_STATES)
    daemon.usage.close()
    await daemon.engine.store.close()


async def test_events_are_kept_for_the_abuse_report(tmp_path: Path) -> None:
    """Every event but the store's own (one per decision while it is down) reaches the
    usage log, with who was involved."""
    write_policy(tmp_path, "2")
    daemon = in_process(tmp_path)
    daemon.on_event(Event("throttle.hit", "a@example.com/t", "x", client="192.0.2.1", login="a"))
    daemon.on_event(Event("system.store", "counters", "down; failing closed"))
    daemon.usage.close()
    await daemon.engine.store.close()
    raised = read_events(str(tmp_path / "usage.sqlite"), 0, time.time() + 1)
    assert [(e.kind, e.subject, e.client, e.login) for e in raised] == [
        ("throttle.hit", "a@example.com/t", "192.0.2.1", "a")
    ]
