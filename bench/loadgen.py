"""One load-generator process for the policy benchmark: N persistent connections to a
Postfix policy server, each sending one request and waiting for its reply, as
Postfix's smtpd does.

    python bench/loadgen.py --port PORT --connections 8 [--warmup 1 --duration 5]
    python bench/loadgen.py --port PORT --connections 8 --sweep

It uses only the standard library (and uvloop when importable), so that it can run
under any interpreter. It connects, prints ``ready``, waits for a line on stdin
(the CLOCK_MONOTONIC time in nanoseconds at which to start, so that several
processes start together), then:

- timed (default): sends for ``warmup`` seconds without measuring, then counts the
  replies received in the next ``duration`` seconds and records the latency of each
  request sent and answered in that window (``time.perf_counter_ns``);
- ``--sweep``: every sender of ``--senders`` sends exactly one message (RCPT, then
  END-OF-MESSAGE), spread over the connections, then it stops.

Each message of a logged-in sender is a RCPT request followed by an END-OF-MESSAGE
request, as Postfix asks at both stages. The result is one JSON object on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import random
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import cast

DOMAIN_COUNT = 10
SIZE_STEPS = 997

REQUEST = (
    "request=smtpd_access_policy\n"
    "protocol_state={state}\n"
    "protocol_name=ESMTP\n"
    "client_address={client}\n"
    "client_name=host{client_host}.clients.bench.example\n"
    "client_port={port}\n"
    "reverse_client_name=host{client_host}.clients.bench.example\n"
    "server_address=127.0.0.1\n"
    "server_port=587\n"
    "helo_name=[{client}]\n"
    "sender={sender}\n"
    "recipient={recipient}\n"
    "recipient_count={recipient_count}\n"
    "queue_id={queue_id}\n"
    "instance={instance}\n"
    "size={size}\n"
    "etrn_domain=\n"
    "stress=\n"
    "sasl_method=PLAIN\n"
    "sasl_username={sender}\n"
    "sasl_sender=\n"
    "ccert_subject=\n"
    "ccert_issuer=\n"
    "ccert_fingerprint=\n"
    "ccert_pubkey_fingerprint=\n"
    "encryption_protocol=TLSv1.3\n"
    "encryption_cipher=TLS_AES_256_GCM_SHA384\n"
    "encryption_keysize=256\n"
    "policy_context=submission\n"
    "compatibility_level=3.6\n"
    "mail_version=3.7.11\n"
    "\n"
)


def sender_address(index: int) -> str:
    """The address (and login) of bench user ``index``, as the bench's policy declares it."""
    return f"user{index}@d{index % DOMAIN_COUNT}.bench.example"


def message(index: int, serial: int) -> tuple[bytes, bytes]:
    """One message of sender ``index``: its RCPT request and its END-OF-MESSAGE request."""
    client_host = index % 250 + 1
    fields = {
        "client": f"198.51.100.{client_host}",
        "client_host": client_host,
        "port": 40000 + serial % 20000,
        "sender": sender_address(index),
        "recipient": f"rcpt{serial % 9973}@example.net",
        "queue_id": f"4Q{serial:010X}",
        "instance": f"{index:x}.{serial:x}.0",
    }
    size = 2000 + (serial * 7919) % (SIZE_STEPS * 100)
    rcpt = REQUEST.format(state="RCPT", recipient_count=0, size=0, **fields)
    fields["recipient"] = ""
    end = REQUEST.format(state="END-OF-MESSAGE", recipient_count=1, size=size, **fields)
    return rcpt.encode(), end.encode()


def timed_senders(senders: int, seed: int, offset: int) -> Iterator[int]:
    """Senders in a random order (every one of them before any repeats), forever."""
    order = list(range(senders))
    random.Random(seed).shuffle(order)
    position = offset % senders
    while True:
        yield order[position]
        position = (position + 1) % senders


def swept_senders(senders: int, first: int, step: int) -> Iterator[int]:
    """Senders first, first + step, ... once each."""
    return iter(range(first, senders, step))


@dataclass
class Tally:
    """What all connections of this process saw."""

    measure_from: int = 0
    until: int = 0
    completed: int = 0
    errors: int = 0
    latencies_ns: list[int] = field(default_factory=list)
    actions: Counter[str] = field(default_factory=Counter)


