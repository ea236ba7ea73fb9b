"""Benchmark the reports against their yardsticks, in one run.

    python -m bench.report_bench [PART ...] [--rounds 3] [--lines 1000000] [--results]

Parts (all of them when none is named):

- postfix-log: the smtp_out_connections report (reports.postfix_log reading,
  reports.connections building, printed as text) against pflogsumm on the same
  Postfix log: --lines lines over 7 days, generated with --seed into a temporary
  directory (bench/gen_postfix_log.py). Both run as separate processes, interpreter
  start-up included, alternating, --rounds times; the goal is ours at least 3x
  faster. The counts of both must be equal (bench/pflogsumm.py), or the run fails.

Each part makes a Markdown section: printed, written to bench/out/report_bench.md,
and with --results put in bench/RESULTS.md in place of the part's earlier section
(or after the last one); the other sections stay as they are.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from bench import gen_postfix_log, pflogsumm
from postwarden.reports.connections import smtp_out_connections
from postwarden.reports.peaks import Budgets
from postwarden.reports.postfix_log import iter_deliveries, read_deliveries

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out"
RESULTS = ROOT / "bench" / "RESULTS.md"
GOAL = 3.0

OURS = """
import sys
from postwarden.reports.connections import smtp_out_connections
from postwarden.reports.output import as_text
from postwarden.reports.postfix_log import iter_deliveries
deliveries = iter_deliveries(sys.argv[1], reference=float(sys.argv[2]))
sys.stdout.write(as_text(smtp_out_connections(deliveries)))
"""


@dataclass
class Run:
    seconds: float
    max_rss_mb: float


def run(command: list[str], output: Path) -> Run:
    start = time.perf_counter()
    with output.open("wb") as sink:
        process = subprocess.Popen(command, stdout=sink, stderr=subprocess.PIPE)
        assert process.stderr is not None
        stderr = process.stderr.read()
        _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"{command[0]} failed:\n{stderr.decode(errors='replace')}")
    return Run(seconds, usage.ru_maxrss / 1024)


# ------------------------------------------------------------------ postfix-log


def postfix_log(args: argparse.Namespace) -> str:
    with tempfile.TemporaryDirectory(prefix="postwarden-bench-") as workdir:
        log = Path(workdir) / "postfix.log"
        began = time.perf_counter()
        # in a process of its own: a child started from this one would report this
        # one's memory as its peak
        subprocess.run(
            [
                sys.executable,
                "-m",
                "bench.gen_postfix_log",
                "--lines",
                str(args.lines),
                "--days",
                "7",
                "--seed",
                str(args.seed),
                "-o",
                str(log),
            ],
            check=True,
            cwd=ROOT,
        )
        reference = gen_postfix_log.reference(7)
        print(f"  generated {args.lines:,} lines in {time.perf_counter() - began:.1f} s")
        with log.open("rb") as handle:  # both start from the page cache
            while handle.read(1 << 22):
                pass
        commands = {
            "ours": [sys.executable, "-c", OURS, str(log), str(reference)],
            # -u 10: the top ten senders and recipients, not all of them, as a report
            # for people is run; the counts are the same
            "pflogsumm": ["pflogsumm", "-u", "10", str(log)],
        }
        runs: dict[str, list[Run]] = {name: [] for name in commands}
        for number in range(args.rounds):
            order = list(commands) if number % 2 == 0 else list(reversed(commands))
            for name in order:
                result = run(commands[name], Path(workdir) / f"{name}.txt")
                runs[name].append(result)
                print(f"  round {number + 1}  {name:<9} {result.seconds:6.2f} s", flush=True)

        reading, building = [], []
        read = read_deliveries(log, reference=reference)
        for _ in range(args.rounds):
            began = time.perf_counter()
            for _delivery in iter_deliveries(log, reference=reference):
                pass
            reading.append(time.perf_counter() - began)
            began = time.perf_counter()
            smtp_out_connections(read.deliveries)
            building.append(time.perf_counter() - began)

        theirs = pflogsumm.parse((Path(workdir) / "pflogsumm.txt").read_text())
        counts = pflogsumm.ours(read.deliveries)
        if counts != theirs or read.skipped:
            sys.exit(f"the counts differ:\nours      {counts}\npflogsumm {theirs}\n{read.skipped}")
        size = log.stat().st_size / 1e6
    return postfix_log_section(args, size, len(read.deliveries), runs, reading, building, counts)


def postfix_log_section(
    args: argparse.Namespace,
    size: float,
    deliveries: int,
    runs: dict[str, list[Run]],
    reading: list[float],
    building: list[float],
    counts: pflogsumm.Counts,
) -> str:
    ours = statistics.median(r.seconds for r in runs["ours"])
    theirs = statistics.median(r.seconds for r in runs["pflogsumm"])
    ratio = theirs / ours
    totals = counts.totals
    return "\n".join(
        [
            "## `smtp_out_connections` from Postfix's log vs. pflogsumm",
            "",
            "Command (from the repository root, after `scripts/setup --test`, which installs",
            "pflogsumm 1.1.5):",
            "",
            "```sh",
            f".venv/bin/python -m bench.report_bench postfix-log --rounds {args.rounds}",
            "```",
            "",
            f"A Postfix log of {args.lines:,} lines ({size:.0f} MB) over 7 days, generated "
            f"with seed {args.seed}",
            "(`bench/gen_postfix_log.py`): outbound mail through pool transports to the big",
            "providers and 2,000 smaller domains, sent, deferred and retried, bounced, failed",
            "connects, reused connections; inbound mail over LMTP, forwards, rejects, and the",
            f"lines of smtpd, cleanup, qmgr, bounce, anvil and scache. {deliveries:,} delivery",
            "lines. Both are separate processes reading the file from the page cache and",
            "printing their report, interpreter start-up included, in alternating order;",
            "pflogsumm with `-u 10` (top ten senders and recipients).",
            "",
            f"Median of {args.rounds} rounds:",
            "",
            "| smtp_out_connections | pflogsumm | pflogsumm / ours | peak RSS ours "
            "| peak RSS pflogsumm |",
            "|---:|---:|---:|---:|---:|",
            f"| {ours:.2f} s | {theirs:.2f} s | {ratio:.1f}x "
            f"| {max(r.max_rss_mb for r in runs['ours']):.0f} MB "
            f"| {max(r.max_rss_mb for r in runs['pflogsumm']):.0f} MB |",
            "",
            f"- ours at least {GOAL:g}x faster than pflogsumm: {ratio:.1f}x "
            f"({'met' if ratio >= GOAL else 'NOT met'}).",
            f"- In one process: reading the log {statistics.median(reading):.2f} s, building "
            f"the tables from the records {statistics.median(building):.2f} s.",
            f"- Equal counts: {totals['delivered']:,} delivered, {totals['deferrals']:,} "
            f"deferrals, {totals['bounced']:,} bounced, {totals['forwarded']:,} forwarded, "
            f"sent and deferred for each of {len(counts.domains):,} recipient domains.",
            "",
            "Why it is fast: the reader looks for delivery lines with `str.find` over",
            "blocks of 4 MiB, so the three lines in four that are no deliveries cost no",
            "Python step and no regex; one regex reads a delivery line whole; a syslog",
            "stamp is converted once per minute; the records are tuples made without the",
            "NamedTuple constructor's Python frame. The report streams the records",
            "(`iter_deliveries`) instead of keeping them: its memory stays flat. The",
            "deferral and bounce texts are normalised once per distinct text, with",
            "patterns that start with a literal or a class of characters and run only on",
            "texts holding their key character, so that the regex engine skips to where",
            "they may match. When a list of records is kept (`read_deliveries`), the",
            "cyclic garbage collector is paused while it grows.",
            "",
        ]
    )


# ------------------------------------------------------------------ usage-log

BARE = (
    "SELECT login, count(*), sum(recipients), sum(size) FROM usage "
    "WHERE time >= ? AND time < ? GROUP BY login"
)
"""The yardstick: the least a report of messages per login could ask of SQLite."""
USAGE_GOAL = 2.0


def write_usage_log(path: Path, rows: int, days: int, seed: int, now: float) -> None:
    """A usage log as the daemon writes it (its own schema and time index): ``rows``
    messages over ``days`` days up to ``now``, from 5,000 logins; most pass, some are
    deferred, held or scored by rspamd."""
    import random
    import sqlite3

    from postwarden.policyd.usage import REPORT_INDEXES, SCHEMA

    pick = random.Random(seed)
    logins = [f"user{n}@example{n % 50}.com" for n in range(5000)]
    start = now - days * 86400
    step = days * 86400 / rows
    db = sqlite3.connect(path)
    db.executescript("PRAGMA journal_mode = WAL; PRAGMA synchronous = OFF;" + SCHEMA)
    db.executescript(REPORT_INDEXES)

    def made() -> Iterator[tuple[object, ...]]:
        for n in range(rows):
            login = logins[int(pick.paretovariate(1.2)) % len(logins)]
            luck = pick.random()
            decision = "DUNNO"
            action, score, symbols = None, None, None
            if luck < 0.02:
                decision = "DEFER 4.7.1 sending limit reached: messages 200/h (staff)"
            elif luck < 0.03:
                decision, action, score = "HOLD spam (rspamd score 11.20)", "quarantine", 11.2
                symbols = "BAYES_SPAM MANY_INVISIBLE_PARTS R_SUSPICIOUS_URL"
            elif luck < 0.05:
                action, score, symbols = "add header", 6.5, "BAYES_SPAM"
            sender = login if luck > 0.1 else f"info@{login.partition('@')[2]}"
            if 0.1 < luck < 0.11:  # a send-as grant of another domain
                sender = "alerts@partner.example"
            yield (
                start + n * step,
                login,
                sender,
                1 + int(pick.expovariate(0.5)),
                2000 + int(pick.expovariate(1 / 20000)),
                "192.0.2.1",
                None,
                decision,
                f"{n:X}",
                action,
                score,
                symbols,
            )

    with db:
        db.executemany("INSERT INTO usage VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", made())
    db.close()


BENCH_POLICY = """\
server:
  hostname: mail.example0.com
  postmaster: ops@example.net
