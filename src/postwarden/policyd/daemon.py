"""Run postwarden-policyd: load the policy, listen, reload on SIGHUP, drain on SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import os
import signal
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from postwarden.policy.load import PolicyInvalid
from postwarden.policyd.admin import AdminServer
from postwarden.policyd.decide import Event, UsageRow, compromise_sign, sender_identity
from postwarden.policyd.dnsbl import BlocklistWatch, make_resolver
from postwarden.policyd.engine import Engine, Hold
from postwarden.policyd.events import EventDispatcher
from postwarden.policyd.metrics import Metrics
from postwarden.policyd.pools import PoolRuntime
from postwarden.policyd.resp import RespClient
from postwarden.policyd.runtime import LoaderFailed, Runtime, load_runtime_async
from postwarden.policyd.server import ERROR_ACTION, PolicyServer
from postwarden.policyd.settings import PolicydSettings
from postwarden.policyd.socketmap import SocketmapServer
from postwarden.policyd.spam import SpamVerdict
from postwarden.policyd.sqlite_files import checkpoint_forever
from postwarden.policyd.stores import WRITE_SLICE, LocalStore, Store
from postwarden.policyd.tokens import Tokens
from postwarden.policyd.usage import UsageLog
from postwarden.policyd.usage_stream import UsageStream
from postwarden.policyd.view import PolicyView

log = logging.getLogger("postwarden.policyd")
FLUSH_INTERVAL = 1.0
STREAM_TIMEOUT = 2.0
PROTOCOL_STATES = frozenset(
    ("CONNECT", "EHLO", "HELO", "MAIL", "RCPT", "DATA", "END-OF-MESSAGE", "VRFY", "ETRN")
)
"""Postfix's stages: the only values of the requests{state} label. The client sends
the state; each new value would otherwise be a new time series, kept forever."""


def state_label(request: dict[str, str]) -> str:
    state = request.get("protocol_state", "")
    return state if state in PROTOCOL_STATES else "other"


class _Formatter(logging.Formatter):
    """``2026-11-30T12:00:00+00:00 postwarden-policyd[4321]: message``: the form the
    fail2ban filter reads."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = datetime.fromtimestamp(record.created, tz=UTC).isoformat(timespec="seconds")
        return f"{stamp} postwarden-policyd[{record.process}]: {record.getMessage()}"


def setup_logging(log_file: str | None) -> None:
    handler: logging.Handler
    if log_file:
        Path(log_file).parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(log_file)
    else:
        handler = logging.StreamHandler()
    handler.setFormatter(_Formatter())
    root = logging.getLogger("postwarden")
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    root.propagate = False


def settle_memory() -> None:
    """Move what is loaded now (the policy, its lookups) out of the cyclic collector's
    sight: with a large policy, every full collection would walk it again and stall
    replies for tens of milliseconds."""
    gc.collect()
    gc.freeze()


