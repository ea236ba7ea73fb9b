"""The event dispatcher: cooldowns per configured event and subject, delivery in the
background with retries, and what happens when the queue or a channel misbehaves."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from postwarden.policy.load import load_policy
from postwarden.policy.models import Policy
from postwarden.policyd.decide import Event, EventKind
from postwarden.policyd.events import ATTEMPTS, EventDispatcher
from postwarden.policyd.notify import Notification
from tests.conftest import Sink, closed_port
from tests.policyd.test_notify import DripServer, HookServer, NotHttpServer

WritePolicy = Callable[..., Path]
HOST = "mx1.example.com"
START = 1_000_000.0

POLICY = """\
server: {{hostname: mail.example.com, postmaster: ops@example.net}}
domains:
  example.com: {{}}
users:
  alice@example.com: {{throttle: staff}}
throttles:
  staff: {{messages: 10/h}}
abuse:
  bad_smtp_sessions: {{invalid_recipients: 3, auth_failures: 3, within: 10m, ban_for: 1h}}
notifications:
  chat:
    webhook:
      url: "{chat}"
      headers: {{X-Token: !secret hook_token, X-Plain: plain-value}}
  pager:
    sms: {{gateway: "{sms}", to: "+15555550100", token: !secret sms_token}}
events:
  - {{on: throttle.hit, notify: [chat], cooldown: 10m}}
  - {{on: throttle.hit, notify: [pager], cooldown: 1h}}
  - {{on: abuse.bad_smtp_session, notify: [chat, pager], cooldown: 5m}}
