"""The policy servers the policy benchmark compares, each started as its own process
on loopback, and the peers' installation (their own venvs under bench/out/peers/).

- postwarden-policyd, with its SQLite store or with Redis (a throwaway redis-server);
- policyd-rate-limit 1.2.0 from PyPI, SQLite backend, counting RCPT requests;
- postfwd2 from Debian, one rate() rule per SASL login;
- the bare asyncio server of bench/bare_server.py.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from bench.loadgen import DOMAIN_COUNT, sender_address
from tests.throwaway_redis import redis_server_command

ROOT = Path(__file__).resolve().parent.parent
PEERS = ROOT / "bench" / "out" / "peers"
PORT_RANGE = range(20000, 21000)
RATE_LIMIT_VERSION = "1.2.0"
BENCH_LIMIT = 100_000
START_TIMEOUT = 120.0
# runs the postwarden CLI with ``import uvloop`` failing: the daemon then uses asyncio's loop
WITHOUT_UVLOOP = "import sys; sys.modules['uvloop'] = None; from postwarden.cli import main; main()"
STOP_TIMEOUT = 15.0


# --------------------------------------------------------------------- helpers


@dataclass
class Ports:
    """Free TCP ports on loopback, from the range this benchmark may use."""

    taken: set[int] = field(default_factory=set)

    def take(self) -> int:
        for port in PORT_RANGE:
            if port not in self.taken and _bindable(port):
                self.taken.add(port)
                return port
        raise RuntimeError(f"no free port in {PORT_RANGE.start}-{PORT_RANGE.stop - 1}")


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def wait_for_port(port: int, alive: object, timeout: float = START_TIMEOUT) -> None:
    """Wait until something accepts on 127.0.0.1:port; ``alive()`` false means give up."""
    assert callable(alive)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if not alive():
                raise RuntimeError(f"the server for port {port} exited while starting") from None
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on port {port} after {timeout:.0f} s")


def rss_mb(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) of a process in MB, from /proc/PID/status."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text(encoding="ascii").splitlines():
        name, _, rest = line.partition(":")
        if name in {"VmRSS", "VmHWM"}:
            values[name] = int(rest.split()[0]) / 1024
    return values["VmRSS"], values["VmHWM"]


def filesystem_of(path: Path) -> str:
    """The file system type and device a path lives on, from /proc/mounts."""
    best, found = "", "unknown"
    target = str(path.resolve())
    for line in Path("/proc/mounts").read_text(encoding="utf-8").splitlines():
        device, mount, kind = line.split()[:3]
        inside = target == mount or target.startswith(mount.rstrip("/") + "/")
        if inside and len(mount) > len(best):
            best, found = mount, f"{kind} on {device}"
    return found


def ensure_venv(name: str, requirement: str) -> Path:
    """bench/out/peers/NAME, a venv with ``requirement`` installed; its python."""
    venv = PEERS / name
    python = venv / "bin" / "python"
    marker = venv / ".installed"
    if marker.exists() and marker.read_text(encoding="utf-8") == requirement:
        return python
    PEERS.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
    subprocess.run(
        [
            str(python),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            requirement,
        ],
        check=True,
    )
    marker.write_text(requirement, encoding="utf-8")
    return python


def loadgen_python() -> str:
    """An interpreter for the load generator: a venv with uvloop, else this one."""
    try:
        return str(ensure_venv("loadgen", "uvloop"))
    except (subprocess.CalledProcessError, OSError) as error:
        print(f"note: no uvloop for the load generator ({error}); using plain asyncio")
        return sys.executable


def write_bench_policy(directory: Path, users: int) -> Path:
    """A policy declaring ``users`` senders, each with a throttle that counts recipients
    (at RCPT) and messages (at END-OF-MESSAGE) but is never reached."""
    directory.mkdir(parents=True, exist_ok=True)
    policy = directory / "policy.yml"
    with policy.open("w", encoding="utf-8") as out:
        out.write(
            "server: {hostname: mail.bench.example, postmaster: postmaster@d0.bench.example}\n"
        )
        out.write("domains:\n")
        out.writelines(f"  d{d}.bench.example: {{}}\n" for d in range(DOMAIN_COUNT))
        out.write("throttles:\n")
        out.write(
            f"  bench: {{messages: {BENCH_LIMIT}/h, recipients: {BENCH_LIMIT}/h, action: defer}}\n"
        )
        out.write("users:\n")
        out.writelines(f"  {sender_address(u)}: {{throttle: bench}}\n" for u in range(users))
    return policy


# --------------------------------------------------------------------- servers


@dataclass
class Server:
    """A server run as a child process, listening on 127.0.0.1:port."""

    name: str
    label: str
    port: int
    directory: Path
    process: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        raise NotImplementedError

    def prepare(self) -> None:
        """Write configuration files into ``directory`` before starting."""

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    @property
    def stderr_path(self) -> Path:
        return self.directory / f"{self.name}.stderr"

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.prepare()
        with self.stderr_path.open("wb") as stderr:
            self.process = subprocess.Popen(
                self.command(),
                cwd=ROOT,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
            )
        process = self.process
        try:
            wait_for_port(self.port, lambda: process.poll() is None)
        except RuntimeError as error:
            raise RuntimeError(f"{self.label}: {error}\n{self.stderr_tail()}") from None

    def last_error(self) -> str:
        """Why the server may have stopped answering: the last line of its stderr."""
        alive = "running" if self.alive() else "exited"
        lines = [line for line in self.stderr_tail().splitlines() if line.strip()]
        return f"server {alive}; stderr: {lines[-1][:160] if lines else '(empty)'}"

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stderr_tail(self) -> str:
        try:
            return self.stderr_path.read_text(encoding="utf-8", errors="replace")[-2000:]
        except OSError:
            return ""

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@dataclass
class RedisServer(Server):
    def command(self) -> list[str]:
        return redis_server_command(self.port, self.directory)


@dataclass
class PostwardenServer(Server):
    """postwarden-policyd, as installed in this project's .venv."""

    policy: Path = Path()
    store: str = "sqlite"
    redis_url: str = ""
    ports: Ports = field(default_factory=Ports)
    hide_uvloop: bool = False

    def prepare(self) -> None:
        d = self.directory
        lines = [
            f"policy: {self.policy}",
            f"secrets: {d / 'secrets.yml'}",
            f"listen: ['127.0.0.1:{self.port}']",
            f"metrics_listen: 127.0.0.1:{self.ports.take()}",
            f"socketmap_listen: 127.0.0.1:{self.ports.take()}",
            f"pool_state: {d / 'pools.json'}",
            f"store: {self.store}",
            f"sqlite_path: {d / 'counters.sqlite'}",
            f"usage_log: {d / 'usage.sqlite'}",
            f"log_file: {d / 'policyd.log'}",
        ]
        if self.redis_url:
            lines.append(f"redis_url: {self.redis_url}")
        (d / "policyd.yml").write_text("\n".join(lines) + "\n", encoding="utf-8")

    def command(self) -> list[str]:
        arguments = ["policyd", "--settings", str(self.directory / "policyd.yml")]
        if self.hide_uvloop:
            return [sys.executable, "-c", WITHOUT_UVLOOP, *arguments]
        return [str(Path(sys.executable).parent / "postwarden"), *arguments]


