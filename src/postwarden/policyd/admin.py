"""The daemon's HTTP side, on loopback: Prometheus metrics, the Alertmanager bridge,
and the run-time state of the IP pools.

- ``GET /metrics``: Prometheus text format.
- ``POST /alertmanager/<channel>``: Alertmanager's webhook payload; each firing alert
  is notified to the channel with the daemon's own notifiers (webhook headers, SMS
  tokens stay out of Alertmanager's config).
- ``GET /pools``: every pool address with its state now.
- ``POST /pools/<address>`` with ``{"state": "quarantined"}``: change it at run time.
- ``POST /dovecot/?command=allow|report``: Dovecot's auth policy requests
  (auth_policy_server_url); the answer is ``{"status": 0}`` or ``{"status": -1}``.
- ``GET /bans``: every ban in force, on every host sharing the store.
- ``POST /bans/<client>`` with ``{"action": "lift"}``: end that client's ban now.
- ``GET /suspensions``: every suspended login, on every host sharing the store.
- ``POST /suspensions/<login>`` with ``{"action": "suspend"}`` or ``{"action":
  "release"}``: refuse that login's mail and logins from now on, or again accept them.
- ``POST /rspamd``: rspamd's verdict on an outbound message (our rule's
  JSON, spam.py); raises spam.outbound and corrects the usage log.

Everything but the metrics needs its caller's token (``tokens.py``): a local user
can neither quarantine an address, nor ban one through the Dovecot endpoint, nor
send notifications through the bridge.

A small threaded server from the standard library: these requests are rare, and
each hands its work to the event loop. Threads are bounded, and each request has a
deadline, so slow or many clients cannot exhaust the daemon.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import socket
import sys
import threading
import time
from collections.abc import Callable, Collection, Coroutine
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from postwarden.policyd.decide import (
    AUTH_REJECT,
    SUSPENDED_FOR,
    Ban,
    BanCheck,
    is_suspension,
    suspension_key,
)
from postwarden.policyd.events import EventDispatcher
from postwarden.policyd.metrics import Metrics
from postwarden.policyd.notify import Notification
from postwarden.policyd.pools import PoolRuntime
from postwarden.policyd.spam import SpamVerdict, parse_verdict
from postwarden.policyd.stores import Store, StoreUnavailable
from postwarden.policyd.tokens import Tokens

log = logging.getLogger("postwarden.policyd")
MAX_BODY = 1_000_000
DOVECOT_TIMEOUT = 1.5
"""Below Dovecot's own 2 s, so that it hears an answer rather than a timeout."""
MAX_THREADS = 32
"""Requests handled at once; a connection beyond them is closed at once."""
BANS_COUNT_EVERY = 60.0
"""Seconds between two counts of the bans in force, for the metrics."""
STORE_TIMEOUT = 3.0
"""How long the HTTP side waits for the counter store (a ban list, a lift)."""
REQUEST_DEADLINE = 5.0
"""A whole request, read and answered: a client sending a byte at a time is cut off."""


class _BoundedServer(ThreadingHTTPServer):
    daemon_threads = True
    # the kernel's queue of connections not yet accepted: socketserver's 5 drops the
    # handshakes of a burst, which then arrive late and out of order
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler]) -> None:
        super().__init__(address, handler)
        self.slots = threading.BoundedSemaphore(MAX_THREADS)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self.slots.acquire(blocking=False):
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        # a client that was too slow or went away is no error of ours; anything else is
        if not isinstance(sys.exc_info()[1], OSError):
            log.exception("the HTTP side failed on a request from %s", client_address)


