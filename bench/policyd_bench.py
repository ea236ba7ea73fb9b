"""Benchmark postwarden-policyd against its peers and a bare asyncio server, in one run.

    .venv/bin/python -m bench.policyd_bench [--repeat 3] [--duration 5] [--warmup 1]
        [--profile] [--without-uvloop] [--memory-senders 100000] [--keep]

Needs redis-server and postfwd2 from Debian (apt-get install -y redis-server postfwd);
installs policyd-rate-limit 1.2.0 and the load generator's uvloop into their own
venvs under bench/out/peers/ on first use. Every server runs as its own process on
127.0.0.1, on ports 20000-20999, with its state in a temporary directory on disk:

- postwarden (SQLite): ``postwarden policyd`` with its default store;
- postwarden (Redis): ``store: redis`` against a throwaway redis-server;
- policyd-rate-limit: its SQLite backend, ``count_mode: 0`` (RCPT requests count);
- postfwd2: one ``rate()`` rule per SASL login;
- bare asyncio: bench/bare_server.py, ``action=DUNNO`` to every parsed request,
  on the same event loop as postwarden-policyd (uvloop when .venv has it).

Each declares (or counts) the same 10,000 logged-in senders with limits that are
never reached. For each concurrency C (1, 8, 32: C persistent connections, each
sending one request and waiting for its reply, as Postfix does) the load
generator (bench/loadgen.py, one process per 8 connections) sends a RCPT then an
END-OF-MESSAGE request per message, from senders in random order, for a warm-up
and then a measured duration; it records every request's latency. Rounds
alternate the order of the servers; the report takes medians over rounds.

Then postwarden-policyd (SQLite) with 100,000 declared senders serves one message
from every one of them, and its RSS is read from /proc/PID/status.

With --profile, py-spy (``.venv/bin/pip install py-spy``) then samples each
postwarden-policyd under load at C=8, Python and C frames (``--native``), and the
report says where its time goes (raw stacks in bench/out/policyd-profile-*.raw).

--without-uvloop runs postwarden-policyd on asyncio's own loop even when uvloop is
installed in .venv (the bare server always runs on the same loop as postwarden).

It prints the tables and the goals (met / NOT met) and writes bench/out/policyd.md.
"client CPU" is the CPU share of the busiest load-generator process: well below
100% means the load generator was not the bottleneck.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.policyd_report import (
    BARE,
    BARE_STANDARD,
    LABELS,
    POSTFWD,
    RATE_LIMIT,
    REDIS,
    SQLITE,
    Measurement,
    Memory,
    Results,
    failed,
    render,
    summarize,
    unexpected,
)
from bench.policyd_servers import (
    RATE_LIMIT_VERSION,
    ROOT,
    BareServer,
    Ports,
    PostfwdServer,
    PostwardenServer,
    RateLimitServer,
    RedisServer,
    Server,
    ensure_venv,
    filesystem_of,
    loadgen_python,
    missing_tools,
    rss_mb,
    write_bench_policy,
)
from bench.pyspy_summary import summary_lines

OUT = ROOT / "bench" / "out"
LOADGEN = ROOT / "bench" / "loadgen.py"
PER_PROCESS = 8
CLIENT_TIMEOUT = 120.0
SETTLE_SECONDS = 2.5
PROFILE_RATE = 100

# ------------------------------------------------------------------ load runs


@dataclass
class Load:
    """How the load generator runs."""

    python: str
    warmup: float
    duration: float
    senders: int
    seed: int = 0

    def next_seed(self) -> int:
        self.seed += 1
        return self.seed


@dataclass
class ClientResult:
    """What one load-generator process reports (bench/loadgen.py's JSON)."""

    completed: int
    seconds: float
    wall_seconds: float
    cpu_seconds: float
    errors: int
    actions: dict[str, int]
    latencies_ns: list[int]
    uvloop: bool


def split(connections: int, per_process: int = PER_PROCESS) -> list[int]:
    """Connections per load-generator process: 32 -> [8, 8, 8, 8]; 1 -> [1]."""
    full, rest = divmod(connections, per_process)
    return [per_process] * full + ([rest] if rest else [])


def spawn_clients(
    port: int, connections: int, load: Load, sweep: bool
) -> list[subprocess.Popen[str]]:
    clients = []
    first = 0
    for count in split(connections):
        command = [load.python, str(LOADGEN), "--port", str(port), "--connections", str(count)]
        command += ["--senders", str(load.senders), "--seed", str(load.next_seed())]
        if sweep:
            command += ["--sweep", "--first", str(first), "--step", str(connections)]
        else:
            command += ["--warmup", str(load.warmup), "--duration", str(load.duration)]
        first += count
        clients.append(
            subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        )
    return clients


def start_together(clients: list[subprocess.Popen[str]]) -> None:
    """Wait until every client has connected, then give them one start time."""
    for client in clients:
        assert client.stdout is not None
        if client.stdout.readline().strip() != "ready":
            raise RuntimeError("a load generator could not connect")
    start_at = time.monotonic_ns() + 100_000_000
    for client in clients:
        assert client.stdin is not None
        client.stdin.write(f"{start_at}\n")
        client.stdin.flush()


def collect(clients: list[subprocess.Popen[str]], timeout: float) -> list[ClientResult]:
    results = []
    for client in clients:
        try:
            output, _ = client.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            client.kill()
            client.communicate()
            raise RuntimeError(
                "a load generator did not finish: the server stopped answering"
            ) from None
        if client.returncode != 0:
            raise RuntimeError(f"a load generator failed (exit {client.returncode})")
        data: dict[str, Any] = json.loads(output)
        results.append(ClientResult(**data))
    return results


def run_load(port: int, connections: int, load: Load, sweep: bool = False) -> Measurement:
    clients = spawn_clients(port, connections, load, sweep)
    timeout = CLIENT_TIMEOUT if not sweep else 20 * CLIENT_TIMEOUT
    try:
        start_together(clients)
        measured = merge(collect(clients, timeout))
        if measured.requests == 0:
            raise RuntimeError("no reply at all: the server closed the connections")
        return measured
    finally:
        for client in clients:
            if client.poll() is None:
                client.kill()
                client.wait()


def percentile(ordered: list[int], fraction: float) -> float:
    """Nearest-rank percentile of sorted nanoseconds, in milliseconds."""
    if not ordered:
        return float("nan")
    rank = max(0, min(len(ordered) - 1, math.ceil(fraction * len(ordered)) - 1))
    return ordered[rank] / 1e6


def merge(results: list[ClientResult]) -> Measurement:
    latencies = sorted(ns for result in results for ns in result.latencies_ns)
    actions: Counter[str] = Counter()
    for result in results:
        actions.update(result.actions)
    seconds = max(result.seconds for result in results)
    completed = sum(result.completed for result in results)
    return Measurement(
        rps=completed / seconds if seconds else 0.0,
        p50_ms=percentile(latencies, 0.50),
        p99_ms=percentile(latencies, 0.99),
        requests=completed,
        errors=sum(result.errors for result in results),
        actions=actions,
        client_cpu=max(r.cpu_seconds / max(r.wall_seconds, 1e-9) for r in results),
        seconds=seconds,
    )


# ---------------------------------------------------------------------- rounds


def measure(server: Server, connections: int, load: Load) -> Measurement:
    """One measurement; a server that stops answering is a failed one, not the end."""
    try:
        return run_load(server.port, connections, load)
    except RuntimeError as error:
        return failed(f"{error} ({server.last_error()})")


def run_rounds(servers: list[Server], concurrency: list[int], repeat: int, load: Load) -> Results:
    results: Results = {}
    for round_number in range(repeat):
        order = servers if round_number % 2 == 0 else list(reversed(servers))
        for server in order:
            for connections in concurrency:
                measured = measure(server, connections, load)
                results.setdefault((server.name, connections), []).append(measured)
                print(progress_line(round_number, server, connections, measured), flush=True)
    return results


def progress_line(round_number: int, server: Server, connections: int, m: Measurement) -> str:
    line = f"  round {round_number + 1}  {server.label:<22} C={connections:<3} "
    if m.failure:
        return f"{line}FAILED: {m.failure}"
    line += (
        f"{m.rps:9,.0f} req/s  p50 {m.p50_ms:7.3f} ms  p99 {m.p99_ms:7.3f} ms  "
        f"client cpu {m.client_cpu:4.0%}"
    )
    if odd := unexpected(m.actions):
        line += f"  UNEXPECTED REPLIES {odd}"
    if m.errors:
        line += f"  ERRORS {m.errors}"
    return line


# ---------------------------------------------------------------------- memory


def measure_memory(
    workdir: Path, ports: Ports, senders: int, load: Load, hide_uvloop: bool
) -> Memory:
    """postwarden-policyd (SQLite) declaring ``senders`` users; RSS before and after
    every one of them sent one message (a RCPT and an END-OF-MESSAGE request)."""
    directory = workdir / "memory"
    policy = write_bench_policy(directory, senders)
    server = PostwardenServer(
        "postwarden-memory",
        "postwarden (SQLite)",
        ports.take(),
        directory,
        policy=policy,
        ports=ports,
        hide_uvloop=hide_uvloop,
    )
    server.start()
    try:
        time.sleep(SETTLE_SECONDS)
        baseline, _ = rss_mb(server.pid)
        sweep = Load(load.python, 0.0, 0.0, senders, seed=1000)
        try:
            measured = run_load(server.port, PER_PROCESS, sweep, sweep=True)
        except RuntimeError as error:
            measured = failed(f"{error} ({server.last_error()})")
        time.sleep(SETTLE_SECONDS)  # the write-behind to SQLite and the usage log
        rss, hwm = rss_mb(server.pid)
    finally:
        server.stop()
    return Memory(
        senders,
        baseline,
        rss,
        hwm,
        measured.requests,
        measured.seconds,
        measured.actions,
        measured.failure,
    )


# --------------------------------------------------------------------- profile


def profile(server: Server, load: Load, seconds: float, connections: int) -> list[str]:
    """py-spy on a running server while it serves ``connections`` clients; a summary."""
    py_spy = Path(sys.executable).parent / "py-spy"
    if not py_spy.exists():
        return ["py-spy is not in .venv (`.venv/bin/pip install py-spy`): no profile.", ""]
    raw = OUT / f"policyd-profile-{server.name}.raw"
    OUT.mkdir(parents=True, exist_ok=True)
    command = [str(py_spy), "record", "--pid", str(server.pid), "--native"]
    command += ["--rate", str(PROFILE_RATE)]
    command += ["--duration", str(round(seconds)), "--format", "raw", "--output", str(raw)]
    recorder = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.5)  # py-spy attaches
        measured = measure(server, connections, Load(load.python, 0.0, seconds, load.senders))
        recorder.wait(timeout=seconds + 30)
    finally:
        if recorder.poll() is None:
            recorder.kill()
            recorder.wait()
    title = f"### {server.label} under py-spy, C={connections}"
    if measured.failure or not raw.exists():
        return [title, "", f"No profile: {measured.failure or 'py-spy wrote nothing'}.", ""]
    return [
        f"{title} ({measured.rps:,.0f} req/s while sampled at {PROFILE_RATE} Hz)",
        "",
        f"Raw stacks: `{raw.relative_to(ROOT)}`.",
        "",
        *summary_lines(raw),
        "",
    ]


