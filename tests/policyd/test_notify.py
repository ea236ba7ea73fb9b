"""Notification senders against real endpoints on loopback: Postfix's smtp-sink as the
relay, small HTTP servers as webhook and SMS gateways. Every failure of one attempt
is a DeliveryFailed, never a crash of the sender."""

from __future__ import annotations

import asyncio
import contextlib
import email
import email.policy
import email.utils
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from postwarden.policy.load import PolicyInvalid, load_policy
from postwarden.policy.models import Policy
from postwarden.policy.models.server import NotificationRelay
from postwarden.policyd.decide import Event
from postwarden.policyd.events import EventDispatcher
from postwarden.policyd.notify import DeliveryFailed, Notification, deliver, post_json, send_email
from postwarden.policyd.runtime import build_runtime
from postwarden.policyd.settings import PolicydSettings
from tests.conftest import Sink, closed_port

WritePolicy = Callable[..., Path]
NOTE = Notification("throttle.hit", "alice@example.com/staff", "messages 200/h", "mx1.test", 1e9)


# ---------------------------------------------------------------- HTTP endpoints


@dataclass(frozen=True)
class Received:
    path: str
    headers: Message
    body: Any
    at: float
    """time.monotonic() on arrival"""


class HookServer:
    """An HTTP endpoint on loopback that records each POST and answers with the next
    status of its script; the last status repeats."""

    def __init__(
        self, statuses: tuple[int, ...] = (204,), delay: float = 0.0, location: str | None = None
    ) -> None:
        self.requests: list[Received] = []
        self.statuses = list(statuses)
        self.delay = delay
        self.location = location
        """Sent as Location: with every answer (a redirect)."""
        self.lock = threading.Lock()
        self.arrived = threading.Event()
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length))
                if hook.delay:
                    time.sleep(hook.delay)
                with hook.lock:
                    hook.requests.append(Received(self.path, self.headers, body, time.monotonic()))
                    status = hook.statuses.pop(0) if len(hook.statuses) > 1 else hook.statuses[0]
                hook.arrived.set()
                self.send_response(status)
                if hook.location is not None:
                    self.send_header("Location", hook.location)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def do_GET(self) -> None:  # what a followed 302 or 303 turns a POST into
                with hook.lock:
                    hook.requests.append(Received(self.path, self.headers, None, time.monotonic()))
                self.send_response(204)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{path}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class NotHttpServer:
    """Answers every connection like an SMTP server would: a URL pointing at the wrong
    port."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    @property
    def port(self) -> int:
        return int(self.sock.getsockname()[1])

    def _serve(self) -> None:
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            with client:
                client.recv(65536)
                client.sendall(b"220 mail.example.net ESMTP\r\n")

    def close(self) -> None:
        self.sock.close()


class DripServer:
    """A webhook that reads the request, then answers one byte at a time, each well
    within the senders' socket timeout, without end."""

    def __init__(self, interval: float = 0.2) -> None:
        self.interval = interval
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.clients: list[socket.socket] = []
        self.closed = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}{path}"

    def _serve(self) -> None:
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            self.clients.append(client)
            threading.Thread(target=self._drip, args=(client,), daemon=True).start()

    def _drip(self, client: socket.socket) -> None:
        answer = b"HTTP/1.1 200 OK\r\nX-Pad: " + b"a" * 1_000_000
        try:
            client.recv(65536)
            for byte in answer:
                if self.closed.wait(self.interval):
                    return
                client.sendall(bytes([byte]))
        except OSError:
            return

    def close(self) -> None:
        self.closed.set()
        self.sock.close()
        for client in self.clients:
            with contextlib.suppress(OSError):
                client.shutdown(socket.SHUT_RDWR)
            client.close()


@pytest.fixture
def hook() -> Iterator[HookServer]:
    server = HookServer()
    yield server
    server.close()


def email_policy(write_policy: WritePolicy, relay: str, secrets: str | None = None) -> Policy:
    return load_policy(
        write_policy(
            f"""\
server:
  hostname: mail.example.com
  postmaster: ops@example.net
  notification_relay: {relay}
domains:
  example.com: {{}}
notifications:
  admins: {{email: [ops@example.net, oncall@example.org]}}
events:
  - {{on: message.large, above: 1MiB, notify: [admins]}}
""",
            secrets,
        )
    ).policy


# ---------------------------------------------------------------------- email


