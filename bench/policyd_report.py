"""The policy benchmark's numbers and its report: medians over rounds, one table per
concurrency, and the goals, each met or NOT met (bench/policyd_bench.py measures)."""

from __future__ import annotations

import statistics
from collections import Counter
from dataclasses import dataclass

from bench.policyd_servers import RATE_LIMIT_VERSION

SQLITE, REDIS, RATE_LIMIT, POSTFWD, BARE, BARE_STANDARD = (
    "postwarden-sqlite",
    "postwarden-redis",
    "policyd-rate-limit",
    "postfwd2",
    "bare",
    "bare-standard-loop",
)
GOAL_VS_RATE_LIMIT = 10.0
GOAL_REDIS_VS_RATE_LIMIT = 5.0
GOAL_VS_BARE = 0.60
GOAL_P99_MS = 5.0
GOAL_RSS_MB = 100.0


@dataclass
class Measurement:
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int
    actions: Counter[str]
    client_cpu: float
    """CPU share of the busiest load-generator process."""
    seconds: float = 0.0
    failure: str = ""


Results = dict[tuple[str, int], list[Measurement]]
"""Every round's measurement, by (server name, concurrency)."""


def failed(why: str) -> Measurement:
    nan = float("nan")
    return Measurement(0.0, nan, nan, 0, 1, Counter(), 0.0, failure=why)


def unexpected(actions: Counter[str]) -> dict[str, int]:
    """Replies other than DUNNO: a limit was hit, or the server failed."""
    return {action: n for action, n in actions.items() if action != "DUNNO"}


@dataclass
class Memory:
    senders: int
    baseline_mb: float
    rss_mb: float
    hwm_mb: float
    requests: int
    seconds: float
    actions: Counter[str]
    failure: str = ""


@dataclass
class Summary:
    rps: float
    p50_ms: float
    p99_ms: float
    client_cpu: float
    runs: int
    failure: str = ""


def summarize_runs(runs: list[Measurement]) -> Summary:
    """Medians over the rounds that worked; a failure is shown when none did."""
    good = [m for m in runs if not m.failure]
    if not good:
        nan = float("nan")
        return Summary(0.0, nan, nan, 0.0, 0, runs[0].failure)
    return Summary(
        statistics.median(m.rps for m in good),
        statistics.median(m.p50_ms for m in good),
        statistics.median(m.p99_ms for m in good),
        statistics.median(m.client_cpu for m in good),
        len(good),
        "" if len(good) == len(runs) else f"{len(runs) - len(good)} of {len(runs)} rounds failed",
    )


def summarize(results: Results) -> dict[tuple[str, int], Summary]:
    return {key: summarize_runs(runs) for key, runs in results.items()}


def share(part: float, whole: float) -> float:
    return part / whole if whole > 0 else float("nan")


# ---------------------------------------------------------------------- report

LABELS = {
    SQLITE: "postwarden (SQLite)",
    REDIS: "postwarden (Redis)",
    RATE_LIMIT: f"policyd-rate-limit {RATE_LIMIT_VERSION}",
    POSTFWD: "postfwd2",
    BARE: "bare asyncio server (uvloop)",
    BARE_STANDARD: "bare asyncio server (standard loop)",
}


def verdict(met: bool) -> str:
    return "met" if met else "NOT met"


