"""Prometheus and Alertmanager: the measured events as alert rules, routed to channels.

Only the event kinds that a metric can show become Prometheus alert rules:
``queue.size``, ``system.memory`` and ``system.disk``, all from the node exporter:
the queue through its textfile collector, which the postfix role's timer feeds
(``postwarden_postfix_queue_messages``, counted in Postfix's spool every 30 s).
Held mail is left out of the queue size: it waits for a moderator, not for
delivery, and ``spam.outbound`` and ``list.post_held`` already say why it is there.
The other kinds are raised by postwarden-policyd itself and never pass through
Prometheus.

Each measured event is a rule of its own, labelled with its ``event`` kind and
its ``event_index`` (position in ``policy.events``), so that two events of the
same kind with different thresholds or channels stay apart all the way to
Alertmanager, which routes each one to a receiver holding exactly the channels
its ``notify`` names. Anything else reaching Alertmanager goes to a receiver
that does nothing.

The files are written with libyaml's safe emitter rather than a template: the relay
password and the PromQL expressions are quoted by the YAML emitter, not by hand.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml

from postwarden.policy.models import Policy
from postwarden.policy.models.events import QueueSizeEvent, SystemUsageEvent
from postwarden.policy.secrets import Secrets
from postwarden.policy.units import Seconds
from postwarden.render.host import HostSettings
from postwarden.render.templating import header
from postwarden.render.tree import RenderedFile

PROMETHEUS_DIR = "/etc/prometheus"
RULES_FILE = "rules/postwarden.yml"
"""Relative to prometheus.yml, so that promtool finds it beside a rendered tree too."""

# on loopback only: the monitoring role binds them there (they have no login)
PROMETHEUS = "127.0.0.1:9090"
ALERTMANAGER = "127.0.0.1:9093"
NODE_EXPORTER = "127.0.0.1:9100"
QUEUE_METRIC = "postwarden_postfix_queue_messages"
INTERVAL = "15s"
BRIDGE_TOKEN = "/etc/prometheus/postwarden-bridge.token"

RULE_GROUP = "postwarden-events"
NULL_RECEIVER = "null"
GROUP_BY = ["alertname", "event", "event_index"]
GROUP_WAIT = "30s"
GROUP_INTERVAL = Seconds(5 * 60)
DEFAULT_REPEAT = "4h"
"""Only the null receiver uses the root route's repeat; every event route sets its own."""

# Filesystems that are not disks: full by design (squashfs), or memory (tmpfs).
PSEUDO_FILESYSTEMS = (
    "tmpfs",
    "devtmpfs",
    "ramfs",
    "overlay",
    "squashfs",
    "iso9660",
    "nsfs",
    "autofs",
    "fuse.lxcfs",
    "fuse.snapfuse",
)

MeasuredEvent = QueueSizeEvent | SystemUsageEvent


@dataclass(frozen=True)
class AlertRule:
    """One measured event as a Prometheus alert rule."""

    index: int
    """The event's position in policy.events."""
    event: MeasuredEvent
    alert: str
    expr: str
    summary: str

    @property
    def receiver(self) -> str:
        return f"event{self.index}-{self.event.on}"


def _number(value: float) -> str:
    """90.0 -> '90', 99.5 -> '99.5': thresholds as an administrator wrote them."""
    return str(int(value)) if value == int(value) else repr(value)


def _rule(index: int, event: MeasuredEvent) -> AlertRule:
    above = _number(event.above)
    window = f"for {event.for_}"
    if isinstance(event, QueueSizeEvent):
        # one series per queue (incoming, active, deferred, ...)
        return AlertRule(
            index,
            event,
            f"PostfixQueueSizeEvent{index}",
            f'sum({QUEUE_METRIC}{{queue!="hold"}}) > {above}',
            f"{{{{ $value }}}} messages waiting in the Postfix queue (more than {above} {window})",
        )
    if event.on == "system.memory":
        return AlertRule(
            index,
            event,
            f"MemoryUsageEvent{index}",
            f"100 * (1 - node_memory_MemAvailable_bytes / node_memory_MemTotal_bytes) > {above}",
            f"{{{{ $value | humanize }}}}% of memory in use (more than {above}% {window})",
        )
    disks = f'fstype!~"{"|".join(PSEUDO_FILESYSTEMS)}"'
    return AlertRule(
        index,
        event,
        f"DiskUsageEvent{index}",
        # avail, not free: the blocks reserved for root are not there for Postfix either
        f"100 * (1 - node_filesystem_avail_bytes{{{disks}}}"
        f" / node_filesystem_size_bytes{{{disks}}}) > {above}",
        f"{{{{ $labels.mountpoint }}}} is {{{{ $value | humanize }}}}% full"
        f" (more than {above}% {window})",
    )


def alert_rules(policy: Policy) -> list[AlertRule]:
    return [
        _rule(index, event)
        for index, event in enumerate(policy.events)
        if isinstance(event, QueueSizeEvent | SystemUsageEvent)
    ]


# ----------------------------------------------------------------- prometheus


