"""End-to-end throughput: smtp-source -> Postfix -> smtp-sink, with and without a policy service.

    .venv/bin/python -m bench.smtp_bench [--messages 3000] [--sessions 20] [--repeat 3]

Postfix's own load tools, on loopback, in ONE run, configurations alternating:

- none: Postfix asks no policy service;
- bare: Postfix asks a bare asyncio server answering DUNNO (bench/bare_server.py);
- postwarden: Postfix asks postwarden-policyd at every RCPT and END-OF-DATA, and the
  daemon counts every message and recipient against a throttle (local applications
  relaying from mynetworks are counted by their envelope sender);
- policyd-rate-limit 1.2.0: the same, counting per sender (count_mode 0: RCPTs).

each with 1 and with 5 recipients per message. The rspamd milter is switched off:
this measures the policy service, not spam filtering. Like tests/e2e, this takes
over the machine's Postfix configuration (run it as root on a test machine).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from bench.policyd_servers import (
    BareServer,
    Ports,
    PostwardenServer,
    RateLimitServer,
    Server,
    ensure_venv,
)
from tests.e2e.mailhost import SINK_PORT, MailHost, wait_for_port

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out"
GOAL = 0.70
SENDER = "app@bench.example"

POLICY = """\
server: {hostname: mail.bench.example, postmaster: ops@remote.test}
domains:
  bench.example: {throttle: roomy}
users:
  app@bench.example: {}
throttles:
  roomy: {messages: 100000000/h, recipients: 100000000/h}
"""
HOST_VARS = f"""\
mynetworks: ["127.0.0.0/8"]
relayhost: "[127.0.0.1]:{SINK_PORT}"
rspamd_fuzzy: false
dnsbl_zones: []
"""


@dataclass
class SenderRateLimit(RateLimitServer):
    """policyd-rate-limit counting per envelope sender: smtp-source does not log in."""

    def prepare(self) -> None:
        super().prepare()
        path = self.directory / "policyd-rate-limit.yaml"
        config = yaml.safe_load(path.read_text(encoding="utf-8"))
        config.update(limit_by_sasl=False, limit_by_sender=True, limit_by_ip=False)
        path.write_text(yaml.safe_dump(config), encoding="utf-8")


def postconf(*settings: str) -> None:
    subprocess.run(["postconf", "-e", *settings], check=True)


def use_policy(port: int | None) -> None:
    ask = f"check_policy_service inet:127.0.0.1:{port}" if port else ""
    postconf(
        "smtpd_milters =",
        f"smtpd_recipient_restrictions = {ask}".rstrip(),
        f"smtpd_end_of_data_restrictions = {ask}".rstrip(),
    )
    subprocess.run(["postfix", "reload"], check=True, capture_output=True)
    time.sleep(1.5)


def queue_empty(timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        listing = subprocess.run(
            ["postqueue", "-j"], capture_output=True, text=True, check=False
        ).stdout
        if not listing.strip():
            return
        time.sleep(0.2)
    raise RuntimeError("the queue did not drain")


def blast(messages: int, sessions: int, recipients: int) -> float:
    """Messages per second that Postfix accepted from smtp-source."""
    started = time.perf_counter()
    subprocess.run(
        [
            "smtp-source",
            "-s",
            str(sessions),
            "-m",
            str(messages),
            "-r",
            str(recipients),
            "-l",
            "2048",
            "-f",
            SENDER,
            "-t",
            "rcpt@remote.test",
            "-M",
            "load.bench.example",
            "127.0.0.1:25",
        ],
        check=True,
        capture_output=True,
    )
    elapsed = time.perf_counter() - started
    queue_empty()
    return messages / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description="SMTP throughput with policy services")
    parser.add_argument("--messages", type=int, default=3000)
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="smtp-bench-"))
    (work / "policy.yml").write_text(POLICY, encoding="utf-8")
    (work / "secrets.yml").write_text("", encoding="utf-8")
    (work / "host.yml").write_text(HOST_VARS, encoding="utf-8")
    host = MailHost(work / "policy.yml", work / "secrets.yml", work / "host.yml", work)
    host.install()
    subprocess.run(["postfix", "stop"], capture_output=True, check=False)
    sink = subprocess.Popen(
        ["smtp-sink", "-u", "nobody", f"127.0.0.1:{SINK_PORT}", "256"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_for_port("127.0.0.1", SINK_PORT)
    subprocess.run(["postfix", "start"], check=True, capture_output=True)
    wait_for_port("127.0.0.1", 25)

    ports = Ports()
    servers: dict[str, Server | None] = {
        "none": None,
        "bare": BareServer("bare", "bare asyncio server", ports.take(), work / "bare", uvloop=True),
        "postwarden": PostwardenServer(
            "postwarden",
            "postwarden-policyd",
            ports.take(),
            work / "postwarden",
            policy=work / "policy.yml",
            ports=ports,
        ),
        "policyd-rate-limit": SenderRateLimit(
            "rate-limit",
            "policyd-rate-limit 1.2.0",
            ports.take(),
            work / "rate-limit",
            python=ensure_venv("policyd-rate-limit", "policyd-rate-limit==1.2.0"),
        ),
    }
    results: dict[tuple[str, int], list[float]] = {}
    try:
        for server in servers.values():
            if server is not None:
                server.start()
        names = list(servers)
        for round_number in range(args.repeat):
            order = names if round_number % 2 == 0 else list(reversed(names))
            for name in order:
                server = servers[name]
                use_policy(server.port if server is not None else None)
                for recipients in (1, 5):
                    rate = blast(args.messages, args.sessions, recipients)
                    results.setdefault((name, recipients), []).append(rate)
                    print(
                        f"  round {round_number + 1} {name:<20} {recipients} rcpt "
                        f"{rate:8.0f} msg/s",
                        flush=True,
                    )
    finally:
        for server in servers.values():
            if server is not None:
                server.stop()
        subprocess.run(["postfix", "stop"], capture_output=True, check=False)
        sink.terminate()

    report = table(results, args)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "smtp.md").write_text(report, encoding="utf-8")
    print()
    print(report)


def table(results: dict[tuple[str, int], list[float]], args: argparse.Namespace) -> str:
    def median(name: str, recipients: int) -> float:
        return statistics.median(results[(name, recipients)])

    lines = [
        f"Median of {args.repeat} rounds; {args.messages} messages of 2 KiB per measurement "
        f"from {args.sessions} parallel SMTP sessions (smtp-source), to smtp-sink.",
        "",
        "| policy service | 1 recipient: msg/s | / none | 5 recipients: msg/s | / none |",
        "|---|---:|---:|---:|---:|",
    ]
    for name in ("none", "bare", "postwarden", "policyd-rate-limit"):
        one, five = median(name, 1), median(name, 5)
        lines.append(
            f"| {name} | {one:,.0f} | {one / median('none', 1):.2f}x | {five:,.0f} "
            f"| {five / median('none', 5):.2f}x |"
        )
    lines.append("")
    for recipients in (1, 5):
        share = median("postwarden", recipients) / median("none", recipients)
        verdict = "met" if share >= GOAL else "NOT met"
        lines.append(
            f"- postwarden-policyd with {recipients} recipient(s): {share:.2f}x of Postfix "
            f"without a policy service (goal >= {GOAL}x: {verdict})"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