def concurrency_table(summary: dict[tuple[str, int], Summary], connections: int) -> list[str]:
    lines = [
        f"### C = {connections}",
        "",
        "| server | req/s | p50 | p99 | / policyd-rate-limit | / bare, standard loop "
        "| / bare, uvloop | client CPU |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    rate_limit = summary[(RATE_LIMIT, connections)].rps
    bare = summary[(BARE, connections)].rps
    standard = summary[(BARE_STANDARD, connections)].rps
    for name, label in LABELS.items():
        s = summary[(name, connections)]
        if s.runs == 0:
            lines.append(f"| {label} | failed: {s.failure} | | | | | | |")
            continue
        note = f" ({s.failure})" if s.failure else ""
        lines.append(
            f"| {label}{note} | {s.rps:,.0f} | {s.p50_ms:.3f} ms | {s.p99_ms:.3f} ms "
            f"| {share(s.rps, rate_limit):.1f}x | {share(s.rps, standard):.0%} "
            f"| {share(s.rps, bare):.0%} | {s.client_cpu:.0%} |"
        )
    return [*lines, ""]


def goal_lines(
    summary: dict[tuple[str, int], Summary], concurrency: list[int], memory: Memory | None
) -> list[str]:
    def rps(name: str, connections: int) -> float:
        return summary[(name, connections)].rps

    lines = ["## Goals", ""]
    c8 = 8 if 8 in concurrency else concurrency[0]
    ratio = share(rps(SQLITE, c8), rps(RATE_LIMIT, c8))
    lines.append(
        f"- postwarden (SQLite) / policyd-rate-limit at C={c8}: {ratio:.1f}x "
        f"(goal >= {GOAL_VS_RATE_LIMIT:.0f}x: {verdict(ratio >= GOAL_VS_RATE_LIMIT)})"
    )
    for connections in concurrency:
        # the goal's reference: a bare asyncio server, i.e. on asyncio's own loop
        of_bare = share(rps(SQLITE, connections), rps(BARE_STANDARD, connections))
        of_uvloop = share(rps(SQLITE, connections), rps(BARE, connections))
        lines.append(
            f"- postwarden (SQLite) / bare asyncio server at C={connections}: {of_bare:.0%} "
            f"(goal >= {GOAL_VS_BARE:.0%}: {verdict(of_bare >= GOAL_VS_BARE)}); against a bare "
            f"server on uvloop, as postwarden runs: {of_uvloop:.0%}"
        )
    c32 = 32 if 32 in concurrency else concurrency[-1]
    for name in (SQLITE, REDIS):
        p99 = summary[(name, c32)].p99_ms
        lines.append(
            f"- {LABELS[name]} p99 at C={c32}: {p99:.2f} ms "
            f"(goal <= {GOAL_P99_MS:.0f} ms: {verdict(p99 <= GOAL_P99_MS)})"
        )
    lines.append(
        f"  - with C connections each waiting for its reply, mean latency = C / throughput "
        f"(Little's law): a p99 of {GOAL_P99_MS:.0f} ms at C={c32} needs well over "
        f"{c32 / (GOAL_P99_MS / 1000):,.0f} req/s"
    )
    ratio = share(rps(REDIS, c8), rps(RATE_LIMIT, c8))
    lines.append(
        f"- postwarden (Redis) / policyd-rate-limit at C={c8}: {ratio:.1f}x "
        f"(goal >= {GOAL_REDIS_VS_RATE_LIMIT:.0f}x: {verdict(ratio >= GOAL_REDIS_VS_RATE_LIMIT)})"
    )
    if memory is not None:
        lines += memory_lines(memory)
    return [*lines, ""]


def memory_lines(memory: Memory) -> list[str]:
    state = memory.rss_mb - memory.baseline_mb
    unexpected_replies = unexpected(memory.actions)
    lines = [
        f"- postwarden (SQLite), the state of {memory.senders:,} distinct senders (RSS after "
        f"one message from each, {memory.requests:,} requests in {memory.seconds:.1f} s, less "
        f"RSS before the first request): {state:.0f} MB (goal <= {GOAL_RSS_MB:.0f} MB: "
        f"{verdict(state <= GOAL_RSS_MB and not memory.failure)})",
        f"  - the whole process: {memory.rss_mb:.0f} MB (peak {memory.hwm_mb:.0f} MB), of which "
        f"{memory.baseline_mb:.0f} MB before the first request: the interpreter, its "
        f"libraries and the loaded policy of {memory.senders:,} users",
    ]
    if unexpected_replies:
        lines.append(f"  - replies other than DUNNO: {unexpected_replies}")
    if memory.failure:
        lines.append(f"  - NOT VALID: the senders were not all served: {memory.failure}")
    return lines


def render(
    summary: dict[tuple[str, int], Summary],
    concurrency: list[int],
    memory: Memory | None,
    context: list[str],
) -> str:
    lines = [*context, ""]
    for connections in concurrency:
        lines += concurrency_table(summary, connections)
    lines += goal_lines(summary, concurrency, memory)
    return "\n".join(lines)