# ------------------------------------------------------------------------ main


def postwarden_uses_uvloop(hide_uvloop: bool) -> bool:
    """postwarden-policyd runs on uvloop when it can import it (from this .venv)."""
    return not hide_uvloop and importlib.util.find_spec("uvloop") is not None


def make_servers(
    workdir: Path, ports: Ports, args: argparse.Namespace, redis_url: str
) -> list[Server]:
    policy = write_bench_policy(workdir / "policy", args.users)
    hide = args.without_uvloop
    rate_limit_python = ensure_venv(RATE_LIMIT, f"policyd-rate-limit=={RATE_LIMIT_VERSION}")

    def place(name: str) -> tuple[str, str, int, Path]:
        return name, LABELS[name], ports.take(), workdir / name

    return [
        PostwardenServer(*place(SQLITE), policy=policy, ports=ports, hide_uvloop=hide),
        PostwardenServer(
            *place(REDIS),
            policy=policy,
            store="redis",
            redis_url=redis_url,
            ports=ports,
            hide_uvloop=hide,
        ),
        RateLimitServer(*place(RATE_LIMIT), python=rate_limit_python),
        PostfwdServer(*place(POSTFWD)),
        BareServer(*place(BARE), uvloop=postwarden_uses_uvloop(hide)),
        BareServer(*place(BARE_STANDARD), uvloop=False),
    ]