throttles:
  staff:
    messages: 200/h
    recipients: 1000/d
  shared:
    messages: 5000/h
domains:
"""
"""Every login under a throttle of two limits, and one domain's senders under a shared
one: the report shows how close each came (the throttle-peak table)."""


def bench_budgets(workdir: Path) -> Budgets:
    from postwarden.policy.load import load_policy
    from postwarden.reports.make import budgets_of

    domains = "".join(
        f"  example{n}.com:\n    throttle: staff\n"
        + ("    shared_throttle: shared\n" if n == 0 else "")
        for n in range(50)
    )
    path = workdir / "policy.yml"
    path.write_text(BENCH_POLICY + domains, encoding="utf-8")
    return budgets_of(load_policy(path).policy)


def usage_log(args: argparse.Namespace) -> str:
    import sqlite3

    from postwarden.reports.make import UsageSource, make_report
    from postwarden.reports.period import Period

    with tempfile.TemporaryDirectory(prefix="postwarden-bench-") as workdir:
        path = Path(workdir) / "usage.sqlite"
        budgets = bench_budgets(Path(workdir))
        now = time.time()
        began = time.perf_counter()
        write_usage_log(path, args.rows, 10, args.seed, now)
        print(f"  wrote {args.rows:,} rows in {time.perf_counter() - began:.1f} s")
        period = Period(now - 7 * 86400, now)
        kinds = ["smtp_out_usage", "outgoing_spam"]
        ours: list[float] = []
        bare: list[float] = []
        for number in range(args.rounds + 1):  # the first round warms the page cache
            for name in ["ours", "bare"] if number % 2 == 0 else ["bare", "ours"]:
                began = time.perf_counter()
                if name == "ours":
                    report = make_report(
                        kinds, period, UsageSource(path=str(path)), budgets=budgets
                    )
                else:
                    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
                    grouped = db.execute(BARE, (period.start, period.end)).fetchall()
                    db.close()
                took = time.perf_counter() - began
                if number:
                    (ours if name == "ours" else bare).append(took)
                    print(f"  round {number}  {name:<5} {took:6.2f} s", flush=True)
        by_login = {row[0]: row[1] for row in grouped}
        shown = {
            row[0]: sum(int(n) for n in (row[1], row[4], row[5])) for row in report.tables[0].rows
        }
        if shown != by_login:
            sys.exit("the messages per login differ from the bare GROUP BY")
        in_period = sum(by_login.values())
    ratio = statistics.median(ours) / statistics.median(bare)
    return "\n".join(
        [
            "## `smtp_out_usage` and `outgoing_spam` from the usage log vs. a bare GROUP BY",
            "",
            "```sh",
            f".venv/bin/python -m bench.report_bench usage-log --rounds {args.rounds}",
            "```",
            "",
            f"A usage log of {args.rows:,} rows over 10 days, written with the daemon's schema",
            f"and time index (seed {args.seed}); the report covers the last 7 days, "
            f"{in_period:,} rows.",
            "Ours: both reports, made as `postwarden report` makes them, with a policy of",
            "three limits in two throttles (so the throttle-peak table is made too): one",
            "pass of SQLite over the period's rows reading login, time and the counts,",
            "grouped by login and hour; the rows sent under another domain's address and",
            "those not simply passed through their partial covering indexes; folded into",
            "the tables in Python. The yardstick: `" + BARE + "`.",
            "Same process, warm page cache, alternating order.",
            "",
            f"Median of {args.rounds} rounds:",
            "",
            "| ours | bare GROUP BY | ours / bare |",
            "|---:|---:|---:|",
            f"| {statistics.median(ours):.2f} s | {statistics.median(bare):.2f} s | {ratio:.2f}x |",
            "",
            f"- within {USAGE_GOAL:g}x of the bare GROUP BY: {ratio:.2f}x "
            f"({'met' if ratio <= USAGE_GOAL else 'NOT met'}).",
            "- The messages per login (sent, held and refused) equal the bare GROUP BY's.",
            "",
            "Why it is close: reading a column is what costs SQLite most here (reading the",
            "sender alone adds about a quarter of the bare query), so the pass over every",
            "row reads none it can do without. The few rows that need more (another",
            "domain's sender, a refusal, a hold, an rspamd verdict) are in partial indexes",
            "that hold every column the report reads; they cost the daemon a write only",
            "for those rows. Tried and slower: grouping by sender (2.2x), a key made of",
            "the decision and rspamd's action (2.25x), conditional sums instead of a key.",
            "",
        ]
    )


# ----------------------------------------------------------------------- parts

PARTS: dict[str, Callable[[argparse.Namespace], str]] = {
    "postfix-log": postfix_log,
    "usage-log": usage_log,
}
"""Each part: its options in ``args``, its Markdown section back."""


def update_results(section: str) -> None:
    heading = section.splitlines()[0]
    text = RESULTS.read_text(encoding="utf-8")
    if heading in text:
        before, _, rest = text.partition(heading)
        after = rest.partition("\n## ")
        text = before + section.rstrip("\n") + ("\n\n## " + after[2] if after[1] else "\n")
    else:
        text = text.rstrip("\n") + "\n\n" + section.rstrip("\n") + "\n"
    RESULTS.write_text(text, encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description="the reports vs. their yardsticks")
    parser.add_argument("parts", nargs="*", metavar="PART", help=", ".join(PARTS))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--lines", type=int, default=1_000_000, help="postfix-log")
    parser.add_argument("--seed", type=int, default=1, help="postfix-log, usage-log")
    parser.add_argument("--rows", type=int, default=10_000_000, help="usage-log")
    parser.add_argument("--results", action="store_true", help="update bench/RESULTS.md")
    args = parser.parse_args()
    unknown = set(args.parts) - set(PARTS)
    if unknown:
        parser.error(f"no part {', '.join(sorted(unknown))}; the parts: {', '.join(PARTS)}")
    sections = []
    for name in args.parts or list(PARTS):
        print(f"{name}:", flush=True)
        sections.append(PARTS[name](args))
    report = "\n".join(sections)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "report_bench.md").write_text(report, encoding="utf-8")
    print()
    print(report)
    if args.results:
        for section in sections:
            update_results(section)


if __name__ == "__main__":
    main()
