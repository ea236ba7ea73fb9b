"""Events: deduplicated per kind and subject with the event's cooldown, notified in the
background so that a slow relay or webhook never delays an SMTP reply."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from postwarden.policy.models import Policy
from postwarden.policy.models.events import LargeMessageEvent
from postwarden.policyd.decide import Event
from postwarden.policyd.notify import DeliveryFailed, Notification, deliver

log = logging.getLogger("postwarden.policyd")

ATTEMPTS = 4
FIRST_BACKOFF = 1.0
QUEUE_LIMIT = 10_000


@dataclass(frozen=True)
class Delivery:
    channel: str
    note: Notification


@dataclass
class EventDispatcher:
    policy: Policy
    host: str
    clock: Callable[[], float] = time.time
    backoff: float = FIRST_BACKOFF
    on_sent: Callable[[str, str], None] = lambda channel, result: None
    _last: dict[tuple[int, str], float] = field(default_factory=dict)
    _queue: asyncio.Queue[Delivery] = field(default_factory=lambda: asyncio.Queue(QUEUE_LIMIT))

    def raise_event(self, event: Event) -> None:
        """Queue notifications for every configured event of this kind whose cooldown
        for this subject has passed. Never blocks."""
        now = self.clock()
        note = Notification(event.kind, event.subject, event.detail, self.host, now)
        for index, configured in enumerate(self.policy.events):
            if configured.on != event.kind:
                continue
            # the daemon raises message.large above the lowest threshold of all
            if isinstance(configured, LargeMessageEvent) and event.size <= configured.above:
                continue
            key = (index, event.subject)
            last = self._last.get(key)
            if last is not None and now - last < configured.cooldown:
                continue
            queued = [self.queue(channel, note) for channel in configured.notify]
            if any(queued):  # a dropped notification does not start the cooldown
                self._last[key] = now

    def queue(self, channel: str, note: Notification) -> bool:
        try:
            self._queue.put_nowait(Delivery(channel, note))
        except asyncio.QueueFull:
            log.error("notification queue full: dropped %s for %s", note.kind, channel)
            self.on_sent(channel, "dropped")
            return False
        return True

    async def run(self) -> None:
        """Deliver queued notifications, one at a time, retrying with backoff."""
        while True:
            delivery = await self._queue.get()
            await self._deliver(delivery)
            self._queue.task_done()

    async def _deliver(self, delivery: Delivery) -> None:
        channel = self.policy.notifications.get(delivery.channel)
        if channel is None:
            return
        relay = self.policy.server.notification_relay
        sender = self.policy.server.notification_sender
        wait = self.backoff
        for attempt in range(1, ATTEMPTS + 1):
            try:
                await asyncio.to_thread(deliver, channel, relay, sender, delivery.note)
            except Exception as error:  # one broken channel must not stop the others
                reason = error if isinstance(error, DeliveryFailed) else repr(error)
                log.warning(
                    "notify %s (attempt %d/%d): %s", delivery.channel, attempt, ATTEMPTS, reason
                )
                if attempt < ATTEMPTS:
                    await asyncio.sleep(wait)
                    wait *= 2
                continue
            log.info("notified %s: %s", delivery.channel, delivery.note.title)
            self.on_sent(delivery.channel, "sent")
            return
        self.on_sent(delivery.channel, "failed")

    async def drain(self, timeout: float) -> None:
        try:
            await asyncio.wait_for(self._queue.join(), timeout)
        except TimeoutError:
            log.warning("stopping with %d notifications unsent", self._queue.qsize())