"""
SECRETS = """\
hook_token: hook-s3cret
sms_token: sms-s3cret
"""

HIT = Event("throttle.hit", "alice@example.com/staff", "sending limit reached: messages 10")


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> float:
        return self.now


@dataclass
class Sent:
    results: list[tuple[str, str]] = field(default_factory=list)

    def __call__(self, channel: str, result: str) -> None:
        self.results.append((channel, result))


@pytest.fixture
def chat() -> Iterator[HookServer]:
    server = HookServer()
    yield server
    server.close()


@pytest.fixture
def sms() -> Iterator[HookServer]:
    server = HookServer()
    yield server
    server.close()


def make_policy(write_policy: WritePolicy, chat: str, sms: str, secrets: str = SECRETS) -> Policy:
    path = write_policy(POLICY.format(chat=chat, sms=sms), secrets)
    assert path.with_name("secrets.yml").exists()
    return load_policy(path).policy


@pytest.fixture
def policy(write_policy: WritePolicy, chat: HookServer, sms: HookServer) -> Policy:
    return make_policy(write_policy, chat.url("/chat"), sms.url("/send"))


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def sent() -> Sent:
    return Sent()


@pytest.fixture
def dispatcher(policy: Policy, clock: Clock, sent: Sent) -> EventDispatcher:
    return EventDispatcher(policy, HOST, clock=clock, backoff=0.01, on_sent=sent)


@contextlib.asynccontextmanager
async def running(dispatcher: EventDispatcher) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(dispatcher.run())
    try:
        yield task
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def take_queued(dispatcher: EventDispatcher) -> list[tuple[str, Notification]]:
    """Empty the queues, without delivering, and tell what was in them, by time and
    channel (each channel has a queue of its own)."""
    found = []
    for channel, queue in dispatcher._queues.items():
        while not queue.empty():
            found.append((channel, queue.get_nowait()))
            dispatcher._pending -= 1
    return sorted(found, key=lambda queued: (queued[1].time, queued[0]))


def note(event: Event, at: float) -> Notification:
    return Notification(event.kind, event.subject, event.detail, HOST, at)


# ---------------------------------------------------------------- cooldowns


def test_same_event_within_cooldown_is_queued_once(
    dispatcher: EventDispatcher, clock: Clock
) -> None:
    dispatcher.raise_event(HIT)
    clock.now += 60
    dispatcher.raise_event(HIT)
    # two configured throttle.hit events: each notifies its own channel, once
    assert take_queued(dispatcher) == [("chat", note(HIT, START)), ("pager", note(HIT, START))]


def test_another_subject_has_its_own_cooldown(dispatcher: EventDispatcher, clock: Clock) -> None:
    other = Event("throttle.hit", "bob@example.com/staff", "sending limit reached: messages 10")
    dispatcher.raise_event(HIT)
    clock.now += 1
    dispatcher.raise_event(other)
    dispatcher.raise_event(HIT)
    assert take_queued(dispatcher) == [
        ("chat", note(HIT, START)),
        ("pager", note(HIT, START)),
        ("chat", note(other, START + 1)),
        ("pager", note(other, START + 1)),
    ]


def test_each_configured_event_keeps_its_own_cooldown(
    dispatcher: EventDispatcher, clock: Clock
) -> None:
    dispatcher.raise_event(HIT)
    assert len(take_queued(dispatcher)) == 2

    clock.now = START + 599  # chat: 10m, pager: 1h
    dispatcher.raise_event(HIT)
    assert take_queued(dispatcher) == []

    clock.now = START + 600
    dispatcher.raise_event(HIT)
    assert take_queued(dispatcher) == [("chat", note(HIT, START + 600))]

    clock.now = START + 3599
    dispatcher.raise_event(HIT)
    assert take_queued(dispatcher) == [("chat", note(HIT, START + 3599))]

    clock.now = START + 3600
    dispatcher.raise_event(HIT)
    # chat's cooldown restarted at 3599; pager's 1h has just passed
    assert take_queued(dispatcher) == [("pager", note(HIT, START + 3600))]


def test_an_event_with_two_channels(dispatcher: EventDispatcher, clock: Clock) -> None:
    event = Event("abuse.bad_smtp_session", "192.0.2.9", "3 unknown recipients within 10m")
    dispatcher.raise_event(event)
    dispatcher.raise_event(event)
    assert take_queued(dispatcher) == [("chat", note(event, START)), ("pager", note(event, START))]
    clock.now += 300
    dispatcher.raise_event(event)
    assert [channel for channel, _ in take_queued(dispatcher)] == ["chat", "pager"]


@pytest.mark.parametrize(
    "kind", ["message.large", "list.post_held", "abuse.auth_failures", "abuse.internal_spammer"]
)
def test_kinds_without_a_configured_event_notify_nobody(
    dispatcher: EventDispatcher, sent: Sent, kind: EventKind
) -> None:
    dispatcher.raise_event(Event(kind, "subject", "detail"))
    assert take_queued(dispatcher) == []
    assert sent.results == []


def test_each_large_message_event_has_its_own_threshold(
    write_policy: WritePolicy, chat: HookServer, sms: HookServer
) -> None:
    text = POLICY + (
        "  - {{on: message.large, above: 1MiB, notify: [chat]}}\n"
        "  - {{on: message.large, above: 40MiB, notify: [pager]}}\n"
    )
    path = write_policy(text.format(chat=chat.url("/chat"), sms=sms.url("/send")), SECRETS)
    dispatcher = EventDispatcher(load_policy(path).policy, HOST, clock=Clock())

    def large(size: int) -> Event:
        return Event("message.large", f"sender-{size}", f"{size} bytes", size)

    dispatcher.raise_event(large(2 * 1024 * 1024))
    assert [channel for channel, _ in take_queued(dispatcher)] == ["chat"]
    dispatcher.raise_event(large(40 * 1024 * 1024))  # not above 40MiB: exactly at it
    assert [channel for channel, _ in take_queued(dispatcher)] == ["chat"]
    dispatcher.raise_event(large(40 * 1024 * 1024 + 1))
    assert [channel for channel, _ in take_queued(dispatcher)] == ["chat", "pager"]


# ---------------------------------------------------------------- delivery


async def test_delivery_happens_in_the_background(
    dispatcher: EventDispatcher, chat: HookServer, sms: HookServer, sent: Sent
) -> None:
    chat.delay = 0.3
    started = time.perf_counter()
    dispatcher.raise_event(HIT)
    assert time.perf_counter() - started < 0.05
    await asyncio.sleep(0.1)
    assert chat.requests == []
    assert sms.requests == []

    async with running(dispatcher):
        await dispatcher.drain(timeout=5)

    (posted,) = chat.requests
    assert posted.path == "/chat"
    assert posted.headers["Content-Type"] == "application/json"
    assert posted.body == {
        "event": "throttle.hit",
        "subject": "alice@example.com/staff",
        "detail": "sending limit reached: messages 10",
        "host": HOST,
        "time": START,
    }
    assert posted.headers["X-Token"] == "hook-s3cret"
    assert posted.headers["X-Plain"] == "plain-value"

    (text,) = sms.requests
    assert text.path == "/send"
    assert text.body == {
        "to": "+15555550100",
        "message": f"[postwarden {HOST}] throttle.hit: alice@example.com/staff",
    }
    assert text.headers["Authorization"] == "Bearer sms-s3cret"
    assert sorted(sent.results) == [("chat", "sent"), ("pager", "sent")]


async def test_a_failing_webhook_is_retried_with_backoff(
    dispatcher: EventDispatcher, chat: HookServer, sent: Sent
) -> None:
    chat.statuses = [500, 500, 204]
    dispatcher.queue("chat", note(HIT, START))
    async with running(dispatcher):
        await dispatcher.drain(timeout=5)
    assert [r.body["subject"] for r in chat.requests] == ["alice@example.com/staff"] * 3
    first, second, third = (r.at for r in chat.requests)
    assert second - first >= 0.01
    assert third - second >= 0.02  # the wait doubles
    assert sent.results == [("chat", "sent")]


async def test_a_webhook_that_always_fails_is_given_up(
    dispatcher: EventDispatcher, chat: HookServer, sms: HookServer, sent: Sent
) -> None:
    chat.statuses = [503]
    dispatcher.queue("chat", note(HIT, START))
    dispatcher.queue("pager", note(HIT, START))
    async with running(dispatcher):
        await dispatcher.drain(timeout=5)
    assert ATTEMPTS == 4
    assert len(chat.requests) == ATTEMPTS
    assert len(sms.requests) == 1
    assert sent.results == [("pager", "sent"), ("chat", "failed")]  # pager did not wait


async def test_an_unreachable_gateway_fails_and_the_next_one_is_sent(
    write_policy: WritePolicy, chat: HookServer, clock: Clock, sent: Sent
) -> None:
    closed = f"http://127.0.0.1:{closed_port()}/send"
    policy = make_policy(write_policy, chat.url("/chat"), closed)
    dispatcher = EventDispatcher(policy, HOST, clock=clock, backoff=0.01, on_sent=sent)
    dispatcher.raise_event(HIT)
    async with running(dispatcher):
        await dispatcher.drain(timeout=5)
    assert len(chat.requests) == 1
    assert sorted(sent.results) == [("chat", "sent"), ("pager", "failed")]


async def test_a_full_queue_drops(policy: Policy, clock: Clock, sent: Sent) -> None:
    dispatcher = EventDispatcher(policy, HOST, clock=clock, on_sent=sent, limit=1)
    dispatcher.raise_event(HIT)
    assert sent.results == [("pager", "dropped")]
    assert take_queued(dispatcher) == [("chat", note(HIT, START))]
    # the limit is over all channels, and only what is pending counts
    dispatcher.queue("pager", note(HIT, START))
    assert not dispatcher.queue("chat", note(HIT, START))
    assert take_queued(dispatcher) == [("pager", note(HIT, START))]
    assert dispatcher.queue("chat", note(HIT, START))


async def test_drain_waits_for_every_queued_delivery(
    dispatcher: EventDispatcher, chat: HookServer, sent: Sent
) -> None:
    chat.delay = 0.1
    for index in range(3):
        dispatcher.queue("chat", note(Event("throttle.hit", f"s{index}", "d"), START))
    async with running(dispatcher):
        started = time.perf_counter()
        await dispatcher.drain(timeout=5)
        assert time.perf_counter() - started >= 0.3
        assert [r.body["subject"] for r in chat.requests] == ["s0", "s1", "s2"]
        assert sent.results == [("chat", "sent")] * 3


async def test_drain_gives_up_after_its_timeout(
    dispatcher: EventDispatcher, caplog: pytest.LogCaptureFixture
) -> None:
    dispatcher.queue("chat", note(HIT, START))
    started = time.perf_counter()
    with caplog.at_level(logging.WARNING, logger="postwarden.policyd"):
        await dispatcher.drain(timeout=0.2)  # no worker: nothing is delivered
    assert 0.2 <= time.perf_counter() - started < 2
    assert "stopping with 1 notifications unsent" in caplog.text


async def test_a_channel_gone_after_a_reload_is_skipped(
    dispatcher: EventDispatcher, chat: HookServer, sent: Sent
) -> None:
    dispatcher.queue("removed", note(HIT, START))
    dispatcher.queue("chat", note(HIT, START))
    async with running(dispatcher):
        await dispatcher.drain(timeout=5)
    assert len(chat.requests) == 1
    assert sent.results == [("chat", "sent")]


async def test_one_broken_channel_does_not_stop_the_worker(
    write_policy: WritePolicy, chat: HookServer, sent: Sent
) -> None:
    not_http = NotHttpServer()
    try:
        policy = make_policy(write_policy, chat.url("/chat"), f"http://127.0.0.1:{not_http.port}/")
        dispatcher = EventDispatcher(policy, HOST, backoff=0.01, on_sent=sent)
        dispatcher.queue("pager", note(HIT, START))
        dispatcher.queue("chat", note(HIT, START))
        async with running(dispatcher) as task:
            await dispatcher.drain(timeout=2)
            assert not task.done()
        assert len(chat.requests) == 1
        assert sent.results == [("chat", "sent"), ("pager", "failed")]
    finally:
        not_http.close()


# ---------------------------------------------------------------- secrets in the log

LEAKY_POLICY = """\
server:
  hostname: mail.example.com
  postmaster: ops@example.net
  notification_relay:
    host: 127.0.0.1
    port: {relay_port}
    starttls: false
    username: alerts
    password: !secret relay_password
