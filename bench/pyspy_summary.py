"""Where a profiled postwarden-policyd spends its time, from py-spy's raw output.

    python -m bench.pyspy_summary PROFILE.raw

``py-spy record --format raw [--native]`` writes one line per distinct stack: the
frames from the outermost to the innermost, separated by ``;``, then a space and the
number of samples. A sample whose innermost frames wait on a condition variable is a
thread waiting for the GIL (or a lock), one signalling a condition variable a thread
handing the GIL over; any other belongs to the first of CONTAINERS
named anywhere in its stack (work that calls much else: the redis client, the
write-behind, the usage log), else to the LEAVES category of its innermost frame that
has one (so a socket write made from inside a decision counts as a socket write).
With ``--native``, C frames (libc's ``write``, uvloop, SQLite) are named too. The
innermost frames are also totalled by function for the self-time list.
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

Categories = list[tuple[str, tuple[str, ...]]]

CONTAINERS: Categories = [
    (
        "counters snapshot for the write-behind (on the event loop)",
        ("CounterFile.rows", "CounterFile.changed_keys"),
    ),
    ("counters written behind to SQLite", ("CounterFile.",)),
    ("counters swept", ("Counters.sweep",)),
    ("usage log written to SQLite (worker thread)", ("UsageLog.flush",)),
    ("Prometheus metrics", ("prometheus_client/",)),
    ("redis client (redis.asyncio)", ("redis/",)),
]
# innermost frames of a thread waiting for the GIL, and of one handing it over to a waiter
GIL_WAIT = ("pthread_cond_timedwait", "pthread_cond_wait")
GIL_HANDOFF = ("pthread_cond_signal", "drop_gil")
LEAVES: Categories = [
    ("getpid() syscalls (asyncio.get_running_loop on Python 3.11)", ("getpid (libc",)),
    (
        "socket write",
        (
            "SocketTransport.write",
            "StreamWriter.write",
            "UVStream_write",
            "UVStream__",
            "write (libc",
        ),
    ),
    ("decision rules (decide.py)", ("policyd/decide.py",)),
    ("counter operations (counters.py)", ("policyd/counters.py",)),
    ("request parsing (protocol.py)", ("policyd/protocol.py",)),
    ("usage rows queued (usage.py)", ("policyd/usage.py",)),
    ("metrics (metrics.py)", ("policyd/metrics.py",)),
    (
        "server, engine and daemon glue",
        ("policyd/server.py", "policyd/engine.py", "policyd/daemon.py", "policyd/stores.py"),
    ),
    ("timeouts (asyncio.wait_for, asyncio.timeout)", ("wait_for (", "asyncio/timeouts.py")),
    ("socket read", ("_read_ready", "uv__read", "read (libc", "recv (libc")),
    ("waiting in epoll (idle or between events)", ("select (", "epoll_", "uv__io_poll")),
    ("garbage collector", ("gc_collect",)),
    ("other event-loop code (asyncio, uvloop)", ("asyncio/", "uvloop", "loop.c", "Runner.run")),
]
WORKER_THREAD = ("Thread._bootstrap", "thread_run (")
LINE_NUMBER = re.compile(r":\d+\)$")


def read_raw(path: Path) -> list[tuple[str, int]]:
    stacks = []
    for line in path.read_text(encoding="utf-8").splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            stacks.append((stack, int(count)))
    return stacks


def category(stack: str) -> str:
    innermost = stack.rsplit(";", 2)[-2:]
    if any(marker in frame for frame in innermost for marker in GIL_WAIT):
        return "waiting for the GIL (or a lock)"
    if any(marker in innermost[-1] for marker in GIL_HANDOFF):
        return "handing the GIL to a waiting thread"
    for label, markers in CONTAINERS:
        if any(marker in stack for marker in markers):
            return label
    for frame in reversed(stack.split(";")):
        for label, markers in LEAVES:
            if any(marker in frame for marker in markers):
                return label
    return "other (threads, interpreter)"


def by_category(stacks: list[tuple[str, int]]) -> Counter[str]:
    totals: Counter[str] = Counter()
    for stack, count in stacks:
        totals[category(stack)] += count
    return totals


def self_time(stacks: list[tuple[str, int]]) -> Counter[str]:
    """Samples by innermost function (file and name, without the line)."""
    totals: Counter[str] = Counter()
    for stack, count in stacks:
        innermost = stack.rsplit(";", 1)[-1]
        totals[LINE_NUMBER.sub(")", innermost)] += count
    return totals


def split_threads(stacks: list[tuple[str, int]]) -> tuple[list[tuple[str, int]], ...]:
    """(the main thread, which runs the event loop; the worker threads)."""
    workers = [(s, n) for s, n in stacks if any(mark in s for mark in WORKER_THREAD)]
    loop = [(s, n) for s, n in stacks if not any(mark in s for mark in WORKER_THREAD)]
    return loop, workers


def summary_lines(path: Path, top: int = 12) -> list[str]:
    loop, workers = split_threads(read_raw(path))
    loop_total = sum(n for _, n in loop) or 1
    in_loop, in_workers = by_category(loop), by_category(workers)
    names = sorted(set(in_loop) | set(in_workers), key=lambda k: -in_loop[k] - in_workers[k])
    lines = [
        f"Shares of the event-loop thread's {loop_total:,} samples (py-spy samples a thread "
        "only while it runs, so this is where the loop's CPU time goes); worker threads' "
        "samples on the same scale, i.e. relative to the loop's busy time.",
        "",
        "| where | event-loop thread | worker threads |",
        "|---|---:|---:|",
        *(
            f"| {name} | {in_loop[name] / loop_total:.1%} | {in_workers[name] / loop_total:.1%} |"
            for name in names
        ),
        "",
        f"Top {top} functions by self time on the event-loop thread:",
        "",
        "| function | self |",
        "|---|---:|",
    ]
    lines += [
        f"| `{name}` | {n / loop_total:.1%} |" for name, n in self_time(loop).most_common(top)
    ]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("raw", type=Path)
    parser.add_argument("--top", type=int, default=12)
    args = parser.parse_args()
    print("\n".join(summary_lines(args.raw, args.top)))


if __name__ == "__main__":
    main()