def test_email_through_the_relay(write_policy: WritePolicy, sink: Sink) -> None:
    policy = email_policy(write_policy, f"{{host: 127.0.0.1, port: {sink.port}, starttls: false}}")
    assert policy.server.notification_sender == "ops@example.net"
    note = Notification(
        "message.large", "alice@example.com", "30000000 bytes from alice@example.com", "mx1", 1e9
    )

    deliver(
        policy.notifications["admins"],
        policy.server.notification_relay,
        policy.server.notification_sender,
        note,
    )

    (message,) = sink.messages()
    assert message["X-Mail-Args"] == "<ops@example.net>"
    assert message.get_all("X-Rcpt-Args") == ["<ops@example.net>", "<oncall@example.org>"]
    assert message["X-Helo-Args"] == "mx1"
    assert message["From"] == "ops@example.net"
    assert message["To"] == "ops@example.net, oncall@example.org"
    assert message["Subject"] == "[postwarden mx1] message.large: alice@example.com"
    assert message["Auto-Submitted"] == "auto-generated"
    assert message["Message-ID"].endswith("@mx1>")
    assert message["Date"] == email.utils.formatdate(1e9)
    body = message.get_body()
    assert body is not None
    # the dump ends with a blank line of smtp-sink's own
    assert body.get_content().rstrip("\n") == (
        "[postwarden mx1] message.large: alice@example.com\n\n30000000 bytes from alice@example.com"
    )


def test_email_sender_is_the_relay_login(write_policy: WritePolicy, sink: Sink) -> None:
    policy = email_policy(
        write_policy,
        f"{{host: 127.0.0.1, port: {sink.port}, starttls: false, username: alerts@example.com}}",
    )
    sender = policy.server.notification_sender
    assert sender == "alerts@example.com"
    relay = policy.server.notification_relay
    assert relay is not None
    assert relay.password is None  # no login: smtp-sink takes mail without one
    send_email(relay, sender, ["ops@example.net"], NOTE)
    (message,) = sink.messages()
    assert message["X-Mail-Args"] == "<alerts@example.com>"
    assert message["From"] == "alerts@example.com"
    assert message["Subject"] == "[postwarden mx1.test] throttle.hit: alice@example.com/staff"


def test_starttls_required_but_not_offered(sink: Sink) -> None:
    relay = NotificationRelay(host="127.0.0.1", port=sink.port, starttls=True)
    with pytest.raises(
        DeliveryFailed,
        match=rf"^email smtp://127\.0\.0\.1:{sink.port}: STARTTLS failed: SMTPNotSupportedError$",
    ):
        send_email(relay, "ops@example.net", ["ops@example.net"], NOTE)
    # nothing went out in the clear
    time.sleep(0.2)
    assert [p for p in sink.dumps.rglob("*") if p.is_file()] == []


def test_unreachable_relay() -> None:
    port = closed_port()
    relay = NotificationRelay(host="127.0.0.1", port=port, starttls=False)
    with pytest.raises(
        DeliveryFailed,
        match=rf"^email smtp://127\.0\.0\.1:{port}: connect failed: ConnectionRefusedError$",
    ):
        send_email(relay, "ops@example.net", ["ops@example.net"], NOTE)


def test_a_non_ascii_relay_password_is_not_quoted(write_policy: WritePolicy, sink: Sink) -> None:
    policy = email_policy(
        write_policy,
        f"{{host: 127.0.0.1, port: {sink.port}, starttls: false, username: alerts,"
        " password: !secret relay}",
        "relay: pässwörd-RELAYs3cret\n",
    )
    relay = policy.server.notification_relay
    assert relay is not None
    # smtplib encodes the password as ASCII: UnicodeEncodeError quotes it
    with pytest.raises(DeliveryFailed) as failed:
        send_email(relay, "ops@example.net", ["ops@example.net"], NOTE)
    assert str(failed.value) == (
        f"email smtp://127.0.0.1:{sink.port}: login failed: UnicodeEncodeError"
    )
    assert failed.value.__cause__ is None


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.53", "'::1'", "smtp.relay.example.net"])
def test_a_password_in_clear_only_over_loopback(write_policy: WritePolicy, host: str) -> None:
    relay = f"{{host: {host}, starttls: false, username: alerts, password: !secret relay}}"
    if host.startswith("smtp."):
        with pytest.raises(PolicyInvalid) as refused:
            email_policy(write_policy, relay, "relay: s3cret\n")
        (problem,) = refused.value.problems
        assert "a password would cross the network in clear" in problem.text()
    else:
        assert email_policy(write_policy, relay, "relay: s3cret\n").server.notification_relay


def test_email_channel_without_relay(write_policy: WritePolicy) -> None:
    policy = email_policy(write_policy, f"{{host: 127.0.0.1, port: {closed_port()}}}")
    with pytest.raises(DeliveryFailed, match=r"need server\.notification_relay"):
        deliver(policy.notifications["admins"], None, "ops@example.net", NOTE)