@dataclass
class RateLimitServer(Server):
    """policyd-rate-limit, configured from the default file its package ships."""

    python: Path = Path()
    limit: int = 10 * BENCH_LIMIT

    @property
    def database(self) -> Path:
        return self.directory / "db" / "db.sqlite3"

    def default_config(self) -> dict[str, object]:
        venv = self.python.parent.parent
        (shipped,) = venv.glob(
            "lib/python*/site-packages/policyd_rate_limit/policyd-rate-limit.yaml"
        )
        config = yaml.safe_load(shipped.read_text(encoding="utf-8"))
        assert isinstance(config, dict)
        return config

    def prepare(self) -> None:
        config = self.default_config()
        config.update(
            debug=False,
            user="root" if os.getuid() == 0 else os.environ.get("USER", "nobody"),
            group="root" if os.getuid() == 0 else "nogroup",
            pidfile=str(self.directory / "policyd-rate-limit.pid"),
            backend=0,
            sqlite_config={"database": str(self.database)},
            SOCKET=["127.0.0.1", self.port],
            limits=[[self.limit, 3600]],
            limits_by_id={},
            limit_by_sasl=True,
            count_mode=0,
        )
        path = self.directory / "policyd-rate-limit.yaml"
        path.write_text(yaml.safe_dump(config), encoding="utf-8")

    def command(self) -> list[str]:
        script = self.python.parent / "policyd-rate-limit"
        return [
            str(self.python),
            str(script),
            "-f",
            str(self.directory / "policyd-rate-limit.yaml"),
        ]


@dataclass
class PostfwdServer(Server):
    """postfwd2 always forks into the background (its --nodaemon mode reads stdin and
    has no rate cache), so it is followed through its pid file."""

    limit: int = 10 * BENCH_LIMIT
    master_pid: int = 0

    @property
    def pidfile(self) -> Path:
        return self.directory / "postfwd2.pid"

    def command(self) -> list[str]:
        rule = f"id=RATE; action=rate(sasl_username/{self.limit}/3600/450 4.7.1 rate exceeded)"
        user = "root" if os.getuid() == 0 else "nobody"
        return [
            "postfwd2",
            "--perfmon",
            "-u",
            user,
            "-g",
            user if user == "root" else "nogroup",
            "--pidfile",
            str(self.pidfile),
            "-i",
            "127.0.0.1",
            "-p",
            str(self.port),
            "--cache_socket",
            f"unix::{self.directory / 'postfwd2-cache.socket'}",
            "-r",
            rule,
        ]

    @property
    def pid(self) -> int:
        return self.master_pid

    def alive(self) -> bool:
        return bool(self.master_pid) and Path(f"/proc/{self.master_pid}").exists()

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        with self.stderr_path.open("wb") as stderr:
            subprocess.run(self.command(), check=True, stdout=stderr, stderr=stderr)
        deadline = time.monotonic() + START_TIMEOUT
        while not self.pidfile.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        self.master_pid = int(self.pidfile.read_text(encoding="ascii").strip())
        wait_for_port(self.port, lambda: Path(f"/proc/{self.master_pid}").exists())

    def stop(self) -> None:
        if not self.master_pid or not Path(f"/proc/{self.master_pid}").exists():
            return
        os.kill(self.master_pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        while Path(f"/proc/{self.master_pid}").exists() and time.monotonic() < deadline:
            time.sleep(0.1)


@dataclass
class BareServer(Server):
    """bench/bare_server.py, on the same event loop as postwarden-policyd."""

    uvloop: bool = False

    def command(self) -> list[str]:
        command = [sys.executable, "-m", "bench.bare_server", "--listen", f"127.0.0.1:{self.port}"]
        return [*command, "--uvloop"] if self.uvloop else command


def missing_tools() -> list[str]:
    """What the benchmark needs from Debian and cannot install into a venv."""
    hints = {"redis-server": "redis-server", "postfwd2": "postfwd"}
    return [
        f"{tool} (apt-get install -y {package})"
        for tool, package in hints.items()
        if shutil.which(tool) is None
    ]
