"""The admin HTTP server on loopback, in its own thread, handing its work to the
running event loop: metrics, pool states, the Alertmanager bridge and Dovecot's
auth policy."""

from __future__ import annotations

import asyncio
import base64
import json
import re
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from postwarden.policy.load import load_policy
from postwarden.policyd.admin import DOVECOT_TIMEOUT, AdminServer
from postwarden.policyd.decide import SUSPENDED_FOR, Ban, Event, suspension_key
from postwarden.policyd.engine import Engine
from postwarden.policyd.events import EventDispatcher
from postwarden.policyd.metrics import Metrics
from postwarden.policyd.notify import Notification
from postwarden.policyd.pools import PoolRuntime
from postwarden.policyd.spam import SpamVerdict
from postwarden.policyd.stores import LocalStore
from postwarden.policyd.tokens import Tokens
from postwarden.policyd.view import compile_view
from tests.policyd.test_events import take_queued

WritePolicy = Callable[..., Path]
HOST = "mail.example.com"

POLICY = """\
server: {hostname: mail.example.com, postmaster: ops@example.net}
domains:
  example.com: {ip_pool: main}
users:
  alice@example.com: {}
abuse:
  bad_smtp_sessions: {auth_failures: 3, within: 10m, ban_for: 1h}
ip_pools:
  main:
    helo: out.example.com
    addresses:
      - {address: 203.0.113.10}
      - {address: 203.0.113.11, state: draining}
notifications:
  chat: {webhook: {url: "https://chat.example.net/hook"}}
  pager: {sms: {gateway: "https://sms.example.net/send", to: "+15555550100"}}
events:
  - {on: abuse.auth_failures, notify: [chat]}
"""


@dataclass
class Reply:
    status: int
    body: bytes
    content_type: str

    def json(self) -> Any:
        assert self.content_type == "application/json"
        return json.loads(self.body)


@dataclass
class Admin:
    server: AdminServer
    metrics: Metrics
    dispatcher: EventDispatcher
    pools: PoolRuntime
    engine: Engine
    changed: asyncio.Event
    events: list[Event] = field(default_factory=list)
    verdicts: list[SpamVerdict] = field(default_factory=list)
    pool_changes: int = 0

    async def request(
        self, method: str, path: str, body: bytes | None = None, token: str | None = "admin"
    ) -> Reply:
        """An HTTP request from another thread, as a client would make it: the loop
        stays free to serve the work the server hands it. ``token``: whose token it
        carries (see TOKENS), or none."""
        url = f"http://127.0.0.1:{self.server.port}{path}"
        return await asyncio.to_thread(_http, method, url, body, TOKENS.get(token or ""))

    async def post(self, path: str, payload: object, token: str | None = "admin") -> Reply:
        return await self.request("POST", path, json.dumps(payload).encode(), token)


TOKENS = {
    "admin": "admin-s3cret",
    "dovecot": "dovecot-s3cret",
    "alertmanager": "am-s3cret",
    "rspamd": "rspamd-s3cret",
}


def _http(method: str, url: str, body: bytes | None, token: str | None = None) -> Reply:
    request = urllib.request.Request(url, data=body, method=method)
    if body is not None:
        request.add_header("Content-Type", "application/json")
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return Reply(response.status, response.read(), response.headers["Content-Type"])
    except urllib.error.HTTPError as error:
        return Reply(error.code, error.read(), error.headers["Content-Type"])


