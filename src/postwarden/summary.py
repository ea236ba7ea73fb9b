"""What a policy declares, in numbers: the output of a successful `validate`."""

from __future__ import annotations

from collections import Counter
from typing import Any

from postwarden.policy.models import Policy


def summarize(policy: Policy) -> dict[str, Any]:
    users = policy.users.values()
    pool_states = Counter(a.state for p in policy.ip_pools.values() for a in p.addresses)
    channel_kinds = Counter(c.kind for c in policy.notifications.values())
    return {
        "server": {
            "hostname": policy.server.hostname,
            "postmaster": policy.server.postmaster,
            "message_size_limit": str(policy.server.message_size_limit),
        },
        "domains": len(policy.domains),
        "dkim_domains": sum(1 for d in policy.domains.values() if d.dkim_selector),
        "users": len(policy.users),
        "disabled_users": sum(1 for u in users if u.disabled),
        "aliases": sum(len(u.aliases) for u in users),
        "send_as_grants": sum(len(u.send_as) for u in users),
        "lists": len(policy.lists),
        "list_members": sum(len(m.members) for m in policy.lists.values()),
        "moderated_lists": sum(1 for m in policy.lists.values() if m.posting != "anyone"),
        "throttles": len(policy.throttles),
        "ip_pools": len(policy.ip_pools),
        "pool_addresses": dict(sorted(pool_states.items())),
        "notification_channels": dict(sorted(channel_kinds.items())),
        "events": len(policy.events),
        "reports": len(policy.reports),
        "abuse_rules": [
            name
            for name in type(policy.abuse).model_fields
            if getattr(policy.abuse, name) is not None
        ],
    }


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{n} {k}" for k, n in counts.items()) or "none"


def summary_lines(summary: dict[str, Any]) -> list[str]:
    s = summary
    active = s["users"] - s["disabled_users"]
    rows = [
        (
            "server",
            f"{s['server']['hostname']} (postmaster {s['server']['postmaster']}, "
            f"messages up to {s['server']['message_size_limit']})",
        ),
        ("domains", f"{s['domains']} ({s['dkim_domains']} signing with DKIM)"),
        (
            "users",
            f"{s['users']} ({active} active, {s['disabled_users']} disabled), "
            f"{s['aliases']} aliases, {s['send_as_grants']} send-as grants",
        ),
        (
            "lists",
            f"{s['lists']} ({s['moderated_lists']} restricted), {s['list_members']} memberships",
        ),
        ("throttles", str(s["throttles"])),
        ("abuse rules", ", ".join(s["abuse_rules"]) or "none"),
        ("ip pools", f"{s['ip_pools']} with addresses: {_counts(s['pool_addresses'])}"),
        ("notifications", _counts(s["notification_channels"])),
        ("events", str(s["events"])),
        ("reports", str(s["reports"])),
    ]
    width = max(len(name) for name, _ in rows)
    return [f"  {name:<{width}}  {value}" for name, value in rows]
