"""The daemon's Prometheus metrics."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Histogram

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)


@dataclass
class Metrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.requests = Counter(
            "postwarden_policyd_requests", "Policy requests by SMTP stage", ["state"], registry=r
        )
        self.decisions = Counter(
            "postwarden_policyd_decisions", "Replies by action", ["action"], registry=r
        )
        self.latency = Histogram(
            "postwarden_policyd_decision_seconds",
            "Time to decide",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.throttle_hits = Counter(
            "postwarden_policyd_throttle_hits",
            "Requests over a throttle",
            ["throttle"],
            registry=r,
        )
        self.events = Counter(
            "postwarden_policyd_events", "Events raised, before cooldowns", ["kind"], registry=r
        )
        self.store_errors = Counter(
            "postwarden_policyd_store_errors",
            "Decisions the counter store could not serve",
            registry=r,
        )
        self.notifications = Counter(
            "postwarden_policyd_notifications",
            "Notifications by channel and result",
            ["channel", "result"],
            registry=r,
        )