def sd_notify(message: str) -> None:
    """Tell systemd (Type=notify) how we are; a no-op outside systemd."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    if address.startswith("@"):
        address = "\0" + address[1:]
    with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.sendto(message.encode(), address)


def make_store(settings: PolicydSettings, view: PolicyView) -> Store:
    if settings.store == "redis":
        from postwarden.policyd.redis_store import RedisStore

        return RedisStore(settings.redis_url or "redis://127.0.0.1:6379/0")
    return LocalStore(settings.sqlite_path, longest_window=view.longest_window())


def read_pool_state(path: str) -> dict[str, str]:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}


def write_pool_state(path: str, overrides: dict[str, str]) -> None:
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_suffix(".tmp")
    temporary.write_text(json.dumps(overrides, indent=2, sort_keys=True), encoding="utf-8")
    temporary.replace(target)


@dataclass
class Daemon:
    """Everything that lives as long as the process, and the parts a reload replaces."""

    settings: PolicydSettings
    metrics: Metrics
    engine: Engine
    dispatcher: EventDispatcher
    pools: PoolRuntime
    usage: UsageLog
    tokens: Tokens
    _signals: set[asyncio.Task[str]] = field(default_factory=set, init=False, repr=False)
    """Signs of compromise being counted apart from a request: kept until done."""

    @classmethod
    def start(cls, settings: PolicydSettings, runtime: Runtime) -> Daemon:
        metrics = Metrics()
        pools = PoolRuntime(
            runtime.policy,
            runtime.hostname,
            read_pool_state(settings.pool_state),
            runtime.view.user_pools,
        )
        dispatcher = EventDispatcher(
            runtime.policy,
            runtime.hostname,
            on_sent=lambda channel, result: metrics.notifications.labels(channel, result).inc(),
            recovery=runtime.view.recovery_emails,
        )
        engine = Engine(runtime.view, make_store(settings, runtime.view), settings.fail_mode)
        daemon = cls(
            settings,
            metrics,
            engine,
            dispatcher,
            pools,
            _usage_log(settings),
            Tokens.read(settings.tokens_dir),
        )
        engine.on_event = daemon.on_event
        engine.on_usage = daemon.on_usage
        engine.on_hold = daemon.on_hold
        return daemon

    def on_event(self, event: Event) -> None:
        self.metrics.events.labels(event.kind).inc()
        if event.kind == "throttle.hit":
            self.metrics.throttle_hits.labels(event.subject.rpartition("/")[2]).inc()
        log.info("event %s %s: %s", event.kind, event.subject, event.detail)
        # one per decision while the store is down: a flood, and no abuse to report
        if event.kind != "system.store":
            self.usage.add_event(event)
        self.dispatcher.raise_event(event)

    def on_usage(self, row: UsageRow) -> None:
        self.usage.add(row)

    def on_hold(self, hold: Hold) -> None:
        self.usage.add_hold(hold.queue_id, hold.reason, hold.login, hold.sender)

    def on_spam(self, verdict: SpamVerdict) -> None:
        """rspamd's verdict on an outbound message: the event, the metric, and the
        message's usage row corrected (the decision said it passed)."""
        self.metrics.outbound_spam.labels(verdict.action).inc()
        subject = (
            sender_identity(verdict.login, verdict.sender, verdict.client, self.engine.view)
            or verdict.sender
            or verdict.client
        )
        decision = {
            "REJECT": f"REJECT 5.7.1 spam (rspamd score {verdict.score:.2f})",
            "HOLD": f"HOLD spam (rspamd score {verdict.score:.2f})",
        }.get(verdict.outcome)
        self.usage.mark_spam(
            verdict.queue_id, decision, verdict.action, verdict.score, verdict.symbols
        )
        if verdict.outcome == "HOLD" and verdict.queue_id:
            self.usage.add_hold(
                verdict.queue_id,
                f"spam (rspamd score {verdict.score:.2f})",
                verdict.login,
                verdict.sender,
            )
        self.on_event(
            Event(
                "spam.outbound",
                subject,
                verdict.describe(),
                client=verdict.client,
                login=verdict.login,
            )
        )
        if verdict.outcome in ("REJECT", "HOLD") and verdict.login:
            # a sign of a stolen password (compromised_login), counted like the others
            suspect = self.engine.run(
                compromise_sign(verdict.login, "spam", self.engine.view),
                (verdict.client, verdict.login),
            )
            task = asyncio.get_running_loop().create_task(suspect)
            self._signals.add(task)
            task.add_done_callback(self._sign_counted)

    def _sign_counted(self, task: asyncio.Task[str]) -> None:
        self._signals.discard(task)
        if not task.cancelled() and task.exception() is not None:
            # a bug, not the store (the engine answers for that): said, not swallowed
            log.error("counting a sign of compromise failed: %r", task.exception())

    async def decide(self, request: dict[str, str]) -> str:
        started = time.perf_counter()
        action = await self.engine.decide(request)
        self._record(request, action, started)
        return action

    def decide_now(self, request: dict[str, str]) -> str | None:
        started = time.perf_counter()
        action = self.engine.decide_now(request)
        if action is not None:
            self._record(request, action, started)
        return action

    def _record(self, request: dict[str, str], action: str, started: float) -> None:
        stats = self.metrics.stats
        stats.record(
            state_label(request),
            action.partition(" ")[0],
            time.perf_counter() - started,
        )
        stats.store_errors = self.engine.store_errors

    async def reload(self) -> None:
        """Load the policy anew in a child process while replies go on; a policy that
        does not validate is refused and the one in use stays."""
        log.info("reloading the policy from %s", self.settings.policy)
        try:
            runtime = await load_runtime_async(self.settings)
        except PolicyInvalid as invalid:
            for problem in invalid.problems:
                log.error("reload refused: %s", problem.text())
            log.error("reload refused: the policy in use stays")
            return
        except (LoaderFailed, OSError) as error:
            log.error("reload refused: %s; the policy in use stays", error)
            return
        # tokens made anew on the host take effect with a reload too
        self.tokens = Tokens.read(self.settings.tokens_dir)
        self.engine.view = runtime.view
        if isinstance(self.engine.store, LocalStore):
            self.engine.store.longest_window = runtime.view.longest_window()
        self.dispatcher.policy = runtime.policy
        self.dispatcher.recovery = runtime.view.recovery_emails
        self.pools = PoolRuntime(
            runtime.policy, runtime.hostname, self.pools.overrides, runtime.view.user_pools
        )
        settle_memory()
        log.info("reloaded the policy from %s", self.settings.policy)

    def sending_addresses(self) -> list[str]:
        return [a for a, info in self.pools.addresses().items() if info["state"] != "quarantined"]

    def blocklisted(self, address: str, zone: str, answer: str) -> None:
        log.warning("pool address %s is listed on %s (%s): quarantined", address, zone, answer)
        self.pools.set_state(address, "quarantined")
        self.save_pools()
        self.on_event(Event("ip.blacklisted", address, f"listed on {zone} ({answer})"))

    async def watch_blocklists(self) -> None:
        if not self.settings.dnsbl_zones:
            return
        watch = BlocklistWatch(
            tuple(self.settings.dnsbl_zones),
            make_resolver(self.settings.dnsbl_nameserver),
            self.sending_addresses,
            self.blocklisted,
        )
        while True:
            try:
                await watch.check_all()
            except Exception:  # a bug here must not end the watch for good
                log.exception("blocklist check failed")
            await asyncio.sleep(self.settings.dnsbl_interval)

    def sqlite_files(self) -> list[str]:
        store = self.engine.store
        counters = store.file.path if isinstance(store, LocalStore) and store.file else None
        return [path for path in (counters, self.usage.path) if path]

    def transport_for(self, sender: str) -> str | None:
        # through the daemon, not a bound method: a reload replaces self.pools
        return self.pools.lookup(sender)

    def save_pools(self) -> None:
        write_pool_state(self.settings.pool_state, self.pools.overrides)

    async def flush_forever(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_INTERVAL)
            # in slices on the loop: see LocalStore for why not in a thread
            while self.usage.flush(limit=WRITE_SLICE) == WRITE_SLICE or self.usage.purging:
                await asyncio.sleep(0)
            if self.usage.mirror is not None:
                await self.usage.mirror.flush()