# ---------------------------------------------------------------------- HTTP


def test_post_json_sends_json(hook: HookServer) -> None:
    post_json(hook.url("/a/b"), {"k": [1, "two"]}, {"X-Extra": "yes"})
    (request,) = hook.requests
    assert request.path == "/a/b"
    assert request.body == {"k": [1, "two"]}
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["User-Agent"] == "postwarden"
    assert request.headers["X-Extra"] == "yes"


def test_post_json_to_a_closed_port() -> None:
    port = closed_port()
    with pytest.raises(DeliveryFailed) as failed:
        post_json(f"http://127.0.0.1:{port}/hook", {}, {})
    assert str(failed.value) == f"webhook http://127.0.0.1:{port}: ConnectionRefusedError"


@pytest.mark.parametrize("status", [400, 404, 429, 500, 503])
def test_post_json_http_errors(status: int) -> None:
    server = HookServer((status,))
    try:
        with pytest.raises(DeliveryFailed, match=f"^sms http://127.0.0.1:[0-9]+: HTTP {status}$"):
            post_json(server.url(), {"a": 1}, {}, "sms")
        assert len(server.requests) == 1
    finally:
        server.close()


@pytest.mark.parametrize("status", [200, 201, 202, 204])
def test_post_json_2xx_is_delivered(status: int) -> None:
    server = HookServer((status,))
    try:
        post_json(server.url(), {"a": 1}, {})
    finally:
        server.close()


def test_post_json_to_something_that_is_not_http() -> None:
    server = NotHttpServer()
    try:
        with pytest.raises(DeliveryFailed):
            post_json(f"http://127.0.0.1:{server.port}/hook", {}, {})
    finally:
        server.close()


def test_post_json_with_a_header_ending_in_a_newline(hook: HookServer) -> None:
    with pytest.raises(DeliveryFailed):
        post_json(hook.url(), {}, {"Authorization": "Bearer token\n"})


# a Slack-style hook: the path is the credential
SECRET_PATH = "/services/T0001/B0002/PATHs3cret?token=QUERYs3cret"


def test_a_failure_names_neither_the_path_nor_a_header(hook: HookServer) -> None:
    url = hook.url(SECRET_PATH)
    with pytest.raises(DeliveryFailed) as failed:
        post_json(url, {}, {"Authorization": "Bearer HEADERs3cret\n"})
    port = hook.server.server_address[1]
    assert str(failed.value) == f"webhook http://127.0.0.1:{port}: ValueError"
    assert failed.value.__cause__ is None
    assert failed.value.__suppress_context__

    hook.statuses = [500]
    with pytest.raises(DeliveryFailed) as failed:
        post_json(url, {}, {"Authorization": "Bearer HEADERs3cret"})
    assert str(failed.value) == f"webhook http://127.0.0.1:{port}: HTTP 500"


def test_a_failure_names_no_credentials_of_the_url() -> None:
    port = closed_port()
    with pytest.raises(DeliveryFailed) as failed:
        post_json(f"http://user:USERs3cret@127.0.0.1:{port}{SECRET_PATH}", {}, {}, "sms")
    # urllib takes the userinfo for part of the host name: the reason is a failed lookup
    assert str(failed.value).startswith(f"sms http://127.0.0.1:{port}: ")
    assert "s3cret" not in str(failed.value)


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_a_redirect_is_a_failure_and_is_not_followed(hook: HookServer, status: int) -> None:
    redirecting = HookServer((status,), location=hook.url("/elsewhere"))
    try:
        with pytest.raises(DeliveryFailed, match=f": HTTP {status}$"):
            post_json(redirecting.url(), {}, {"X-Token": "s3cret"})
        assert len(redirecting.requests) == 1
        assert hook.requests == []  # the token went nowhere else
    finally:
        redirecting.close()


def test_sms_and_webhook_channels(write_policy: WritePolicy, hook: HookServer) -> None:
    policy = load_policy(
        write_policy(
            f"""\
server: {{hostname: mail.example.com, postmaster: ops@example.net}}
domains:
  example.com: {{}}
notifications:
  pager: {{sms: {{gateway: "{hook.url("/sms")}", to: "+15555550100", token: !secret sms}}}}
  plain: {{sms: {{gateway: "{hook.url("/plain")}", to: "+15555550101"}}}}
  chat: {{webhook: {{url: "{hook.url("/chat")}", headers: {{X-Token: !secret hook, X-Id: "7"}}}}}}
events:
  - {{on: message.large, above: 1MiB, notify: [pager, plain, chat]}}
""",
            "sms: s3cret-sms\nhook: s3cret-hook\n",
        )
    ).policy
    for name in ("pager", "plain", "chat"):
        deliver(policy.notifications[name], None, "ops@example.net", NOTE)

    sms, plain, chat = hook.requests
    assert sms.path == "/sms"
    assert sms.body == {
        "to": "+15555550100",
        "message": "[postwarden mx1.test] throttle.hit: alice@example.com/staff",
    }
    assert sms.headers["Authorization"] == "Bearer s3cret-sms"
    assert plain.path == "/plain"
    assert plain.headers["Authorization"] is None
    assert chat.path == "/chat"
    assert chat.body == NOTE.as_json()
    assert chat.headers["X-Token"] == "s3cret-hook"
    assert chat.headers["X-Id"] == "7"


