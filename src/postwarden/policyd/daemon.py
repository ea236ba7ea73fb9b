"""Run postwarden-policyd: load the policy, listen, reload on SIGHUP, drain on SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
from datetime import UTC, datetime
from pathlib import Path

from postwarden.policy.load import PolicyInvalid, load_policy
from postwarden.policyd.engine import Engine
from postwarden.policyd.server import PolicyServer
from postwarden.policyd.settings import PolicydSettings
from postwarden.policyd.stores import LocalStore, Store
from postwarden.policyd.view import PolicyView, compile_view

log = logging.getLogger("postwarden.policyd")


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


def load_view(settings: PolicydSettings) -> PolicyView:
    secrets = settings.secrets if Path(settings.secrets).exists() else None
    loaded = load_policy(settings.policy, secrets)
    return compile_view(loaded.policy)


def sd_notify(message: str) -> None:
    """Tell systemd (Type=notify) how we are; a no-op outside systemd."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    if address.startswith("@"):
        address = "\0" + address[1:]
    with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.sendto(message.encode(), address)


def make_store(settings: PolicydSettings) -> Store:
    return LocalStore(settings.sqlite_path)


async def serve(settings: PolicydSettings, ready: asyncio.Event | None = None) -> None:
    view = load_view(settings)
    engine = Engine(view, make_store(settings), settings.fail_mode)
    server = PolicyServer(engine.decide)
    for address in settings.listen:
        await server.listen(address)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def reload() -> None:
        try:
            engine.view = load_view(settings)
        except PolicyInvalid as invalid:
            for problem in invalid.problems:
                log.error("reload refused: %s", problem.text())
            log.error("reload refused: the policy in use stays")
            return
        log.info("reloaded the policy from %s", settings.policy)

    loop.add_signal_handler(signal.SIGHUP, reload)
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    sd_notify("READY=1")
    if ready is not None:
        ready.set()
    await stop.wait()
    sd_notify("STOPPING=1")
    log.info("stopping: draining %d connections", server.connections)
    await server.close()
    await engine.store.close()


def run(settings: PolicydSettings) -> None:
    setup_logging(settings.log_file)
    try:
        import uvloop  # type: ignore[import-not-found]

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(serve(settings))