@pytest.fixture
async def admin(write_policy: WritePolicy) -> AsyncIterator[Admin]:
    policy = load_policy(write_policy(POLICY)).policy
    loop = asyncio.get_running_loop()
    metrics = Metrics()
    dispatcher = EventDispatcher(policy, HOST)
    store = LocalStore()
    engine = Engine(compile_view(policy), store)
    changed = asyncio.Event()
    holder: dict[str, Admin] = {}

    def on_pool_change() -> None:
        holder["admin"].pool_changes += 1
        changed.set()

    def on_spam(verdict: SpamVerdict) -> None:
        holder["admin"].verdicts.append(verdict)

    server = AdminServer(
        "127.0.0.1:0",
        loop,
        metrics,
        lambda: holder["admin"].dispatcher,
        lambda: holder["admin"].pools,
        on_pool_change,
        engine.decide_auth,
        lambda: Tokens(dict(TOKENS)),
        lambda: store,
        on_spam,
        lambda: engine.view.logins,
    )
    state = Admin(server, metrics, dispatcher, PoolRuntime(policy, HOST), engine, changed)
    holder["admin"] = state

    def on_event(event: Event) -> None:
        state.events.append(event)
        dispatcher.raise_event(event)

    engine.on_event = on_event
    # serve_forever polls for shutdown every 0.5 s by default: stop sooner between tests
    server.thread = threading.Thread(
        target=server.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    server.start()
    yield state
    await asyncio.to_thread(server.stop)
    await store.close()


# ---------------------------------------------------------------- metrics, routes


async def test_metrics(admin: Admin) -> None:
    admin.metrics.events.labels("throttle.hit").inc(3)
    admin.metrics.notifications.labels("chat", "sent").inc()
    reply = await admin.request("GET", "/metrics")
    assert reply.status == 200
    assert reply.content_type.startswith("text/plain")
    lines = reply.body.decode().splitlines()
    assert 'postwarden_policyd_events_total{kind="throttle.hit"} 3.0' in lines
    assert 'postwarden_policyd_notifications_total{channel="chat",result="sent"} 1.0' in lines
    assert "# TYPE postwarden_policyd_decision_seconds histogram" in lines


async def test_unknown_routes(admin: Admin) -> None:
    for method, path in (("GET", "/"), ("GET", "/pools/x"), ("POST", "/metrics")):
        body = None if method == "GET" else b"{}"
        reply = await admin.request(method, path, body)
        assert reply.status == 404, path
        assert reply.json() == {"error": "not found"}


# ---------------------------------------------------------------- pools


async def test_get_pools(admin: Admin) -> None:
    reply = await admin.request("GET", "/pools")
    assert reply.status == 200
    assert reply.json() == {
        "203.0.113.10": {"pool": "main", "policy": "active", "state": "active"},
        "203.0.113.11": {"pool": "main", "policy": "draining", "state": "draining"},
    }


async def test_quarantine_an_address(admin: Admin) -> None:
    assert admin.pools.lookup("alice@example.com") == "pw_main_203_0_113_10"

    reply = await admin.post("/pools/203.0.113.10", {"state": "quarantined"})
    assert reply.status == 200
    assert reply.json() == {"pool": "main", "policy": "active", "state": "quarantined"}
    await asyncio.wait_for(admin.changed.wait(), 5)
    assert admin.pool_changes == 1
    assert admin.pools.overrides == {"203.0.113.10": "quarantined"}
    assert admin.pools.lookup("alice@example.com") == (
        "retry:4.7.0 pool main has no active outbound address"
    )
    listed = (await admin.request("GET", "/pools")).json()
    assert listed["203.0.113.10"]["state"] == "quarantined"

    reply = await admin.post("/pools/203.0.113.11", {"state": "active"})
    assert reply.json() == {"pool": "main", "policy": "draining", "state": "active"}
    assert admin.pools.lookup("alice@example.com") == "pw_main_203_0_113_11"


async def test_a_pool_change_reaches_a_replaced_runtime(admin: Admin) -> None:
    """After a reload the daemon has a new PoolRuntime: the server asks for it anew."""
    admin.pools = PoolRuntime(admin.pools.policy, HOST, dict(admin.pools.overrides))
    await admin.post("/pools/203.0.113.11", {"state": "quarantined"})
    assert admin.pools.overrides == {"203.0.113.11": "quarantined"}


@pytest.mark.parametrize(
    ("path", "body", "status", "error"),
    [
        ("/pools/192.0.2.1", b'{"state": "quarantined"}', 404, "192.0.2.1 is in no pool"),
        (
            "/pools/203.0.113.10",
            b'{"state": "paused"}',
            400,
            "state must be active, draining or quarantined",
        ),
        ("/pools/203.0.113.10", b"{}", 400, "state must be active, draining or quarantined"),
        ("/pools/203.0.113.10", b'{"state": quarantined}', 400, "a JSON object is expected"),
        ("/pools/203.0.113.10", b'["quarantined"]', 400, "a JSON object is expected"),
        ("/pools/203.0.113.10", b"\xff\xfe", 400, "a JSON object is expected"),
    ],
)
async def test_refused_pool_changes(
    admin: Admin, path: str, body: bytes, status: int, error: str
) -> None:
    reply = await admin.request("POST", path, body)
    assert reply.status == status
    assert reply.json() == {"error": error}
    await asyncio.sleep(0.05)
    assert admin.pools.overrides == {}
    assert admin.pool_changes == 0


# ---------------------------------------------------------------- alertmanager


ALERTS = {
    "version": "4",
    "status": "firing",
    "receiver": "postwarden",
    "groupKey": "{}:{}",
    "alerts": [
        {
            "status": "firing",
            "labels": {"alertname": "DiskFull", "event": "system.disk", "mountpoint": "/var"},
            "annotations": {"summary": "/var is 93% full"},
        },
        {
            "status": "resolved",
            "labels": {"alertname": "QueueLarge", "event": "queue.size"},
            "annotations": {"summary": "612 messages in the queue"},
        },
        {
            "status": "firing",
            "labels": {"alertname": "MemoryHigh"},
            "annotations": {"summary": "memory at 95%"},
        },
        "not an alert",
    ],
}


async def test_alertmanager_queues_each_firing_alert(admin: Admin) -> None:
    before = time.time()
    reply = await admin.post("/alertmanager/pager", ALERTS)
    assert reply.status == 200
    assert reply.json() == {"queued": 2}
    for _ in range(100):
        if admin.dispatcher.pending >= 2:
            break
        await asyncio.sleep(0.01)
    queued = take_queued(admin.dispatcher)
    assert [(channel, n.kind, n.subject, n.detail, n.host) for channel, n in queued] == [
        ("pager", "system.disk", "/var", "/var is 93% full", HOST),
        ("pager", "MemoryHigh", "MemoryHigh", "memory at 95%", HOST),
    ]
    assert all(before <= n.time <= time.time() for _, n in queued)


async def test_alertmanager_with_only_resolved_alerts(admin: Admin) -> None:
    resolved = {"status": "resolved", "alerts": [ALERTS["alerts"][1]]}
    reply = await admin.post("/alertmanager/chat", resolved)
    assert reply.json() == {"queued": 0}
    await asyncio.sleep(0.05)
    assert take_queued(admin.dispatcher) == []


async def test_alertmanager_unknown_channel(admin: Admin) -> None:
    reply = await admin.post("/alertmanager/nowhere", ALERTS)
    assert reply.status == 404
    assert reply.json() == {"error": "unknown channel 'nowhere'"}
    await asyncio.sleep(0.05)
    assert take_queued(admin.dispatcher) == []


# ---------------------------------------------------------------- dovecot


def dovecot(client: str, **extra: object) -> dict[str, object]:
    """The attributes Dovecot sends by default (auth_policy_request_attributes)."""
    return {
        "login": "alice@example.com",
        "pwhash": "3f2a",
        "remote": client,
        "device_id": "",
        "protocol": "imap",
        "session_id": "kF2nX4",
        **extra,
    }


async def test_dovecot_failed_logins_ban_the_client(admin: Admin) -> None:
    bad, good = "192.0.2.66", "192.0.2.67"
    allow = "/dovecot/?command=allow"
    report = "/dovecot/?command=report"

    assert (await admin.post(allow, dovecot(bad))).json() == {"status": 0, "msg": ""}
    failed = dovecot(bad, success=False, policy_reject=False, tried_password=True)
    for _ in range(2):
        assert (await admin.post(report, failed)).json() == {"status": 0, "msg": ""}
    # a successful login does not count
    succeeded = dovecot(bad, success=True, policy_reject=False, tried_password=True)
    assert (await admin.post(report, succeeded)).json() == {"status": 0, "msg": ""}
    assert (await admin.post(allow, dovecot(bad))).json() == {"status": 0, "msg": ""}
    assert admin.events == []

    reply = await admin.post(report, failed)
    assert reply.status == 200
    assert reply.json() == {"status": -1, "msg": "too many failed logins"}
    # the abuse report names the client and the login that was tried
    assert admin.events == [
        Event(
            "abuse.auth_failures",
            bad,
            "3 failed logins within 10m",
            client=bad,
            login="alice@example.com",
        )
    ]

    assert (await admin.post(allow, dovecot(bad))).json() == {
        "status": -1,
        "msg": "banned for abuse",
    }
    assert (await admin.post(allow, dovecot(good))).json() == {"status": 0, "msg": ""}

    # the event went to the configured channel
    ((channel, note),) = take_queued(admin.dispatcher)
    assert channel == "chat"
    assert note == Notification(
        "abuse.auth_failures", bad, "3 failed logins within 10m", HOST, note.time
    )


async def test_dovecot_requests_without_a_client_pass(admin: Admin) -> None:
    for command in ("allow", "report"):
        reply = await admin.post(f"/dovecot/?command={command}", {"success": False})
        assert reply.json() == {"status": 0, "msg": ""}
    reply = await admin.post("/dovecot/?command=other", dovecot("192.0.2.66", success=False))
    assert reply.json() == {"status": 0, "msg": ""}


async def test_dovecot_gets_an_answer_before_its_own_timeout(
    admin: Admin, write_policy: WritePolicy
) -> None:
    async def slow(command: str, request: dict[str, Any]) -> str:
        await asyncio.sleep(10)
        return "REJECT too late"

    server = AdminServer(
        "127.0.0.1:0",
        asyncio.get_running_loop(),
        admin.metrics,
        lambda: admin.dispatcher,
        lambda: admin.pools,
        lambda: None,
        slow,
        lambda: Tokens(dict(TOKENS)),
        LocalStore,
        lambda verdict: None,
    )
    server.start()
    try:
        started = time.perf_counter()
        reply = await asyncio.to_thread(
            _http,
            "POST",
            f"http://127.0.0.1:{server.port}/dovecot/?command=allow",
            json.dumps(dovecot("192.0.2.66")).encode(),
            TOKENS["dovecot"],
        )
        took = time.perf_counter() - started
    finally:
        await asyncio.to_thread(server.stop)
    assert DOVECOT_TIMEOUT <= took < 2.0
    assert reply.status == 503
    assert reply.json() == {"status": 0, "msg": "timeout"}


# ----------------------------------------------------------------- who may call


@pytest.mark.parametrize(
    ("method", "path", "caller"),
    [
        ("GET", "/pools", "admin"),
        ("POST", "/pools/203.0.113.10", "admin"),
        ("POST", "/dovecot/?command=allow", "dovecot"),
        ("POST", "/alertmanager/chat", "alertmanager"),
    ],
)
async def test_every_call_but_the_metrics_needs_its_callers_token(
    admin: Admin, method: str, path: str, caller: str
) -> None:
    body = json.dumps({"state": "quarantined", "alerts": []}).encode()
    sent = body if method == "POST" else None
    for token in (None, "wrong", *(t for t in TOKENS if t not in (caller, "admin"))):
        reply = await admin.request(method, path, sent, token)
        assert reply.status == 401, (token, reply)
        assert reply.json() == {"error": "a token is needed"}
    assert admin.pool_changes == 0
    assert (await admin.request(method, path, sent, caller)).status == 200
    # the operator's token opens every door
    assert (await admin.request(method, path, sent, "admin")).status == 200


async def test_the_metrics_need_no_token(admin: Admin) -> None:
    assert (await admin.request("GET", "/metrics", token=None)).status == 200


def test_tokens_are_read_from_their_files(tmp_path: Path) -> None:
    (tmp_path / "admin").write_text("admin-token\n")
    (tmp_path / "dovecot").write_text("")
    tokens = Tokens.read(str(tmp_path))
    assert tokens.by_scope == {"admin": "admin-token"}
    assert tokens.allows("Bearer admin-token", "dovecot")
    assert not tokens.allows("Bearer ", "dovecot")
    assert not tokens.allows("admin-token", "admin")
    assert not Tokens.read(str(tmp_path / "missing")).allows("Bearer admin-token", "admin")


async def test_slow_and_many_clients_cannot_hold_the_server(admin: Admin) -> None:
    """More connections than threads: the extra ones are closed at once. A client that
    trickles its request is cut off at the request's deadline. The server answers again."""
    from postwarden.policyd import admin as admin_module

    held = [
        socket.create_connection(("127.0.0.1", admin.server.port), timeout=10)
        for _ in range(admin_module.MAX_THREADS)
    ]
    extra = [
        socket.create_connection(("127.0.0.1", admin.server.port), timeout=2) for _ in range(3)
    ]
    assert await asyncio.to_thread(_closed_soon, extra) == len(extra)
    for connection in held:
        connection.close()

    trickle = socket.create_connection(("127.0.0.1", admin.server.port), timeout=10)
    started = time.perf_counter()
    cut_off = await asyncio.to_thread(_trickle, trickle, b"GET /metrics HTTP/1.1\r\n" * 10)
    assert cut_off
    assert time.perf_counter() - started < admin_module.REQUEST_DEADLINE + 2
    trickle.close()
    assert (await admin.request("GET", "/metrics", token=None)).status == 200


def _closed_soon(connections: list[socket.socket]) -> int:
    closed = 0
    for connection in connections:
        try:
            if connection.recv(100) == b"":
                closed += 1
        except ConnectionResetError:
            closed += 1
        except TimeoutError:
            pass
        connection.close()
    return closed


def _trickle(connection: socket.socket, data: bytes) -> bool:
    """Send a byte every 0.3 s (each read is quick); True once the server hangs up."""
    for byte in data:
        try:
            connection.sendall(bytes([byte]))
        except (BrokenPipeError, ConnectionResetError):
            return True
        time.sleep(0.3)
        connection.setblocking(False)
        try:
            if connection.recv(100) == b"":
                return True
        except BlockingIOError:
            pass
        except ConnectionResetError:
            return True
        finally:
            connection.setblocking(True)
    return False


# ------------------------------------------------------------------------ bans


async def test_bans_are_listed_counted_and_lifted(
    admin: Admin, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A guesser is banned by its failed logins; the operator sees the ban, in the
    metrics too, lifts it, and the client logs in again."""
    from postwarden.policyd import admin as admin_module

    monkeypatch.setattr(admin_module, "BANS_COUNT_EVERY", 0.0)
    for _ in range(3):
        await admin.post("/dovecot/?command=report", dovecot("192.0.2.66", success=False))
    listed = (await admin.request("GET", "/bans")).json()["bans"]
    assert [ban["client"] for ban in listed] == ["192.0.2.66"]
    assert 3500 < listed[0]["seconds_left"] <= 3600
    metrics = (await admin.request("GET", "/metrics", token=None)).body.decode()
    assert "postwarden_policyd_bans_active 1.0" in metrics
    refused = await admin.post("/dovecot/?command=allow", dovecot("192.0.2.66"), "dovecot")
    assert refused.json()["status"] == -1

    lifted = await admin.post("/bans/192.0.2.66", {"action": "lift"})
    assert lifted.json() == {"client": "192.0.2.66", "lifted": True}
    assert (await admin.request("GET", "/bans")).json() == {"bans": []}
    metrics = (await admin.request("GET", "/metrics", token=None)).body.decode()
    assert "postwarden_policyd_bans_active 0.0" in metrics
    allowed = await admin.post("/dovecot/?command=allow", dovecot("192.0.2.66"), "dovecot")
    assert allowed.json()["status"] == 0
    # lifting what is not banned, or what is no address, says so
    again = await admin.post("/bans/192.0.2.66", {"action": "lift"})
    assert again.json()["lifted"] is False
    assert (await admin.post("/bans/nobody", {"action": "lift"})).status == 400
    # an address is the same however it is written
    for _ in range(3):
        await admin.post("/dovecot/?command=report", dovecot("2001:db8::66", success=False))
    lifted = await admin.post("/bans/2001:DB8:0::66", {"action": "lift"})
    assert lifted.json() == {"client": "2001:db8::66", "lifted": True}
    assert (await admin.post("/bans/192.0.2.66", {"action": "lift"}, "dovecot")).status == 401


async def test_a_scrape_counts_the_bans_at_most_once_a_minute(admin: Admin) -> None:
    """Anyone on the host may scrape: the count, a scan of the keys on Redis, is kept."""
    scans = []
    store = admin.server.store()
    real = store.bans

    async def counted() -> dict[str, float]:
        scans.append(1)
        return await real()

    store.bans = counted  # type: ignore[method-assign]
    for _ in range(5):
        assert (await admin.request("GET", "/metrics", token=None)).status == 200
    assert len(scans) == 1


# ------------------------------------------------------- rspamd's verdicts


RSPAMD_VERDICT = {
    "action": "quarantine",
    "score": 10.88,
    "qid": "4ABC123DEF",
    "user": "alice@example.com",
    "from": "alice@example.com",
    "ip": "192.0.2.10",
    "rcpt": 2,
    "subject": "FREE MONEY",
    "symbols": ["BAYES_SPAM", "FUZZY_DENIED"],
}


async def _post_verdict(admin: Admin, payload: object, authorization: str | None) -> Reply:
    def post() -> Reply:
        request = urllib.request.Request(
            f"http://127.0.0.1:{admin.server.port}/rspamd",
            data=json.dumps(payload).encode(),
            method="POST",
        )
        request.add_header("Content-Type", "application/json")
        if authorization is not None:
            request.add_header("Authorization", authorization)
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return Reply(response.status, response.read(), response.headers["Content-Type"])
        except urllib.error.HTTPError as error:
            return Reply(error.code, error.read(), error.headers["Content-Type"])

    return await asyncio.to_thread(post)


async def _settled() -> None:
    for _ in range(20):  # the verdict is handed to the loop
        await asyncio.sleep(0.01)


async def test_rspamds_verdict_is_taken_with_its_token(admin: Admin) -> None:
    reply = await _post_verdict(admin, RSPAMD_VERDICT, f"Bearer {TOKENS['rspamd']}")
    assert (reply.status, reply.json()) == (200, {"recorded": True})
    await _settled()
    (verdict,) = admin.verdicts
    assert (verdict.action, verdict.outcome, verdict.score) == ("quarantine", "HOLD", 10.88)
    assert (verdict.login, verdict.queue_id, verdict.recipients) == (
        "alice@example.com",
        "4ABC123DEF",
        2,
    )
    assert verdict.symbols == ("BAYES_SPAM", "FUZZY_DENIED")


async def test_only_symbol_names_are_kept_from_a_verdict(admin: Admin) -> None:
    """The names land in the usage log and a report: nothing but rspamd's names, and
    no more than the rule sends."""
    hostile = ["R_A", "x\nEVIL", "<b>", 7, "B" * 65, "R_B", "R_C", "R_D", "R_E", "R_F"]
    reply = await _post_verdict(
        admin, {**RSPAMD_VERDICT, "symbols": hostile}, f"Bearer {TOKENS['rspamd']}"
    )
    assert reply.status == 200
    await _settled()
    (verdict,) = admin.verdicts
    assert verdict.symbols == ("R_A",)
    reply = await _post_verdict(
        admin, {**RSPAMD_VERDICT, "symbols": {"R_A": 1}}, f"Bearer {TOKENS['rspamd']}"
    )
    await _settled()
    assert admin.verdicts[1].symbols == ()


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "Bearer wrong",
        f"Bearer {TOKENS['dovecot']}",
        f"Bearer {TOKENS['alertmanager']}",
        # only bearer tokens: the right one as basic authentication is no token at all
        "Basic " + base64.b64encode(b"rspamd:" + TOKENS["rspamd"].encode()).decode(),
        "Basic !!not-base64!!",
    ],
    ids=["none", "wrong", "dovecots", "alertmanagers", "basic", "garbled"],
)
async def test_nobody_else_may_post_a_verdict(admin: Admin, authorization: str | None) -> None:
    reply = await _post_verdict(admin, RSPAMD_VERDICT, authorization)
    assert reply.status == 401
    await _settled()
    assert admin.verdicts == []


@pytest.mark.parametrize(
    "change",
    [
        {"action": "no action"},
        {"action": "soft reject"},
        {"score": "high"},
        {"score": float("inf")},
        {"score": True},
    ],
    ids=["no-action", "soft-reject", "text-score", "infinite-score", "boolean-score"],
)
async def test_a_verdict_that_does_not_act_is_not_recorded(
    admin: Admin, change: dict[str, object]
) -> None:
    payload = {**RSPAMD_VERDICT, **change}
    reply = await _post_verdict(admin, payload, f"Bearer {TOKENS['admin']}")
    assert (reply.status, reply.json()) == (200, {"recorded": False})
    await _settled()
    assert admin.verdicts == []


async def test_a_login_is_suspended_and_released_by_the_admin(
    admin: Admin, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Suspended: its logins are refused (Dovecot's question), it is listed with
    when, apart from the clients' bans and not counted with them; released, it logs in
    again. Only the admin may, and only for a user of the policy."""
    from postwarden.policyd import admin as admin_module

    monkeypatch.setattr(admin_module, "BANS_COUNT_EVERY", 0.0)
    login = {"login": "Alice@Example.com", "remote": "192.0.2.70"}
    assert (await admin.post("/dovecot/?command=allow", login, "dovecot")).json()["status"] == 0
    before = int(time.time())
    done = await admin.post("/suspensions/Alice@Example.com", {"action": "suspend"})
    assert done.json() == {"login": "alice@example.com", "suspended": True, "changed": True}
    again = await admin.post("/suspensions/alice@example.com", {"action": "suspend"})
    assert again.json()["changed"] is False
    refused = await admin.post("/dovecot/?command=allow", login, "dovecot")
    assert refused.json() == {"status": -1, "msg": "account suspended"}
    (listed,) = (await admin.request("GET", "/suspensions")).json()["suspensions"]
    assert listed["login"] == "alice@example.com"
    assert before - 1 <= listed["since"] <= time.time() + 1
    assert (await admin.request("GET", "/bans")).json() == {"bans": []}
    metrics = (await admin.request("GET", "/metrics", token=None)).body.decode()
    assert "postwarden_policyd_bans_active 0.0" in metrics

    released = await admin.post("/suspensions/alice@example.com", {"action": "release"})
    assert released.json() == {"login": "alice@example.com", "suspended": False, "changed": True}
    assert (await admin.request("GET", "/suspensions")).json() == {"suspensions": []}
    assert (await admin.post("/dovecot/?command=allow", login, "dovecot")).json()["status"] == 0

    unknown = await admin.post("/suspensions/mallory@example.com", {"action": "suspend"})
    assert unknown.status == 404
    # suspended again, it keeps the time of its first suspension
    await admin.post("/suspensions/alice@example.com", {"action": "suspend"})
    (first,) = (await admin.request("GET", "/suspensions")).json()["suspensions"]
    await asyncio.sleep(1.1)
    await admin.post("/suspensions/alice@example.com", {"action": "suspend"})
    assert (await admin.request("GET", "/suspensions")).json()["suspensions"] == [first]
    await admin.post("/suspensions/alice@example.com", {"action": "release"})
    # a login taken out of the policy since its suspension is released all the same
    await admin.engine.store.run([Ban(suspension_key("gone@example.com"), SUSPENDED_FOR)])
    gone = await admin.post("/suspensions/gone@example.com", {"action": "release"})
    assert gone.json() == {"login": "gone@example.com", "suspended": False, "changed": True}
    for token in ("dovecot", "rspamd", None):
        denied = await admin.post("/suspensions/alice@example.com", {"action": "suspend"}, token)
        assert denied.status == 401
    assert (await admin.request("GET", "/suspensions", token="dovecot")).status == 401
    assert (await admin.request("GET", "/suspensions")).json() == {"suspensions": []}


async def test_plan_shows_the_run_time_state_a_deploy_keeps(
    admin: Admin, write_policy: WritePolicy, tmp_path: Path
) -> None:
    """`plan --admin`: the suspended logins and the pool addresses whose state an
    operator set, against the planned policy (one that drops alice's address, here)."""
    from typer.testing import CliRunner

    from postwarden.cli import app

    await admin.post("/suspensions/alice@example.com", {"action": "suspend"})
    await admin.engine.store.run([Ban(suspension_key("gone@example.com"), SUSPENDED_FOR)])
    await admin.post("/pools/203.0.113.10", {"state": "quarantined"})
    planned = write_policy(POLICY.replace("  alice@example.com: {}\n", "  bob@example.com: {}\n"))
    token = tmp_path / "admin-token"
    token.write_text(TOKENS["admin"])
    env = {"POSTWARDEN_ADMIN_TOKEN_FILE": str(token)}
    address = f"127.0.0.1:{admin.server.port}"
    base = ["plan", str(planned), "--against", str(tmp_path / "empty"), "--admin", address]
    runner = CliRunner()
    shown = await asyncio.to_thread(runner.invoke, app, base, env=env)
    assert shown.exit_code == 0, shown.output
    tail = shown.stdout.split("\nPlan: ", 1)[1].splitlines()[1:]
    assert tail[0] == f"Run-time state at {address}, kept by this deploy:"
    dated = [re.sub(r" since \d{4}-\d\d-\d\d \d\d:\d\d UTC ", " since DATE ", t) for t in tail]
    gone = " (postwarden account release); the planned policy no longer has this user"
    assert sorted(dated[1:]) == [
        f"  alice@example.com is suspended since DATE{gone}",
        f"  gone@example.com is suspended since DATE{gone}",
        "  pool address 203.0.113.10 (main) is quarantined, the planned policy says active"
        " (postwarden pool)",
    ]
    as_json = await asyncio.to_thread(runner.invoke, app, [*base, "--format", "json"], env=env)
    runtime = json.loads(as_json.stdout)["runtime"]
    assert {s["login"] for s in runtime["suspended"]} == {"alice@example.com", "gone@example.com"}
    assert runtime["pools"] == [
        {"address": "203.0.113.10", "pool": "main", "state": "quarantined", "planned": "active"}
    ]
    markdown = await asyncio.to_thread(runner.invoke, app, [*base, "--format", "markdown"], env=env)
    assert f"**Run-time state at {address}, kept by this deploy:**" in markdown.stdout
    # nothing to keep: said so
    await admin.post("/suspensions/alice@example.com", {"action": "release"})
    await admin.post("/suspensions/gone@example.com", {"action": "release"})
    await admin.post("/pools/203.0.113.10", {"state": "active"})
    calm = await asyncio.to_thread(runner.invoke, app, base, env=env)
    assert calm.stdout.endswith(f"Run-time state at {address}, kept by this deploy: none.\n")
    # a daemon that is not there: a clear error, exit 1
    away = await asyncio.to_thread(runner.invoke, app, [*base[:-1], "127.0.0.1:9"], env=env)
    assert away.exit_code == 1
    assert "cannot reach postwarden-policyd at 127.0.0.1:9" in away.stderr