domains:
  example.com: {{}}
notifications:
  admins: {{email: [ops@example.net]}}
  chat:
    webhook:
      url: "{chat}/services/T0001/B0002/PATHs3cret?token=QUERYs3cret"
      headers: {{Authorization: !secret hook_token}}
events:
  - {{on: throttle.hit, notify: [admins, chat]}}
"""
# the relay password is not ASCII
LEAKY_SECRETS = """\
relay_password: pässwörd-RELAYs3cret
hook_token: Bearer HEADERs3cret
"""


async def test_the_log_never_shows_a_secret(
    write_policy: WritePolicy,
    sink: Sink,
    sent: Sent,
    caplog: pytest.LogCaptureFixture,
) -> None:
    chat_url = f"http://127.0.0.1:{closed_port()}"
    path = write_policy(LEAKY_POLICY.format(relay_port=sink.port, chat=chat_url), LEAKY_SECRETS)
    dispatcher = EventDispatcher(load_policy(path).policy, HOST, backoff=0.01, on_sent=sent)
    with caplog.at_level(logging.DEBUG):
        dispatcher.raise_event(HIT)
        async with running(dispatcher):
            await dispatcher.drain(timeout=5)
    assert sorted(sent.results) == [("admins", "failed"), ("chat", "failed")]
    assert f"notify admins (attempt 1/{ATTEMPTS}): email smtp://127.0.0.1:" in caplog.text
    assert f"notify chat (attempt 1/{ATTEMPTS}): webhook {chat_url}: Connection" in caplog.text
    assert "s3cret" not in caplog.text
    assert "services" not in caplog.text


async def test_an_unexpected_exception_is_logged_by_its_class_only(
    dispatcher: EventDispatcher,
    sent: Sent,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def deliver(*args: object) -> None:
        raise RuntimeError("Bearer s3cret is not accepted")

    monkeypatch.setattr("postwarden.policyd.events.deliver", deliver)
    dispatcher.queue("chat", note(HIT, START))
    with caplog.at_level(logging.WARNING, logger="postwarden.policyd"):
        async with running(dispatcher):
            await dispatcher.drain(timeout=5)
    assert f"notify chat (attempt {ATTEMPTS}/{ATTEMPTS}): RuntimeError" in caplog.text
    assert "s3cret" not in caplog.text
    assert sent.results == [("chat", "failed")]


# ---------------------------------------------------------------- slow channels


async def test_a_slow_channel_has_a_deadline_and_holds_up_no_other(
    write_policy: WritePolicy, sms: HookServer, sent: Sent, caplog: pytest.LogCaptureFixture
) -> None:
    drip = DripServer(interval=0.05)  # each read well within the socket timeout
    earlier = [t for t in threading.enumerate() if t.name == "postwarden-notify"]
    try:
        policy = make_policy(write_policy, drip.url("/chat"), sms.url("/send"))
        dispatcher = EventDispatcher(policy, HOST, backoff=0.01, on_sent=sent, deadline=0.3)
        dispatcher.queue("chat", note(HIT, START))
        dispatcher.queue("pager", note(HIT, START))
        with caplog.at_level(logging.WARNING, logger="postwarden.policyd"):
            async with running(dispatcher):
                started = time.perf_counter()
                await asyncio.wait_for(asyncio.to_thread(sms.arrived.wait, 5), 6)
                assert time.perf_counter() - started < 1  # not after chat's attempts
                await dispatcher.drain(timeout=5)
                took = time.perf_counter() - started
                # the first attempt's thread is still reading; no more were started
                stuck = [t for t in threading.enumerate() if t.name == "postwarden-notify"]
                assert 1 <= len(stuck) <= len(earlier) + 1
    finally:
        drip.close()
    assert sent.results == [("pager", "sent"), ("chat", "failed")]
    assert 0.3 <= took < 2
    assert f"notify chat (attempt 1/{ATTEMPTS}): no answer within 0.3 s" in caplog.text
    assert (
        f"notify chat (attempt {ATTEMPTS}/{ATTEMPTS}): an earlier attempt is still waiting"
        in caplog.text
    )


EXIT_SCRIPT = """\
import asyncio, sys, time
from postwarden.policy.load import load_policy
from postwarden.policyd.events import EventDispatcher
from postwarden.policyd.notify import Notification