@contextlib.contextmanager
def running(servers: list[Server]) -> Iterator[list[Server]]:
    """Start the servers one after the other; stop every one that started."""
    started: list[Server] = []
    try:
        for server in servers:
            server.start()
            started.append(server)
        yield started
    finally:
        for server in reversed(started):
            server.stop()


def source_version() -> str:
    """The commit of src/ (read-only git commands), and whether src/ differs from it."""
    git = ["git", "-C", str(ROOT)]
    head = subprocess.run(
        [*git, "rev-parse", "--short", "HEAD"], check=False, capture_output=True, text=True
    )
    if head.returncode != 0:
        return "an unknown commit"
    changed = subprocess.run([*git, "diff", "--quiet", "HEAD", "--", "src"], check=False)
    edited = " with uncommitted changes in src/" if changed.returncode == 1 else ""
    return f"commit {head.stdout.strip()}{edited}"


def context_lines(args: argparse.Namespace, load: Load, servers: list[Server]) -> list[str]:
    rate_limit = next(s for s in servers if isinstance(s, RateLimitServer))
    load1, load5, _ = os.getloadavg()
    client = "uvloop" if load.python != sys.executable else "asyncio"
    loop = "uvloop" if postwarden_uses_uvloop(args.without_uvloop) else "asyncio's own loop"
    command = " ".join([".venv/bin/python -m bench.policyd_bench", *sys.argv[1:]])
    return [
        f"Command: `{command}`",
        "",
        f"Run {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {os.cpu_count()} cores "
        f"({platform.machine()}), Python {platform.python_version()}; load average "
        f"before the run {load1:.2f} / {load5:.2f}.",
        f"Median of {args.repeat} rounds, each measurement {args.duration:g} s after a "
        f"{args.warmup:g} s warm-up; the order of the servers alternates between rounds.",
        f"{args.users:,} distinct logged-in senders; each message is a RCPT and an "
        f"END-OF-MESSAGE request. Load generator: {client}, one process per {PER_PROCESS} "
        "connections.",
        f"postwarden-policyd at {source_version()}, on {loop}; the bare server on the same loop.",
        f"policyd-rate-limit's SQLite database: {rate_limit.database} "
        f"({filesystem_of(rate_limit.database.parent)}), i.e. on disk.",
    ]