def prometheus_config(policy: Policy, host: HostSettings) -> dict[str, Any]:
    def job(name: str, target: str) -> dict[str, Any]:
        return {"job_name": name, "static_configs": [{"targets": [target]}]}

    return {
        "global": {
            "scrape_interval": INTERVAL,
            "evaluation_interval": INTERVAL,
            # every notification says which mail host it is about
            "external_labels": {"mail_host": host.name or policy.server.hostname},
        },
        "rule_files": [RULES_FILE],
        "alerting": {"alertmanagers": [{"static_configs": [{"targets": [ALERTMANAGER]}]}]},
        "scrape_configs": [
            job("prometheus", PROMETHEUS),
            job("node", NODE_EXPORTER),
            job("alertmanager", ALERTMANAGER),
            job("postwarden-policyd", host.policyd_metrics_listen),
        ],
    }


def rules_config(rules: list[AlertRule]) -> dict[str, Any]:
    return {
        "groups": [
            {
                "name": RULE_GROUP,
                "rules": [
                    {
                        "alert": rule.alert,
                        "expr": rule.expr,
                        "for": str(rule.event.for_),
                        "labels": {
                            "event": rule.event.on,
                            "event_index": str(rule.index),
                            "severity": "warning",
                        },
                        "annotations": {"summary": rule.summary},
                    }
                    for rule in rules
                ],
            }
        ]
    }


# --------------------------------------------------------------- alertmanager


def bridge_url(host: HostSettings, channel_name: str) -> str:
    """postwarden-policyd forwards to the real webhook or SMS gateway, adding the
    headers and tokens that must not be in Alertmanager's config."""
    return f"http://{host.policyd_metrics_listen}/alertmanager/{channel_name}"


def email_config(policy: Policy, host: HostSettings, to: list[str]) -> dict[str, Any]:
    relay = policy.server.notification_relay
    if relay is None:
        # the policy checks refuse this; a renderer must not quietly drop the channel
        raise ValueError("email notifications need server.notification_relay")
    config: dict[str, Any] = {
        "to": ", ".join(to),
        "from": policy.server.notification_sender,
        "smarthost": f"{relay.host}:{relay.port}",
        "hello": host.name or policy.server.hostname,
        "require_tls": relay.starttls,
    }
    # Alertmanager logs in whenever auth_username is set, even with no password
    if relay.username is not None and relay.password is not None:
        config["auth_username"] = relay.username
        config["auth_password"] = relay.password.reveal()
    return config


def receiver(policy: Policy, host: HostSettings, rule: AlertRule) -> dict[str, Any]:
    emails: list[dict[str, Any]] = []
    webhooks: list[dict[str, Any]] = []
    for name in rule.event.notify:
        channel = policy.notifications[name]
        if channel.email is not None:
            emails.append(email_config(policy, host, channel.email))
        else:
            webhooks.append(
                {
                    "url": bridge_url(host, name),
                    # the bridge's token, made on the host (make-tokens): never in this file
                    "http_config": {
                        "authorization": {"type": "Bearer", "credentials_file": BRIDGE_TOKEN}
                    },
                }
            )
    config: dict[str, Any] = {"name": rule.receiver}
    if emails:
        config["email_configs"] = emails
    if webhooks:
        config["webhook_configs"] = webhooks
    return config


def alertmanager_config(
    policy: Policy, host: HostSettings, rules: list[AlertRule]
) -> dict[str, Any]:
    routes = [
        {
            "receiver": rule.receiver,
            "matchers": [f'event="{rule.event.on}"', f'event_index="{rule.index}"'],
            # Alertmanager refuses a zero repeat, and cannot repeat between group ticks
            "repeat_interval": str(max(rule.event.cooldown, GROUP_INTERVAL)),
        }
        for rule in rules
    ]
    return {
        "route": {
            "receiver": NULL_RECEIVER,
            "group_by": GROUP_BY,
            "group_wait": GROUP_WAIT,
            "group_interval": str(GROUP_INTERVAL),
            "repeat_interval": DEFAULT_REPEAT,
            "routes": routes,
        },
        "receivers": [
            {"name": NULL_RECEIVER},
            *(receiver(policy, host, rule) for rule in rules),
        ],
    }


# ------------------------------------------------------------------ files


def dump(source: str, data: dict[str, Any]) -> str:
    # a wide line keeps long PromQL expressions on one line instead of folded
    body = yaml.dump(
        data,
        Dumper=yaml.CSafeDumper,
        sort_keys=False,
        default_flow_style=False,
        allow_unicode=True,
        width=4096,
    )
    return header(source) + body


def render_monitoring(
    policy: Policy, secrets: Secrets, host: HostSettings, source: str
) -> list[RenderedFile]:
    rules = alert_rules(policy)
    return [
        RenderedFile(
            f"{PROMETHEUS_DIR}/prometheus.yml",
            dump(source, prometheus_config(policy, host)),
            "prometheus",
        ),
        RenderedFile(
            f"{PROMETHEUS_DIR}/{RULES_FILE}", dump(source, rules_config(rules)), "prometheus"
        ),
        RenderedFile(
            f"{PROMETHEUS_DIR}/alertmanager.yml",
            dump(source, alertmanager_config(policy, host, rules)),
            "alertmanager",
            # the relay password is in it; Debian's alertmanager runs as prometheus
            mode=0o640,
            group="prometheus",
        ),
    ]
