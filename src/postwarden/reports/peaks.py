"""How close each throttle came to its limit: the most any one subject (a login, or a
domain's shared budget) used of it in one window of the throttle's length.

The usage rows are counted in steps (a whole divisor of every throttle's window, one
hour at most), so a window here starts on a step: the peak shown is the busiest
window that starts on a step, which can be below the true sliding peak by at most
what one step holds. Pure: the rows come in, the peaks go out."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

from postwarden.policyd.view import NamedThrottle, PolicyView

DIMENSIONS = ("messages", "recipients", "bytes")
LONGEST_STEP = 3600
SHORTEST_STEP = 60


@dataclass(frozen=True)
class Limit:
    """One rate of one throttle: at most ``count`` of ``what`` per ``window`` seconds."""

    throttle: str
    what: str
    count: int
    window: int
    text: str
    """As the policy writes it: 200/h."""


@dataclass
class Peak:
    limit: Limit
    used: int = 0
    subject: str = ""
    start: float = 0.0
    """When the busiest window began (the epoch)."""

    @property
    def share(self) -> float:
        return self.used / self.limit.count if self.limit.count else 0.0


def limits_of(named: NamedThrottle) -> tuple[Limit, ...]:
    found = []
    for what in DIMENSIONS:
        rate = getattr(named.throttle, what)
        if rate is None:
            continue
        count = int(rate.size) if what == "bytes" else int(rate.count)
        found.append(Limit(named.name, what, count, int(rate.window), str(rate)))
    return tuple(found)


@dataclass(frozen=True)
class Budgets:
    """Which limits a login's mail counts against, as the daemon decides it
    (decide._budgets): its own throttle, and its sender domain's shared one."""

    view: PolicyView
    _limits: dict[str, tuple[Limit, ...]] = field(default_factory=dict)

    def _of(self, named: NamedThrottle | None) -> tuple[Limit, ...]:
        if named is None:
            return ()
        found = self._limits.get(named.name)
        if found is None:
            found = self._limits[named.name] = limits_of(named)
        return found

    def own(self, login: str) -> tuple[Limit, ...]:
        return self._of(self.view.throttle_of(login)) if login else ()

    def shared(self, domain: str) -> tuple[Limit, ...]:
        return self._of(self.view.shared_throttles.get(domain))

    def all_limits(self) -> list[Limit]:
        named = {n.name: n for n in self.view.user_throttles.values()}
        for table in (self.view.sender_throttles, self.view.shared_throttles):
            named.update((n.name, n) for n in table.values())
        return [limit for name in sorted(named) for limit in self._of(named[name])]

    def step(self) -> int:
        return step_for([limit.window for limit in self.all_limits()])


def step_for(windows: Iterable[int]) -> int:
    """The step the rows are counted in: the largest that divides every window, one
    hour at most and a minute at least (a window under a minute is counted in
    minutes and so shown above its true peak at most by one minute's mail)."""
    step = 0
    for window in windows:
        step = math.gcd(step, window)
    return max(SHORTEST_STEP, min(LONGEST_STEP, step or LONGEST_STEP))


Counts = list[int]
"""messages, recipients, bytes"""


class PeakFinder:
    """Feed it what the throttles counted, per step: each login's own in login order
    (it keeps one login's steps at a time), and any domain's with a shared budget in
    any order, as additions and subtractions."""

    def __init__(self, budgets: Budgets, step: int) -> None:
        self.budgets = budgets
        self.step = step
        self.peaks: dict[Limit, Peak] = {limit: Peak(limit) for limit in budgets.all_limits()}
        self._login = ""
        self._steps: dict[int, Counts] = {}
        self._shared: dict[str, dict[int, Counts]] = {}

    def add_own(self, login: str, step: int, counts: Counts) -> None:
        if login != self._login:
            self._close()
            self._login = login
        _add(self._steps, step, counts)

    def add_shared(self, domain: str, step: int, counts: Counts) -> None:
        if self.budgets.shared(domain):
            _add(self._shared.setdefault(domain, {}), step, counts)

    def finish(self) -> list[Peak]:
        self._close()
        for domain, steps in self._shared.items():
            self._measure(domain, steps, self.budgets.shared(domain))
        self._shared = {}
        return list(self.peaks.values())

    def _close(self) -> None:
        if self._steps:
            self._measure(self._login, self._steps, self.budgets.own(self._login))
        self._steps = {}

    def _measure(self, subject: str, steps: dict[int, Counts], limits: tuple[Limit, ...]) -> None:
        if not limits:
            return
        ordered = sorted(steps.items())
        for limit in limits:
            slot = DIMENSIONS.index(limit.what)
            used, began = busiest(ordered, slot, max(1, -(-limit.window // self.step)))
            peak = self.peaks.setdefault(limit, Peak(limit))
            if used > peak.used or (used == peak.used and used and subject < peak.subject):
                peak.used, peak.subject, peak.start = used, subject, began * self.step


def _add(steps: dict[int, Counts], step: int, counts: Counts) -> None:
    kept = steps.get(step)
    if kept is None:
        steps[step] = list(counts)
    else:
        for slot, number in enumerate(counts):
            kept[slot] += number


def busiest(ordered: list[tuple[int, Counts]], slot: int, width: int) -> tuple[int, int]:
    """The largest sum of ``slot`` over ``width`` consecutive steps, and the step the
    window starts on (the earliest such window). The best window starts on a step
    that has rows, so two pointers over the steps that have rows find it."""
    best, began, total, first = 0, 0, 0, 0
    for step, counts in ordered:
        total += counts[slot]
        while ordered[first][0] <= step - width:
            total -= ordered[first][1][slot]
            first += 1
        if total > best:
            best, began = total, ordered[first][0]
    return best, began