def profile_all(servers: list[Server], load: Load, args: argparse.Namespace) -> list[str]:
    lines = []
    for server in servers:
        if server.name in {SQLITE, REDIS}:
            print(f"  profiling {server.label} ...", flush=True)
            lines += profile(server, load, max(args.duration, 8.0), connections=8)
    return lines


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--memory-senders", type=int, default=100_000, help="0: skip")
    parser.add_argument("--profile", action="store_true", help="py-spy postwarden at C=8 too")
    parser.add_argument(
        "--without-uvloop",
        action="store_true",
        help="run postwarden-policyd (and the bare server) on asyncio's own loop",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    if missing := missing_tools():
        sys.exit("missing: " + ", ".join(missing))
    load = Load(loadgen_python(), args.warmup, args.duration, args.users)
    ports = Ports()
    workdir = Path(tempfile.mkdtemp(prefix="policyd-bench-"))
    try:
        redis = RedisServer("redis", "redis-server", ports.take(), workdir / "redis")
        servers = make_servers(workdir, ports, args, f"redis://127.0.0.1:{redis.port}/0")
        context = context_lines(args, load, servers)
        print("\n".join(context), flush=True)
        with running([redis, *servers]):
            results = run_rounds(servers, args.concurrency, args.repeat, load)
            profiles = profile_all(servers, load, args) if args.profile else []
        memory = None
        if args.memory_senders:
            print(f"  memory: {args.memory_senders:,} distinct senders ...", flush=True)
            memory = measure_memory(workdir, ports, args.memory_senders, load, args.without_uvloop)
    finally:
        if args.keep:
            print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    report = render(summarize(results), args.concurrency, memory, context)
    if profiles:
        report += "\n\n## Where postwarden-policyd's time goes\n\n" + "\n".join(profiles)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "policyd.md").write_text(report + "\n", encoding="utf-8")
    print()
    print(report)


if __name__ == "__main__":
    main()
