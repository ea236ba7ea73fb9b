"""The smtp_out_connections report counts real delivery lines exactly as pflogsumm
does: mail sent, deferred and bounced through the pool transports of the e2e host,
both tools reading the same slice of Postfix's log."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench import pflogsumm
from postwarden.policy.load import load_policy
from postwarden.render.postfix import pool_transports
from postwarden.reports.connections import smtp_out_connections
from postwarden.reports.postfix_log import Delivery, read_deliveries
from tests.e2e.conftest import E2E
from tests.e2e.mailhost import POSTFIX_LOG, MailHost, message, wait_for_port

SENDERS = ("bob@example.org", "newsletter@example.com")
GREYLISTING, UNKNOWN_USER, CLOSED = 2526, 2527, 2529
ROUTES = {"deferred.test": GREYLISTING, "bounced.test": UNKNOWN_USER, "refused.test": CLOSED}
"""Next hops other than the e2e sink, for three recipient domains."""
MAIN_CF = Path("/etc/postfix/main.cf")
ROUTES_TABLE = Path("/etc/postfix/postwarden-e2e-routes")


def _run(*command: str) -> None:
    subprocess.run(command, check=True, capture_output=True)


@pytest.fixture
def routed(mailhost: MailHost) -> Iterator[None]:
    """Mail for deferred.test goes to a sink that answers each RCPT with a 4xx
    (greylisting), for bounced.test to one that answers 5xx (no such user), and for
    refused.test to a port where nothing listens. A transport_maps entry with an
    empty transport changes only the next hop: the sender's pool transport stays.
    Connections to the e2e sink are kept for reuse. main.cf is put back as it was
    afterwards."""
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", CLOSED)) != 0, f"port {CLOSED} must be closed"
    sinks = [
        subprocess.Popen(
            ["smtp-sink", "-u", "nobody", *refusal, f"127.0.0.1:{port}", "64"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for port, refusal in (
            (GREYLISTING, ["-r", "RCPT", "-b", "450 4.2.0 Greylisted, try again later"]),
            (UNKNOWN_USER, ["-f", "RCPT", "-B", "550 5.1.1 Recipient address rejected: unknown"]),
        )
    ]
    saved = MAIN_CF.read_bytes()
    try:
        for port in (GREYLISTING, UNKNOWN_USER):
            wait_for_port("127.0.0.1", port)
        ROUTES_TABLE.write_text(
            "".join(f"{domain}\t:[127.0.0.1]:{port}\n" for domain, port in ROUTES.items())
        )
        _run("postmap", f"hash:{ROUTES_TABLE}")
        _run(
            "postconf",
            "-e",
            f"transport_maps = hash:{ROUTES_TABLE}",
            # deliveries over a reused connection, which Postfix marks with conn_use=N
            "smtp_connection_cache_destinations = 127.0.0.1",
        )
        _run("postfix", "reload")
        time.sleep(2)  # the queue manager restarts with the new table
        yield
    finally:
        MAIN_CF.write_bytes(saved)
        subprocess.run(["postfix", "reload"], check=False, capture_output=True)
        for path in (ROUTES_TABLE, ROUTES_TABLE.with_suffix(".db")):
            path.unlink(missing_ok=True)
        for sink in sinks:
            sink.terminate()
            sink.wait(timeout=15)


def recipients(tag: str, number: int) -> list[str]:
    """A different mix per message, so that the domains' counts differ."""
    mix = [
        *(f"{tag}-{number}-g{n}@gmail.com" for n in range(number + 1)),
        f"{tag}-{number}@googlemail.com",
        f"{tag}-{number}@outlook.com",
        f"{tag}-{number}@remote.test",
        f"{tag}-{number}@deferred.test",
        f"{tag}-{number}@refused.test",
    ]
    if number % 2 == 0:
        mix += [f"{tag}-{number}@yahoo.com", f"{tag}-{number}@bounced.test"]
    return mix


def delivered_lines(since: int) -> list[str]:
    with POSTFIX_LOG.open("rb") as handle:
        handle.seek(since)
        text = handle.read().decode("utf-8", "replace")
    return text[: text.rfind("\n") + 1].splitlines()