class AdminServer:
    def __init__(
        self,
        address: str,
        loop: asyncio.AbstractEventLoop,
        metrics: Metrics,
        dispatcher: Callable[[], EventDispatcher],
        pools: Callable[[], PoolRuntime],
        on_pool_change: Callable[[], None],
        auth_policy: Callable[[str, dict[str, Any]], Coroutine[Any, Any, str]],
        tokens: Callable[[], Tokens],
        store: Callable[[], Store],
        on_spam: Callable[[SpamVerdict], None],
        known_logins: Callable[[], Collection[str]] = frozenset,
    ) -> None:
        host, _, port = address.rpartition(":")
        admin = self

        class Handler(BaseHTTPRequestHandler):
            timeout = REQUEST_DEADLINE

            def handle(self) -> None:
                # the socket timeout bounds each read; this bounds the whole request
                deadline = threading.Timer(REQUEST_DEADLINE, self._cut_off)
                deadline.start()
                try:
                    super().handle()
                finally:
                    deadline.cancel()

            def _cut_off(self) -> None:
                with contextlib.suppress(OSError):
                    self.connection.shutdown(socket.SHUT_RDWR)

            def do_GET(self) -> None:
                admin.get(self)

            def do_POST(self) -> None:
                admin.post(self)

            def log_message(self, format: str, *args: Any) -> None:
                return None

        self.loop = loop
        self.metrics = metrics
        self.dispatcher = dispatcher
        self.pools = pools
        self.on_pool_change = on_pool_change
        self.auth_policy = auth_policy
        self.tokens = tokens
        self.store = store
        self.on_spam = on_spam
        self.known_logins = known_logins
        self._bans_counted_at = -BANS_COUNT_EVERY
        self.server = _BoundedServer((host.strip("[]"), int(port)), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    # ---------------------------------------------------------------- routes

    def allowed(self, request: BaseHTTPRequestHandler, scope: str) -> bool:
        """Whether the request carries ``scope``'s token; answers 401 when not."""
        if self.tokens().allows(request.headers.get("Authorization"), scope):
            return True
        request.close_connection = True
        _json(request, HTTPStatus.UNAUTHORIZED, {"error": "a token is needed"})
        return False

    def on_loop(self, work: Coroutine[Any, Any, Any], timeout: float = STORE_TIMEOUT) -> Any:
        """Run ``work`` on the daemon's loop and wait for it; StoreUnavailable on a
        store that does not answer in time."""
        future = asyncio.run_coroutine_threadsafe(work, self.loop)
        try:
            return future.result(timeout=timeout)
        except TimeoutError:
            future.cancel()
            raise StoreUnavailable("the store did not answer in time") from None

    def get(self, request: BaseHTTPRequestHandler) -> None:
        if request.path == "/metrics":
            self._count_bans()
            _reply(
                request, HTTPStatus.OK, generate_latest(self.metrics.registry), CONTENT_TYPE_LATEST
            )
        elif request.path == "/pools":
            if self.allowed(request, "admin"):
                _json(request, HTTPStatus.OK, self.pools().addresses())
        elif request.path == "/bans":
            if self.allowed(request, "admin"):
                self._bans(request)
        elif request.path == "/suspensions":
            if self.allowed(request, "admin"):
                self._suspensions(request)
        else:
            _json(request, HTTPStatus.NOT_FOUND, {"error": "not found"})

    def post(self, request: BaseHTTPRequestHandler) -> None:
        url = urlsplit(request.path)
        if not self.allowed(request, _scope(url.path)):
            return
        body = _body(request)
        if body is None:
            _json(request, HTTPStatus.BAD_REQUEST, {"error": "a JSON object is expected"})
        elif url.path == "/dovecot/":
            command = parse_qs(url.query).get("command", [""])[0]
            self._dovecot(request, command, body)
        elif url.path == "/rspamd":
            self._rspamd(request, body)
        elif request.path.startswith("/alertmanager/"):
            self._alertmanager(request, request.path.removeprefix("/alertmanager/"), body)
        elif request.path.startswith("/pools/"):
            self._pool(request, request.path.removeprefix("/pools/"), body)
        elif request.path.startswith("/bans/") and body.get("action") == "lift":
            self._lift(request, request.path.removeprefix("/bans/"))
        elif request.path.startswith("/suspensions/") and body.get("action") in (
            "suspend",
            "release",
        ):
            login = unquote(url.path.removeprefix("/suspensions/"))
            self._suspend(request, login, body["action"] == "suspend")
        else:
            _json(request, HTTPStatus.NOT_FOUND, {"error": "not found"})

    def _alertmanager(
        self, request: BaseHTTPRequestHandler, channel: str, body: dict[str, Any]
    ) -> None:
        dispatcher = self.dispatcher()
        if channel not in dispatcher.policy.notifications:
            _json(request, HTTPStatus.NOT_FOUND, {"error": f"unknown channel {channel!r}"})
            return
        sent = 0
        alerts = body.get("alerts")
        for alert in alerts if isinstance(alerts, list) else []:
            if not isinstance(alert, dict) or alert.get("status") != "firing":
                continue
            labels = _mapping(alert.get("labels"))
            annotations = _mapping(alert.get("annotations"))
            note = Notification(
                str(labels.get("event", labels.get("alertname", "alert"))),
                str(labels.get("mountpoint") or labels.get("alertname", "")),
                str(annotations.get("summary", "")),
                dispatcher.host,
                time.time(),
            )
            self.loop.call_soon_threadsafe(dispatcher.queue, channel, note)
            sent += 1
        _json(request, HTTPStatus.OK, {"queued": sent})

    def _rspamd(self, request: BaseHTTPRequestHandler, body: dict[str, Any]) -> None:
        verdict = parse_verdict(body)
        if verdict is not None:
            self.loop.call_soon_threadsafe(self.on_spam, verdict)
        # 200 either way: rspamd logs anything else as an error, and would for every
        # message it has no verdict on for us
        _json(request, HTTPStatus.OK, {"recorded": verdict is not None})

    def _dovecot(self, request: BaseHTTPRequestHandler, command: str, body: dict[str, Any]) -> None:
        future = asyncio.run_coroutine_threadsafe(self.auth_policy(command, body), self.loop)
        try:
            action = future.result(timeout=DOVECOT_TIMEOUT)
        except TimeoutError:
            future.cancel()
            _json(request, HTTPStatus.SERVICE_UNAVAILABLE, {"status": 0, "msg": "timeout"})
            return
        rejected = action.startswith(AUTH_REJECT)
        _json(
            request,
            HTTPStatus.OK,
            {"status": -1 if rejected else 0, "msg": action.partition(" ")[2]},
        )

    def _count_bans(self) -> None:
        """The bans gauge, at most once a minute: on Redis, counting scans the keys, and
        a scrape (which anyone on the host may start) must not load the store."""
        now = time.monotonic()
        if now < self._bans_counted_at + BANS_COUNT_EVERY:
            return
        self._bans_counted_at = now
        with contextlib.suppress(StoreUnavailable):
            bans = self.on_loop(self.store().bans())
            self.metrics.bans.set(sum(1 for name in bans if not is_suspension(name)))

    def _stored_bans(self, request: BaseHTTPRequestHandler) -> dict[str, float] | None:
        """Every ban in the store (clients' and suspended logins'); None when the store
        cannot answer, which has then been said to the caller."""
        try:
            bans: dict[str, float] = self.on_loop(self.store().bans())
        except StoreUnavailable as error:
            _json(request, HTTPStatus.SERVICE_UNAVAILABLE, {"error": str(error)})
            return None
        return bans

    def _bans(self, request: BaseHTTPRequestHandler) -> None:
        bans = self._stored_bans(request)
        if bans is None:
            return
        now = time.time()
        _json(
            request,
            HTTPStatus.OK,
            {
                "bans": [
                    {"client": client, "until": int(until), "seconds_left": int(until - now)}
                    for client, until in sorted(bans.items(), key=lambda item: item[1])
                    if not is_suspension(client)
                ]
            },
        )

    def _suspensions(self, request: BaseHTTPRequestHandler) -> None:
        bans = self._stored_bans(request)
        if bans is None:
            return
        suspended = [
            {"login": name.removeprefix(suspension_key("")), "since": int(until - SUSPENDED_FOR)}
            for name, until in bans.items()
            if is_suspension(name)
        ]
        _json(
            request,
            HTTPStatus.OK,
            {"suspensions": sorted(suspended, key=lambda item: (item["since"], item["login"]))},
        )

    def _suspend(self, request: BaseHTTPRequestHandler, login: str, suspend: bool) -> None:
        login = login.lower()
        # a login no longer in the policy may still be released: its suspension would
        # otherwise wait for a new user of the same name
        if suspend and login not in self.known_logins():
            _json(request, HTTPStatus.NOT_FOUND, {"error": "not a user of the policy"})
            return
        name = suspension_key(login)
        try:
            if suspend:
                # suspended already: its time stays the first suspension's
                (already,) = self.on_loop(self.store().run([BanCheck(name)]))
                changed = (
                    not already and self.on_loop(self.store().run([Ban(name, SUSPENDED_FOR)]))[0]
                )
            else:
                changed = self.on_loop(self.store().lift(name))
        except StoreUnavailable as error:
            _json(request, HTTPStatus.SERVICE_UNAVAILABLE, {"error": str(error)})
            return
        if changed:
            log.warning("%s login=%s by=admin", "suspend" if suspend else "release", login)
        _json(
            request,
            HTTPStatus.OK,
            {"login": login, "suspended": suspend, "changed": bool(changed)},
        )

    def _lift(self, request: BaseHTTPRequestHandler, client: str) -> None:
        try:
            # the form bans are kept in: 2001:DB8::1 is 2001:db8::1
            client = str(ipaddress.ip_address(client))
        except ValueError:
            _json(request, HTTPStatus.BAD_REQUEST, {"error": "not an IP address"})
            return
        try:
            lifted: bool = self.on_loop(self.store().lift(client))
        except StoreUnavailable as error:
            _json(request, HTTPStatus.SERVICE_UNAVAILABLE, {"error": str(error)})
            return
        if lifted:
            log.warning("ban lifted client=%s", client)
        _json(request, HTTPStatus.OK, {"client": client, "lifted": lifted})

    def _pool(self, request: BaseHTTPRequestHandler, address: str, body: dict[str, Any]) -> None:
        state = body.get("state")
        pools = self.pools()
        try:
            pools.set_state(address, str(state))
        except KeyError:
            _json(request, HTTPStatus.NOT_FOUND, {"error": f"{address} is in no pool"})
            return
        except ValueError:
            _json(
                request,
                HTTPStatus.BAD_REQUEST,
                {"error": "state must be active, draining or quarantined"},
            )
            return
        log.warning("pool address %s is now %s", address, state)
        self.loop.call_soon_threadsafe(self.on_pool_change)
        _json(request, HTTPStatus.OK, pools.addresses()[address])


def _scope(path: str) -> str:
    """The caller a POST is meant for; the admin may make any."""
    if path == "/dovecot/":
        return "dovecot"
    if path.startswith("/alertmanager/"):
        return "alertmanager"
    if path == "/rspamd":
        return "rspamd"
    return "admin"


def _mapping(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _body(request: BaseHTTPRequestHandler) -> dict[str, Any] | None:
    try:
        length = int(request.headers.get("Content-Length") or 0)
    except ValueError:
        return None
    if not 0 <= length <= MAX_BODY:
        return None
    try:
        data = json.loads(request.rfile.read(length) or b"{}")
    except (ValueError, UnicodeDecodeError):
        return None
    return data if isinstance(data, dict) else None


def _json(request: BaseHTTPRequestHandler, status: HTTPStatus, payload: object) -> None:
    _reply(request, status, json.dumps(payload).encode(), "application/json")


def _reply(
    request: BaseHTTPRequestHandler, status: HTTPStatus, body: bytes, content_type: str
) -> None:
    request.send_response(status)
    request.send_header("Content-Type", content_type)
    request.send_header("Content-Length", str(len(body)))
    request.end_headers()
    request.wfile.write(body)
