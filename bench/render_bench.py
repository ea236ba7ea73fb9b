"""Benchmark rendering against validation, in one run.

    python -m bench.render_bench [--users 100000] [--repeat 3]

For a synthetic policy (bench/gen_policy.py) it times, as separate processes:
`postwarden validate` and `postwarden render -o DIR` (which validates first),
and in this process the render step alone on the loaded policy. The goal is a
render step no slower than validation.
"""

from __future__ import annotations

import argparse
import gc
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench.gen_policy import write
from postwarden.policy.load import load_policy
from postwarden.render.host import HostSettings
from postwarden.render.render import render

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out"


def timed(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description="render vs. validate")
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    postwarden = str(Path(sys.executable).parent / "postwarden")
    policy = write(OUT / f"policy-{args.users}", args.users, max(1, args.users // 10), 1000)
    target = OUT / f"render-{args.users}"

    validate, render_cli, render_step = [], [], []
    loaded = load_policy(policy)
    for _ in range(args.repeat):
        validate.append(timed([postwarden, "validate", str(policy)]))
        render_cli.append(timed([postwarden, "render", str(policy), "-o", str(target)]))
        gc.disable()
        start = time.perf_counter()
        tree = render(loaded, HostSettings())
        render_step.append(time.perf_counter() - start)
        gc.enable()
    files = len(tree)
    size = sum(len(f.content) for f in tree.values()) / 1e6
    shutil.rmtree(target, ignore_errors=True)

    v, c, r = (statistics.median(x) for x in (validate, render_cli, render_step))
    report = (
        f"Median of {args.repeat} runs, {args.users:,} users ({files} files, {size:.1f} MB).\n\n"
        "| validate (process) | render -o DIR (process) | render step alone | "
        "render step / validate |\n|---:|---:|---:|---:|\n"
        f"| {v:.2f} s | {c:.2f} s | {r:.2f} s | {r / v:.2f}x |\n\n"
        f"- render step <= validate: {'met' if r <= v else 'NOT met'}\n"
    )
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "render.md").write_text(report, encoding="utf-8")
    print(report)


if __name__ == "__main__":
    main()
