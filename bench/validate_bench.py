"""Benchmark `postwarden validate` against a bare C-accelerated YAML parse, in one run.

    python -m bench.validate_bench [--users 100000 200000] [--repeat 3]

For each size it generates a synthetic policy (users/10 domains, 1,000 lists)
and times, alternating and as separate processes so that start-up counts on
both sides:

- bare:    PyYAML's CSafeLoader loading policy.yml and nothing else
- bare-gc-off: the same with Python's cyclic garbage collector switched off, as
           postwarden does while it loads (shown so that the comparison is fair)
- validate: `postwarden validate policy.yml` (which also reads secrets.yml,
           resolves secrets, validates every model and runs every check)
- invalid: the same policy with one defect near the end, so that validation
           fails and reports the exact line and column

It prints the median wall time and peak memory of each, the ratios the goals
are about, and writes the table to bench/out/validate.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from bench.gen_policy import write

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out"
GOAL_VS_BARE = 1.5
GOAL_DOUBLING = 2.2

BARE = """
import gc, sys, yaml
if sys.argv[2] == "gc-off":
    gc.disable()
class Loader(yaml.CSafeLoader):
    pass
Loader.add_constructor("!secret", lambda loader, node: loader.construct_scalar(node))
with open(sys.argv[1], "rb") as f:
    yaml.load(f, Loader=Loader)
"""


@dataclass
class Run:
    seconds: float
    max_rss_mb: float
    exit_code: int
    stderr: str


def run(command: list[str]) -> Run:
    start = time.perf_counter()
    process = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    assert process.stderr is not None
    stderr = process.stderr.read()
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - start
    process.returncode = os.waitstatus_to_exitcode(status)
    return Run(seconds, usage.ru_maxrss / 1024, process.returncode, stderr)


def break_one_user(policy: Path, broken: Path) -> None:
    """Copy the policy, giving its last user an unknown throttle."""
    text = policy.read_text(encoding="utf-8")
    lists_at = text.index("\nlists:\n")
    last_quota = text.rindex("    quota: 2GiB\n", 0, lists_at)
    text = text[:last_quota] + "    throttle: staf\n" + text[last_quota:]
    broken.parent.mkdir(parents=True, exist_ok=True)
    broken.write_text(text, encoding="utf-8")
    (broken.parent / "secrets.yml").write_bytes((policy.parent / "secrets.yml").read_bytes())


def main() -> None:
    parser = argparse.ArgumentParser(description="validate vs. bare C YAML parse")
    parser.add_argument("--users", type=int, nargs="+", default=[100_000, 200_000])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    postwarden = str(Path(sys.executable).parent / "postwarden")
    results: dict[tuple[int, str], list[Run]] = {}

    for users in args.users:
        data = OUT / f"policy-{users}"
        policy = write(data, users, max(1, users // 10), 1000)
        broken = OUT / f"policy-{users}-broken" / "policy.yml"
        break_one_user(policy, broken)
        commands = {
            "bare": [sys.executable, "-c", BARE, str(policy), "gc-on"],
            "bare-gc-off": [sys.executable, "-c", BARE, str(policy), "gc-off"],
            "validate": [postwarden, "validate", str(policy)],
            "invalid": [postwarden, "validate", str(broken)],
        }
        for round_number in range(args.repeat):
            order = list(commands) if round_number % 2 == 0 else list(reversed(commands))
            for name in order:
                result = run(commands[name])
                expected = 1 if name == "invalid" else 0
                if result.exit_code != expected:
                    sys.exit(f"{name} at {users} users exited {result.exit_code}:\n{result.stderr}")
                if name == "invalid" and "unknown throttle 'staf'" not in result.stderr:
                    sys.exit(f"the invalid policy did not report its defect:\n{result.stderr}")
                results.setdefault((users, name), []).append(result)
                print(f"  {users:>7} users  {name:<8} {result.seconds:6.2f} s", flush=True)

    report = table(results, args.users, args.repeat)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "validate.md").write_text(report, encoding="utf-8")
    print()
    print(report)


def median(runs: list[Run]) -> float:
    return statistics.median(r.seconds for r in runs)


def table(results: dict[tuple[int, str], list[Run]], sizes: list[int], repeat: int) -> str:
    lines = [
        f"Median of {repeat} runs each, alternating; wall time includes interpreter start-up.",
        "",
        "| users | bare C parse | bare, gc off | validate | validate / bare "
        "| validate / bare gc off | invalid (1 error) | invalid / bare "
        "| peak RSS bare | peak RSS validate |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for users in sizes:
        bare = median(results[(users, "bare")])
        bare_gc_off = median(results[(users, "bare-gc-off")])
        valid = median(results[(users, "validate")])
        invalid = median(results[(users, "invalid")])
        rss_bare = max(r.max_rss_mb for r in results[(users, "bare")])
        rss_valid = max(r.max_rss_mb for r in results[(users, "validate")])
        lines.append(
            f"| {users:,} | {bare:.2f} s | {bare_gc_off:.2f} s | {valid:.2f} s "
            f"| {valid / bare:.2f}x | {valid / bare_gc_off:.2f}x | {invalid:.2f} s "
            f"| {invalid / bare:.2f}x | {rss_bare:.0f} MB | {rss_valid:.0f} MB |"
        )
    lines.append("")
    worst = max(median(results[(u, "validate")]) / median(results[(u, "bare")]) for u in sizes)
    verdict = "met" if worst <= GOAL_VS_BARE else "NOT met"
    lines.append(
        f"- validate / bare C parse: at most {worst:.2f}x (goal <= {GOAL_VS_BARE}x: {verdict})"
    )
    if len(sizes) >= 2:
        small, large = sizes[0], sizes[-1]
        growth = median(results[(large, "validate")]) / median(results[(small, "validate")])
        factor = large / small
        verdict = "met" if growth <= GOAL_DOUBLING * factor / 2 else "NOT met"
        lines.append(
            f"- validate at {large:,} / at {small:,} users: {growth:.2f}x for {factor:g}x "
            f"the users (goal <= {GOAL_DOUBLING}x for 2x: {verdict})"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
