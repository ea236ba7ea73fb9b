"""Events: deduplicated per kind and subject with the event's cooldown, notified in the
background so that a slow relay or webhook never delays an SMTP reply."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from postwarden.policy.models import Policy
from postwarden.policy.models.events import LargeMessageEvent, ListPostHeldEvent
from postwarden.policy.models.notifications import Channel
from postwarden.policyd.decide import Event
from postwarden.policyd.notify import DeliveryFailed, Notification, deliver

log = logging.getLogger("postwarden.policyd")

ATTEMPTS = 4
FIRST_BACKOFF = 1.0
QUEUE_LIMIT = 10_000
ATTEMPT_DEADLINE = 15.0
"""Seconds for one attempt as a whole: the senders' socket timeout is per read, so a
peer that drips a byte at a time would otherwise hold an attempt for minutes."""
PRUNE_EVERY = 60.0
MODERATORS = "moderators of "
"""The channel that emails a list's own moderators: this, then the list's address."""
RECOVERY = "recovery address of "
"""The channel that emails a user's recovery_email: this, then the login."""


def in_daemon_thread(call: Callable[[], None]) -> tuple[threading.Thread, asyncio.Future[None]]:
    """Start a blocking call in a thread of its own; the future settles with its outcome.
    asyncio.to_thread's executor threads are joined when the process exits, so a sender
    stuck on a slow socket after its deadline would hold up the exit; a daemon thread
    does not."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()

    def settle(error: BaseException | None) -> None:
        if done.done():  # the caller gave up on it
            return
        if error is None:
            done.set_result(None)
        else:
            done.set_exception(error)

    def target() -> None:
        error: BaseException | None = None
        try:
            call()
        except BaseException as raised:
            error = raised
        # a closed loop raises RuntimeError: nobody is waiting any more
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(settle, error)

    thread = threading.Thread(target=target, name="postwarden-notify", daemon=True)
    thread.start()
    return thread, done


@dataclass
class EventDispatcher:
    policy: Policy
    host: str
    clock: Callable[[], float] = time.time
    backoff: float = FIRST_BACKOFF
    on_sent: Callable[[str, str], None] = lambda channel, result: None
    limit: int = QUEUE_LIMIT
    """Notifications queued or being delivered, over all channels."""
    deadline: float = ATTEMPT_DEADLINE
    recovery: Mapping[str, str] = field(default_factory=dict)
    """By login: the user's recovery_email (the daemon's policy holds no users)."""
    _until: dict[tuple[str, str], float] = field(default_factory=dict)
    """(configured event, subject) -> end of its cooldown"""
    _keys: list[str] = field(default_factory=list)
    _keyed: Policy | None = None
    _pruned: float = 0.0
    _queues: dict[str, asyncio.Queue[Notification]] = field(default_factory=dict)
    _workers: dict[str, asyncio.Task[None]] = field(default_factory=dict)
    _pending: int = 0
    _idle: asyncio.Event = field(default_factory=asyncio.Event)
    _running: bool = False
    _threads: dict[str, threading.Thread] = field(default_factory=dict)
    """The last attempt's thread per channel."""

    def __post_init__(self) -> None:
        self._idle.set()

    @property
    def pending(self) -> int:
        """Notifications queued or being delivered."""
        return self._pending

    def _event_keys(self) -> list[str]:
        """One key per configured event, by its content rather than its index: the
        daemon swaps in a reloaded policy, where indexes may name other events, and
        an unchanged event keeps its cooldowns."""
        if self._keyed is not self.policy:
            seen: dict[str, int] = {}
            self._keys = []
            for configured in self.policy.events:
                text = configured.model_dump_json()
                seen[text] = seen.get(text, 0) + 1
                self._keys.append(f"{text}#{seen[text]}")
            self._keyed = self.policy
        return self._keys

    def raise_event(self, event: Event) -> None:
        """Queue notifications for every configured event of this kind whose cooldown
        for this subject has passed. Never blocks."""
        now = self.clock()
        self._prune(now)
        note = Notification(event.kind, event.subject, event.detail, self.host, now)
        for key, configured in zip(self._event_keys(), self.policy.events, strict=True):
            if configured.on != event.kind:
                continue
            # the daemon raises message.large above the lowest threshold of all
            if isinstance(configured, LargeMessageEvent) and event.size <= configured.above:
                continue
            until = self._until.get((key, event.subject))
            if until is not None and now < until:
                continue
            channels = list(configured.notify)
            if isinstance(configured, ListPostHeldEvent) and configured.notify_moderators:
                channels.append(MODERATORS + event.subject)
            queued = [self.queue(channel, note) for channel in channels]
            if any(queued):  # a dropped notification does not start the cooldown
                self._until[(key, event.subject)] = now + configured.cooldown
        if event.kind == "abuse.compromised_login":
            self._tell_the_user(event.subject, now)

    def _tell_the_user(self, login: str, now: float) -> None:
        """A suspended user hears of it at their recovery address, whether or not the
        administrators configured an event: they cannot log in to read it here."""
        if login not in self.recovery:
            return
        server = self.policy.server.hostname
        detail = (
            f"Your mail account {login} on {server} was suspended: it showed signs of "
            "someone else using your password (mail refused by a sending limit, held as "
            "spam, many messages alike, or logins from many places at once).\n\n"
            "Until your mail administrator releases it, it cannot log in or send mail; "
            "mail to you is still delivered. Contact them, and choose a new password "
            "you have not used anywhere else."
        )
        self.queue(
            RECOVERY + login, Notification("account suspended", login, detail, self.host, now)
        )

    def _prune(self, now: float) -> None:
        """Forget cooldowns that have passed: subjects are client IPs and senders,
        without end."""
        if abs(now - self._pruned) < PRUNE_EVERY:
            return
        self._pruned = now
        self._until = {key: until for key, until in self._until.items() if now < until}

    def queue(self, channel: str, note: Notification) -> bool:
        if self._pending >= self.limit:
            log.error("notification queue full: dropped %s for %s", note.kind, channel)
            self.on_sent(channel, "dropped")
            return False
        self._queues.setdefault(channel, asyncio.Queue()).put_nowait(note)
        self._pending += 1
        self._idle.clear()
        if self._running:
            self._start(channel)
        return True

    def _start(self, channel: str) -> None:
        if channel not in self._workers:
            self._workers[channel] = asyncio.create_task(self._work(channel))

    async def run(self) -> None:
        """Deliver queued notifications until cancelled: one worker per channel, so a
        slow channel holds up only its own notifications."""
        self._running = True
        try:
            for channel in list(self._queues):
                self._start(channel)
            await asyncio.Event().wait()  # until cancelled
        finally:
            self._running = False
            workers = list(self._workers.values())
            self._workers.clear()
            for worker in workers:
                worker.cancel()
            await asyncio.gather(*workers, return_exceptions=True)

    async def _work(self, channel: str) -> None:
        queue = self._queues[channel]
        while True:
            note = await queue.get()
            try:
                await self._deliver(channel, note)
            finally:
                self._pending -= 1
                if self._pending == 0:
                    self._idle.set()

    def _channel(self, name: str) -> Channel | None:
        """A configured channel; or, for a held list post, email to the list's moderators;
        or, for a suspended login, email to the user's recovery address."""
        if name.startswith(RECOVERY):
            address = self.recovery.get(name.removeprefix(RECOVERY))
            return Channel(email=[address]) if address else None
        if not name.startswith(MODERATORS):
            return self.policy.notifications.get(name)
        mailing_list = self.policy.lists.get(name.removeprefix(MODERATORS))
        if mailing_list is None or not mailing_list.moderators:
            return None
        return Channel(email=list(mailing_list.moderators))

    async def _deliver(self, name: str, note: Notification) -> None:
        channel = self._channel(name)
        if channel is None:
            return
        relay = self.policy.server.notification_relay
        sender = self.policy.server.notification_sender
        wait = self.backoff
        for attempt in range(1, ATTEMPTS + 1):
            try:
                # a thread past its deadline cannot be stopped: one per channel at most
                previous = self._threads.get(name)
                if previous is not None and previous.is_alive():
                    raise DeliveryFailed("an earlier attempt is still waiting for an answer")
                thread, done = in_daemon_thread(
                    functools.partial(deliver, channel, relay, sender, note)
                )
                self._threads[name] = thread
                await asyncio.wait_for(done, self.deadline)
            except Exception as error:  # one broken channel must not stop the others
                # the text or repr of an arbitrary exception may quote a token or password
                if isinstance(error, DeliveryFailed):
                    reason = str(error)
                elif isinstance(error, TimeoutError):
                    reason = f"no answer within {self.deadline:g} s"
                else:
                    reason = type(error).__name__
                log.warning("notify %s (attempt %d/%d): %s", name, attempt, ATTEMPTS, reason)
                if attempt < ATTEMPTS:
                    await asyncio.sleep(wait)
                    wait *= 2
                continue
            log.info("notified %s: %s", name, note.title)
            self.on_sent(name, "sent")
            return
        self.on_sent(name, "failed")

    async def drain(self, timeout: float) -> None:
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            log.warning("stopping with %d notifications unsent", self._pending)