class Connection(asyncio.Protocol):
    """One persistent policy connection, driven from its callbacks: a reply completes,
    the next request goes out (no task switch per request)."""

    def __init__(self, senders: Iterator[int], tally: Tally, serial_base: int) -> None:
        self.senders = senders
        self.tally = tally
        self.serial = serial_base
        self.pending: list[bytes] = []
        self.buffer = b""
        self.sent_at = 0
        self.transport: asyncio.Transport | None = None
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it
        self.transport = cast(asyncio.Transport, transport)

    def start(self) -> None:
        self.send_next()

    def send_next(self) -> None:
        assert self.transport is not None
        if self.transport.is_closing():  # the server closed the connection
            self.tally.errors += 1
            self.finish()
            return
        if not self.pending:
            index = next(self.senders, None)
            if index is None:
                self.finish()
                return
            self.serial += 1
            rcpt, end = message(index, self.serial)
            self.pending = [end, rcpt]
        self.sent_at = time.perf_counter_ns()
        self.transport.write(self.pending.pop())

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if not self.buffer.endswith(b"\n\n"):
            return
        now = time.perf_counter_ns()
        self.record(self.buffer, now)
        self.buffer = b""
        if self.tally.until and now >= self.tally.until:
            self.finish()
        else:
            self.send_next()

    def record(self, reply: bytes, now: int) -> None:
        tally = self.tally
        action = reply.partition(b"=")[2].split(maxsplit=1)[:1] or [b"?"]
        tally.actions[action[0].decode("ascii", "replace").upper()] += 1
        if not reply.startswith(b"action="):
            tally.errors += 1
        if now >= tally.measure_from and (not tally.until or now < tally.until):
            tally.completed += 1
            if self.sent_at >= tally.measure_from:
                tally.latencies_ns.append(now - self.sent_at)

    def finish(self) -> None:
        if not self.done.done():
            self.done.set_result(None)
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.tally.errors += 1
            self.done.set_result(None)


async def connect(args: argparse.Namespace, tally: Tally) -> list[Connection]:
    loop = asyncio.get_running_loop()
    connections = []
    for number in range(args.connections):
        if args.sweep:
            senders = swept_senders(args.senders, args.first + number, args.step)
        else:
            offset = number * args.senders // max(1, args.connections)
            senders = timed_senders(args.senders, args.seed, offset)
        serial_base = (args.seed * 1000 + number) * 10_000_000

        def factory(senders: Iterator[int] = senders, base: int = serial_base) -> Connection:
            return Connection(senders, tally, base)

        _, protocol = await loop.create_connection(factory, args.host, args.port)
        connections.append(protocol)
    return connections


async def run(args: argparse.Namespace) -> dict[str, object]:
    tally = Tally()
    connections = await connect(args, tally)
    print("ready", flush=True)
    start_at = int(await asyncio.to_thread(sys.stdin.readline))
    await asyncio.sleep(max(0.0, (start_at - time.monotonic_ns()) / 1e9))
    cpu_before = time.process_time()
    started = time.perf_counter_ns()
    if not args.sweep:
        tally.measure_from = started + int(args.warmup * 1e9)
        tally.until = tally.measure_from + int(args.duration * 1e9)
    for connection in connections:
        connection.start()
    await asyncio.gather(*(connection.done for connection in connections))
    elapsed = (time.perf_counter_ns() - started) / 1e9
    return {
        "completed": tally.completed,
        "seconds": elapsed if args.sweep else args.duration,
        "wall_seconds": elapsed,
        "cpu_seconds": time.process_time() - cpu_before,
        "errors": tally.errors,
        "actions": dict(tally.actions),
        "latencies_ns": tally.latencies_ns,
    }


def use_uvloop() -> bool:
    try:
        uvloop = importlib.import_module("uvloop")
    except ImportError:
        return False
    uvloop.install()
    return True


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--connections", type=int, default=1)
    parser.add_argument("--senders", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--sweep", action="store_true", help="every sender once, then stop")
    parser.add_argument("--first", type=int, default=0, help="sweep: first sender")
    parser.add_argument("--step", type=int, default=1, help="sweep: sender stride")
    return parser.parse_args(argv)


def main() -> None:
    args = parse_args()
    uvloop = use_uvloop()
    result = asyncio.run(run(args))
    result["uvloop"] = uvloop
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