def wait_for_deliveries(since: int, recipients: list[str], notices: int) -> None:
    """Until each recipient has its delivery line and each sender of a bounced
    message its non-delivery notice (delivered over LMTP), then a moment more."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        lines = [line for line in delivered_lines(since) if ": to=<" in line]
        missing = [r for r in recipients if not any(f"to=<{r}>" in line for line in lines)]
        returned = sum(
            1 for line in lines if "/lmtp[" in line and any(f"to=<{s}>" in line for s in SENDERS)
        )
        if not missing and returned >= notices:
            time.sleep(2)
            return
        time.sleep(0.5)
    raise AssertionError(f"no delivery line for {missing}, {returned}/{notices} notices")


# --------------------------------------------------------------------- the test


def send_mix(mailhost: MailHost, tag: str) -> tuple[list[str], int]:
    """Four messages from each sender; their recipients, and how many messages bounce."""
    everyone: list[str] = []
    bouncing = 0
    for sender in SENDERS:
        for number in range(4):
            to = recipients(f"{tag}-{sender[0]}", number)
            # sizes 15% apart: the same-size rule of the e2e policy stays out of this test
            body = "Quarterly figures.\n" * int(40 * 1.15 ** (number + 4 * SENDERS.index(sender)))
            refused = mailhost.submit(sender, message(sender, to[0], tag, body), recipients=to)
            assert refused == {}
            everyone += to
            bouncing += any(r.endswith("@bounced.test") for r in to)
    return everyone, bouncing


def check_report(deliveries: list[Delivery]) -> None:
    """The report shows the outbound lines, per pool address and per provider."""
    outbound = [d for d in deliveries if d.outbound]
    loaded = load_policy(E2E / "policy.yml", E2E / "secrets.yml")
    transports = {
        t.name: f"{name} {t.address}"
        for name, pool in loaded.policy.ip_pools.items()
        for t in pool_transports(name, pool)
    }
    by_address, by_provider, reasons = smtp_out_connections(deliveries, transports)
    assert {row[0] for row in by_address.rows} <= set(transports.values())
    providers = {str(row[0]): row[1:] for row in by_provider.rows}
    gmail = sum(1 for d in outbound if d.domain in ("gmail.com", "googlemail.com"))
    assert providers["gmail"][1] == gmail
    assert providers["deferred.test"][2] == 8
    for table in (by_address, by_provider):
        sums = [sum(int(row[column]) for row in table.rows) for column in (1, 2, 3, 4)]
        assert sums == [
            sum(d.connection for d in outbound),
            *(sum(1 for d in outbound if d.status == s) for s in ("sent", "deferred", "bounced")),
        ]
    said = {(row[0], row[1], row[2]) for row in reasons.rows}
    assert (
        "deferred.test",
        "deferred",
        "450 4.2.0 Greylisted, try again later (in reply to RCPT TO command)",
    ) in said
    assert (
        "bounced.test",
        "bounced",
        "550 5.1.1 Recipient address rejected: unknown (in reply to RCPT TO command)",
    ) in said
    assert ("refused.test", "deferred", "connect to …: Connection refused") in said


def test_counts_per_domain_and_in_total_equal_pflogsumms(
    mailhost: MailHost, routed: None, tmp_path: Path
) -> None:
    if shutil.which("pflogsumm") is None:
        pytest.fail("pflogsumm is not installed (scripts/setup --test installs it)")
    tag = f"pfl-{uuid.uuid4().hex[:8]}"
    mark = mailhost.log_mark()
    everyone, bouncing = send_mix(mailhost, tag)
    try:
        wait_for_deliveries(mark, everyone, bouncing)
        lines = delivered_lines(mark)
        log = tmp_path / "postfix.log"
        log.write_text("\n".join(lines) + "\n", encoding="utf-8")
        read = read_deliveries(log)
        assert read.skipped == {}
        deliveries = read.deliveries

        # real material: every outcome, several domains, local deliveries beside
        outbound = [d for d in deliveries if d.outbound]
        by_status = Counter((d.domain, d.status) for d in outbound)
        assert by_status[("gmail.com", "sent")] >= 10
        assert by_status[("deferred.test", "deferred")] == 8
        assert 1 <= by_status[("refused.test", "deferred")] <= 8
        assert by_status[("bounced.test", "bounced")] == 4
        assert any(d.process == "lmtp" for d in deliveries)
        # a line with conn_use went over a connection opened before it
        shown = [line for line in lines if ": to=<" in line]
        reused = [d for line, d in zip(shown, deliveries, strict=True) if "conn_use=" in line]
        assert reused, "no connection was reused"
        assert not any(d.connection for d in reused)
        assert 0 < sum(d.connection for d in outbound) < len(outbound) - len(reused)

        expected = pflogsumm.parse(pflogsumm.run(log))
        assert pflogsumm.ours(deliveries) == expected
        assert {"gmail.com", "googlemail.com", "deferred.test", "refused.test"} <= set(
            expected.domains
        )
        check_report(deliveries)
    finally:
        # the deferred mail would be tried again long after this test
        queued = {d.queue_id for d in read_deliveries(POSTFIX_LOG).deliveries if tag in d.recipient}
        for queue_id in queued:
            subprocess.run(["postsuper", "-d", queue_id], check=False, capture_output=True)
