"""The daemon's core: drive a decision against the store, then act on the verdict
(log lines, events, usage rows) without delaying the reply."""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple

from postwarden.policyd.decide import (
    AUTH_REJECT,
    Decision,
    Event,
    UsageRow,
    Verdict,
    decide,
    decide_auth,
)
from postwarden.policyd.stores import Store, StoreUnavailable
from postwarden.policyd.view import PolicyView

log = logging.getLogger("postwarden.policyd")

STORE_DOWN_CLOSED = "DEFER 4.3.0 the policy service cannot reach its counters; try again later"
STORE_DOWN_LOG_EVERY = 60.0
"""While the store is down, at most one log line this often (every decision fails)."""
HELD_AT_RCPT_KEPT = 10_000
"""Transactions whose RCPT was held and whose END-OF-MESSAGE has not come yet."""


class Hold(NamedTuple):
    """Why a message went to the hold queue, for `postwarden moderation list`."""

    queue_id: str
    reason: str
    login: str
    sender: str


def _involved(request: dict[str, str]) -> tuple[str, str]:
    """The client address and login a request speaks for."""
    return request.get("client_address", ""), request.get("sasl_username", "").lower()


@dataclass
class Engine:
    view: PolicyView
    store: Store
    fail_mode: str = "closed"
    on_event: Callable[[Event], None] = lambda event: None
    on_usage: Callable[[UsageRow], None] = lambda row: None
    on_hold: Callable[[Hold], None] = lambda hold: None
    store_errors: int = field(default=0)
    clock: Callable[[], float] = time.monotonic
    wall_clock: Callable[[], float] = time.time
    _down_since: float | None = field(default=None, init=False, repr=False)
    _down_logged_at: float = field(default=0.0, init=False, repr=False)
    _down_unlogged: int = field(default=0, init=False, repr=False)
    _down_failures: int = field(default=0, init=False, repr=False)
    _held_at_rcpt: OrderedDict[str, str] = field(
        default_factory=OrderedDict, init=False, repr=False
    )
    """Postfix's transaction ``instance`` -> the HOLD reason given at RCPT: the queue ID
    is often not assigned yet then, and comes with END-OF-MESSAGE."""

    async def decide(self, request: dict[str, str]) -> str:
        action = await self.run(decide(request, self.view), _involved(request))
        self._note_hold(request, action)
        return action

    async def decide_auth(self, command: str, request: dict[str, object]) -> str:
        involved = (str(request.get("remote") or ""), str(request.get("login") or "").lower())
        action = await self.run(
            decide_auth(command, request, self.view, self.wall_clock()), involved
        )
        if action == STORE_DOWN_CLOSED:
            # Dovecot knows accept and reject only: failing closed is a refused login,
            # or a banned client or a suspended login would get in while the store is away
            return f"{AUTH_REJECT} the policy service cannot reach its counters"
        return action

    def decide_now(self, request: dict[str, str]) -> str | None:
        """Decide without waiting, when the store answers at once (the local store);
        None when the decision must wait for the store."""
        run_now = getattr(self.store, "run_now", None)
        if run_now is None:
            return None
        decision = decide(request, self.view)
        try:
            ops = next(decision)
            while True:
                ops = decision.send(run_now(ops))
        except StopIteration as stop:
            action = self._finish(stop.value, _involved(request))
        self._note_hold(request, action)
        return action

    def _note_hold(self, request: dict[str, str], action: str) -> None:
        """Remember why a transaction was held, and say so once its queue ID is known."""
        held = action.startswith("HOLD")
        state = request.get("protocol_state", "")
        if state == "RCPT":
            instance = request.get("instance", "") if held else ""
            if instance:
                self._held_at_rcpt[instance] = action
                if len(self._held_at_rcpt) > HELD_AT_RCPT_KEPT:
                    self._held_at_rcpt.popitem(last=False)
            return
        if state != "END-OF-MESSAGE" or not (held or self._held_at_rcpt):
            return
        at_rcpt = self._held_at_rcpt.pop(request.get("instance", ""), None)
        reason = action if held else at_rcpt
        queue_id = request.get("queue_id", "")
        if reason is None or not queue_id:
            return
        self.on_hold(
            Hold(
                queue_id,
                reason.removeprefix("HOLD").strip(),
                request.get("sasl_username", "").lower(),
                request.get("sender", "").lower(),
            )
        )

    async def run(self, decision: Decision, involved: tuple[str, str] = ("", "")) -> str:
        try:
            ops = next(decision)
            while True:
                try:
                    results = await self.store.run(ops)
                except StoreUnavailable as error:
                    return self._store_down(error)
                if self._down_since is not None:
                    self._store_back()
                ops = decision.send(results)
        except StopIteration as stop:
            return self._finish(stop.value, involved)

    def _finish(self, verdict: Verdict, involved: tuple[str, str]) -> str:
        for line in verdict.logs:
            log.warning("%s", line)
        client, login = involved
        for event in verdict.events:
            self.on_event(event._replace(client=client, login=login))
        if verdict.usage is not None:
            self.on_usage(verdict.usage)
        return verdict.action

    def _store_down(self, error: StoreUnavailable) -> str:
        self.store_errors += 1
        self._log_store_down(error)
        self.on_event(Event("system.store", "counters", f"{error}; failing {self.fail_mode}"))
        return "DUNNO" if self.fail_mode == "open" else STORE_DOWN_CLOSED

    def _log_store_down(self, error: StoreUnavailable) -> None:
        now = self.clock()
        if self._down_since is None:
            self._down_since, self._down_failures = now, 0
        self._down_failures += 1
        if self._down_failures > 1 and now - self._down_logged_at < STORE_DOWN_LOG_EVERY:
            self._down_unlogged += 1
            return
        unlogged = (
            f" ({self._down_unlogged} more since the last line)" if self._down_unlogged else ""
        )
        log.error("counter store unavailable (%s): failing %s%s", error, self.fail_mode, unlogged)
        self._down_logged_at, self._down_unlogged = now, 0

    def _store_back(self) -> None:
        assert self._down_since is not None
        log.warning(
            "counter store reachable again after %.0fs; %d decisions failed %s meanwhile",
            self.clock() - self._down_since,
            self._down_failures,
            self.fail_mode,
        )
        self._down_since = None
        self._down_unlogged = 0
