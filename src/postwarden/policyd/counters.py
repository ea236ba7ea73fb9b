"""Counters in memory: sliding windows, message sizes and bans.

A window is kept as up to ``BUCKETS`` buckets (a 1 h window counts per minute).
A bucket leaves the window only when all of it is older than the window, so a
limit is never exceeded in any window, and at the boundary a count is at most
one bucket late to expire: the 201st message in the hour is refused, exactly.

``run`` applies a batch of operations as one step; the caller holds whatever
lock makes that step atomic. Everything is plain data so that the SQLite store
can write it behind and read it back after a restart.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from postwarden.policyd.decide import (
    Add,
    Ban,
    BanCheck,
    Distinct,
    Op,
    Result,
    SimilarSizes,
    Take,
)

BUCKETS = 60


@dataclass(slots=True)
class Window:
    bucket_seconds: int
    buckets: list[int] = field(default_factory=list)
    """Bucket number, count, bucket number, count ...: oldest first, flat, because a
    window is kept for every active sender (a deque costs 600 bytes even empty)."""
    total: int = 0

    def expire(self, now: float, window: int) -> None:
        buckets = self.buckets
        if not buckets:
            return
        current = int(now) // self.bucket_seconds
        # one bucket more than the window spans: a count leaves late, never early
        spanned = (window + self.bucket_seconds - 1) // self.bucket_seconds
        oldest_kept = current - spanned - 1
        if buckets[0] > oldest_kept:
            return
        keep = 0
        while keep < len(buckets) and buckets[keep] <= oldest_kept:
            self.total -= buckets[keep + 1]
            keep += 2
        del buckets[:keep]

    def add(self, now: float, weight: int) -> None:
        current = int(now) // self.bucket_seconds
        buckets = self.buckets
        if buckets and buckets[-2] == current:
            buckets[-1] += weight
        else:
            buckets += (current, weight)
        self.total += weight

    def pairs(self) -> list[tuple[int, int]]:
        return list(zip(self.buckets[::2], self.buckets[1::2], strict=True))


def bucket_seconds(window: int) -> int:
    return max(1, window // BUCKETS)


@dataclass
class Counters:
    windows: dict[str, Window] = field(default_factory=dict)
    sizes: dict[str, deque[tuple[float, int]]] = field(default_factory=dict)
    seen: dict[str, dict[str, float]] = field(default_factory=dict)
    """Key -> member -> when it was last seen (Distinct)."""
    bans: dict[str, float] = field(default_factory=dict)
    """Client address (or suspended login) -> time the ban ends."""
    dirty: set[str] = field(default_factory=set)
    """Keys changed since the last write-behind."""

    def run(self, ops: list[Op], now: float) -> list[Result]:
        refused = self._refused(ops, now)
        results: list[Result] = []
        for op in ops:
            if isinstance(op, BanCheck):
                banned = self.bans.get(op.client, 0.0) > now
                results.append(banned)
                if banned:
                    results += [None] * (len(ops) - len(results))
                    break
            elif isinstance(op, Take):
                window = self._window(op.key, op.window, now)
                fits = window.total + op.weight <= op.limit
                if fits and not refused:
                    window.add(now, op.weight)
                    self.dirty.add(op.key)
                results.append(fits)
            elif isinstance(op, Add):
                window = self._window(op.key, op.window, now)
                window.add(now, op.weight)
                self.dirty.add(op.key)
                results.append(window.total)
            elif isinstance(op, SimilarSizes):
                results.append(0 if refused else self._similar(op, now))
            elif isinstance(op, Distinct):
                results.append(self._distinct(op, now))
            else:
                assert isinstance(op, Ban)
                until = self.bans.get(op.client, 0.0)
                self.bans[op.client] = max(until, now + op.seconds)
                self.dirty.add(f"ban:{op.client}")
                results.append(until <= now)
        return results

    def _refused(self, ops: list[Op], now: float) -> bool:
        """Will a refusing Take of the batch not fit? Then the batch counts nothing."""
        for op in ops:
            if (
                type(op) is Take
                and op.refuses
                and self._window(op.key, op.window, now).total + op.weight > op.limit
            ):
                return True
        return False

    def _window(self, key: str, window: int, now: float) -> Window:
        found = self.windows.get(key)
        if found is None:
            found = self.windows[key] = Window(bucket_seconds(window))
        found.expire(now, window)
        return found

    def _similar(self, op: SimilarSizes, now: float) -> int:
        sizes = self.sizes.get(op.key)
        if sizes is None:
            sizes = self.sizes[op.key] = deque()
        while sizes and sizes[0][0] <= now - op.window:
            sizes.popleft()
        sizes.append((now, op.size))
        self.dirty.add(op.key)
        low, high = op.size * (1 - op.tolerance), op.size * (1 + op.tolerance)
        return sum(1 for _, size in sizes if low <= size <= high)

    def _distinct(self, op: Distinct, now: float) -> int:
        members = self.seen.get(op.key)
        if members is None:
            members = self.seen[op.key] = {}
        members[op.member] = now
        oldest = now - op.window
        for member in [m for m, at in members.items() if at <= oldest]:
            del members[member]
        self.dirty.add(op.key)
        return len(members)

    def sweep(self, now: float, longest_window: int) -> None:
        """Forget what no window can see any more: memory stays bounded by activity.
        Forgotten keys count as changed, so the write-behind deletes them too."""
        horizon = now - longest_window - BUCKETS
        # a bucket counts until one bucket after its end has left the window (see
        # Window.expire): a key is forgotten no sooner, or a count would end early
        old_windows = [
            key
            for key, window in self.windows.items()
            if not window.buckets or (window.buckets[-2] + 2) * window.bucket_seconds < horizon
        ]
        for key in old_windows:
            del self.windows[key]
        old_sizes = [
            key for key, sizes in self.sizes.items() if not sizes or sizes[-1][0] < horizon
        ]
        for key in old_sizes:
            del self.sizes[key]
        old_seen = [
            key
            for key, members in self.seen.items()
            if not members or max(members.values()) < horizon
        ]
        for key in old_seen:
            del self.seen[key]
        ended = [client for client, until in self.bans.items() if until <= now]
        for client in ended:
            del self.bans[client]
        self.dirty.update(old_windows, old_sizes, old_seen, (f"ban:{c}" for c in ended))