# ------------------------------------------------------------ a list's moderators

MODERATED = """\
server:
  hostname: mail.example.com
  postmaster: ops@example.net
  notification_relay: {{host: 127.0.0.1, port: {port}, starttls: false}}
domains:
  example.com: {{}}
users:
  alice@example.com: {{}}
  bob@example.com: {{}}
  carol@example.com: {{}}
lists:
  staff@example.com:
    members: [alice@example.com, bob@example.com]
    moderators: [alice@example.com, carol@example.com]
    posting: moderators
  open@example.com: {{members: [bob@example.com], posting: anyone}}
events:
  - {{on: list.post_held, notify_moderators: true}}
"""


async def test_a_held_list_post_is_mailed_to_that_lists_moderators(
    write_policy: WritePolicy, sink: Sink
) -> None:
    policy = load_policy(write_policy(MODERATED.format(port=sink.port))).policy
    results: list[tuple[str, str]] = []
    dispatcher = EventDispatcher(
        policy,
        "mx1",
        backoff=0.01,
        on_sent=lambda channel, result: results.append((channel, result)),
    )
    task = asyncio.create_task(dispatcher.run())
    try:
        dispatcher.raise_event(
            Event("list.post_held", "staff@example.com", "post from bob@example.com held")
        )
        # a list without moderators has nobody to tell
        dispatcher.raise_event(Event("list.post_held", "open@example.com", "post held"))
        await dispatcher.drain(10)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert results == [("moderators of staff@example.com", "sent")]
    (message,) = sink.messages()
    assert message.get_all("X-Rcpt-Args") == ["<alice@example.com>", "<carol@example.com>"]
    assert message["Subject"] == "[postwarden mx1] list.post_held: staff@example.com"
    assert "post from bob@example.com held" in message.get_content()


# ------------------------------------------------- a suspended user's recovery address

RECOVERY = """\
server:
  hostname: mail.example.com
  postmaster: ops@example.net
  notification_relay: {{host: 127.0.0.1, port: {port}, starttls: false}}
domains:
  example.com: {{}}
users:
  alice@example.com: {{recovery_email: alice.private@elsewhere.test}}
  bob@example.com: {{}}
abuse:
  internal_spammer: {{same_size_messages: 3, within: 10m}}
  compromised_login: {{within: 1h, signals: 1}}
"""


async def test_a_suspended_user_is_told_at_their_recovery_address(
    write_policy: WritePolicy, sink: Sink, tmp_path: Path
) -> None:
    """Told even with no event configured for the administrators; a user without a
    recovery address is not (their own mailbox is out of reach)."""
    # as the daemon has it: the policy without its users, and the view (runtime.py)
    runtime = build_runtime(
        PolicydSettings(
            policy=str(write_policy(RECOVERY.format(port=sink.port))),
            secrets=str(tmp_path / "no-secrets.yml"),
        )
    )
    assert runtime.policy.users == {}
    results: list[tuple[str, str]] = []
    dispatcher = EventDispatcher(
        runtime.policy,
        "mx1",
        backoff=0.01,
        on_sent=lambda channel, result: results.append((channel, result)),
        recovery=runtime.view.recovery_emails,
    )
    task = asyncio.create_task(dispatcher.run())
    try:
        dispatcher.raise_event(
            Event("abuse.compromised_login", "alice@example.com", "alice@example.com suspended")
        )
        dispatcher.raise_event(
            Event("abuse.compromised_login", "bob@example.com", "bob@example.com suspended")
        )
        await dispatcher.drain(10)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert results == [("recovery address of alice@example.com", "sent")]
    (message,) = sink.messages()
    assert message.get_all("X-Rcpt-Args") == ["<alice.private@elsewhere.test>"]
    assert message["Subject"] == "[postwarden mx1] account suspended: alice@example.com"
    text = message.get_content()
    assert "Your mail account alice@example.com on mail.example.com was suspended" in text
    assert "postwarden account release" not in text