def _usage_log(settings: PolicydSettings) -> UsageLog:
    """The host's usage log; with the Redis store, mirrored to the stream where the
    MTAs sharing it meet (usage_stream.py)."""
    usage = UsageLog(settings.usage_log, settings.usage_retention)
    if settings.store == "redis" and settings.redis_url:
        usage.mirror = UsageStream(
            RespClient(settings.redis_url, timeout=STREAM_TIMEOUT),
            socket.gethostname(),
            settings.shared_usage_retention,
        )
    return usage


async def serve(settings: PolicydSettings, runtime: Runtime) -> None:
    daemon = Daemon.start(settings, runtime)
    del runtime  # the daemon holds what it uses; a reload must be able to free it
    settle_memory()
    # a decision that fails by a bug answers as the store being down would
    failed = "DUNNO" if settings.fail_mode == "open" else ERROR_ACTION
    server = PolicyServer(daemon.decide, daemon.decide_now, error_action=failed)
    for address in settings.listen:
        await server.listen(address)
    socketmap = SocketmapServer(daemon.transport_for)
    if settings.socketmap_listen:
        await socketmap.listen(settings.socketmap_listen)
    loop = asyncio.get_running_loop()
    admin = AdminServer(
        settings.metrics_listen,
        loop,
        daemon.metrics,
        lambda: daemon.dispatcher,
        lambda: daemon.pools,
        daemon.save_pools,
        daemon.engine.decide_auth,
        lambda: daemon.tokens,
        lambda: daemon.engine.store,
        daemon.on_spam,
        lambda: daemon.engine.view.logins,
    )
    admin.start()
    workers = [
        asyncio.create_task(daemon.dispatcher.run()),
        asyncio.create_task(daemon.flush_forever()),
        asyncio.create_task(daemon.watch_blocklists()),
        asyncio.create_task(checkpoint_forever(daemon.sqlite_files())),
    ]

    stop = asyncio.Event()
    reloads = Reloads(daemon.reload)
    loop.add_signal_handler(signal.SIGHUP, reloads.request)
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    sd_notify("READY=1")
    await stop.wait()

    sd_notify("STOPPING=1")
    log.info("stopping: draining %d connections", server.connections)
    await server.close()
    await socketmap.close()
    admin.stop()
    await daemon.dispatcher.drain(timeout=5.0)
    for worker in workers:
        worker.cancel()
    await asyncio.gather(*workers, return_exceptions=True)
    daemon.usage.close()
    if daemon.usage.mirror is not None:
        with contextlib.suppress(Exception):  # Redis away: what waited is lost, said so
            await asyncio.wait_for(daemon.usage.mirror.close(), STREAM_TIMEOUT)
    await daemon.engine.store.close()


class Reloads:
    """SIGHUP starts a reload; one that arrives during a reload starts another after it,
    so the policy loaded last is the file as it is now."""

    def __init__(self, reload: Callable[[], Awaitable[None]]) -> None:
        self.reload = reload
        self.task: asyncio.Task[None] | None = None
        self.again = False

    def request(self) -> None:
        if self.task is not None and not self.task.done():
            self.again = True
            return
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        await self.reload()
        while self.again:
            self.again = False
            await self.reload()


def run(settings: PolicydSettings, runtime: Runtime) -> None:
    """Serve with ``runtime``, the policy as loaded (and checked) by the caller."""
    setup_logging(settings.log_file)
    try:
        import uvloop
    except ImportError:  # a platform without it: the standard loop does the same, slower
        asyncio.run(serve(settings, runtime))
        return
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(serve(settings, runtime))