async def main():
    policy = load_policy(sys.argv[1]).policy
    dispatcher = EventDispatcher(policy, "mx1", backoff=0.01, deadline=0.2)
    dispatcher.queue("chat", Notification("throttle.hit", "s", "d", "mx1", 1e9))
    task = asyncio.create_task(dispatcher.run())
    await dispatcher.drain(timeout=0.1)  # gives up: the daemon's way to stop
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)

started = time.monotonic()
asyncio.run(main())
print(f"{time.monotonic() - started:.1f}", flush=True)
"""


def test_a_sender_stuck_on_a_slow_socket_does_not_keep_the_process_alive(
    write_policy: WritePolicy, sms: HookServer
) -> None:
    drip = DripServer(interval=0.05)
    try:
        path = write_policy(POLICY.format(chat=drip.url("/chat"), sms=sms.url("/send")), SECRETS)
        started = time.monotonic()
        done = subprocess.run(
            [sys.executable, "-c", EXIT_SCRIPT, str(path)],
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        )
        took = time.monotonic() - started
    finally:
        drip.close()
    assert done.returncode == 0, done.stderr
    assert took < 5, done.stdout  # asyncio.to_thread's executor would wait for the thread


# ---------------------------------------------------------------- the cooldown table


def test_passed_cooldowns_are_forgotten(dispatcher: EventDispatcher, clock: Clock) -> None:
    for index in range(1000):
        dispatcher.raise_event(Event("throttle.hit", f"sender{index}/staff", "limit"))
    take_queued(dispatcher)
    assert len(dispatcher._until) == 2000  # chat's 10m and pager's 1h, per subject

    clock.now = START + 601  # chat's cooldowns have passed, pager's have not
    dispatcher.raise_event(HIT)
    assert len(dispatcher._until) == 1000 + 2
    clock.now = START + 3601
    dispatcher.raise_event(HIT)
    assert len(dispatcher._until) == 2  # HIT's pager, and its chat started again
    assert take_queued(dispatcher) == [
        ("chat", note(HIT, START + 601)),
        ("pager", note(HIT, START + 601)),
        ("chat", note(HIT, START + 3601)),
    ]


def test_a_reload_keeps_each_cooldown_with_its_own_event(
    write_policy: WritePolicy, chat: HookServer, sms: HookServer, clock: Clock
) -> None:
    before = (
        POLICY.split("events:\n", maxsplit=1)[0]
        + "events:\n  - {{on: throttle.hit, notify: [chat]}}\n"
    )
    dispatcher = EventDispatcher(
        load_policy(write_policy(before.format(chat=chat.url(), sms=sms.url()), SECRETS)).policy,
        HOST,
        clock=clock,
    )
    dispatcher.raise_event(HIT)
    assert take_queued(dispatcher) == [("chat", note(HIT, START))]

    # the reloaded policy has a new event in front: the chat event is now the second
    after = before.replace("events:\n", "events:\n  - {{on: throttle.hit, notify: [pager]}}\n")
    text = after.format(chat=chat.url(), sms=sms.url())
    dispatcher.policy = load_policy(write_policy(text, SECRETS)).policy
    clock.now += 60
    dispatcher.raise_event(HIT)
    assert take_queued(dispatcher) == [("pager", note(HIT, START + 60))]
