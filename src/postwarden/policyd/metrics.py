"""The daemon's Prometheus metrics.

Counting on the request path is plain Python arithmetic, read out only when
Prometheus scrapes: prometheus-client's own counters take a lock on every
increment, which costs more than a whole decision here. Rare events (throttle
hits, events, notifications) use prometheus-client's counters directly.
"""

from __future__ import annotations

import bisect
from collections import Counter as Tally
from collections.abc import Iterator
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)


@dataclass(eq=False)  # the registry keys collectors by identity
class RequestStats(Collector):
    """Requests by SMTP stage, replies by action, and decision latency."""

    requests: Tally[str] = field(default_factory=Tally)
    decisions: Tally[str] = field(default_factory=Tally)
    store_errors: int = 0
    bucket_counts: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS) + 1))
    latency_sum: float = 0.0

    def record(self, state: str, action: str, seconds: float) -> None:
        self.requests[state] += 1
        self.decisions[action] += 1
        self.bucket_counts[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self.latency_sum += seconds

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            "postwarden_policyd_requests", "Policy requests by SMTP stage", labels=["state"]
        )
        for state, count in sorted(self.requests.items()):
            requests.add_metric([state], count)
        yield requests
        decisions = CounterMetricFamily(
            "postwarden_policyd_decisions", "Replies by action", labels=["action"]
        )
        for action, count in sorted(self.decisions.items()):
            decisions.add_metric([action], count)
        yield decisions
        yield CounterMetricFamily(
            "postwarden_policyd_store_errors",
            "Decisions the counter store could not serve",
            value=self.store_errors,
        )
        cumulative, buckets = 0, []
        for bound, count in zip((*LATENCY_BUCKETS, float("inf")), self.bucket_counts, strict=True):
            cumulative += count
            buckets.append(("+Inf" if bound == float("inf") else str(bound), cumulative))
        yield HistogramMetricFamily(
            "postwarden_policyd_decision_seconds",
            "Time to decide",
            buckets=buckets,
            sum_value=self.latency_sum,
        )


@dataclass
class Metrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.stats = RequestStats()
        r.register(self.stats)
        self.throttle_hits = Counter(
            "postwarden_policyd_throttle_hits",
            "Requests over a throttle",
            ["throttle"],
            registry=r,
        )
        self.events = Counter(
            "postwarden_policyd_events", "Events raised, before cooldowns", ["kind"], registry=r
        )
        self.notifications = Counter(
            "postwarden_policyd_notifications",
            "Notifications by channel and result",
            ["channel", "result"],
            registry=r,
        )
        self.outbound_spam = Counter(
            "postwarden_policyd_outbound_spam",
            "rspamd's verdicts on outbound mail that acted, by action",
            ["action"],
            registry=r,
        )
        self.bans = Gauge(
            "postwarden_policyd_bans_active",
            "Clients banned now, on every host sharing the store",
            registry=r,
        )
