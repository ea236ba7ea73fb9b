"""pflogsumm (Debian package pflogsumm, 1.1.5) as a yardstick: run it on a Postfix log
and read back its delivery counts, and the same counts from postwarden's reader.

pflogsumm counts every delivery line of any delivery agent (smtp, lmtp, local,
...): "delivered" the ``status=sent`` lines except those saying ``forwarded as``
("forwarded"), "deferrals" the ``status=deferred`` lines (its "deferred" counts
messages), "bounced" the ``status=bounced`` lines. Its "Host/Domain Summary: Message
Delivery" gives, per recipient domain, the sent lines and the deferred lines; a
domain with only bounces is not in it.
"""

from __future__ import annotations

import re
import subprocess
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from postwarden.reports.postfix_log import Delivery

_COUNT = r"(\d+)([ km])"
_DOMAIN_ROW = re.compile(
    rf"^\s*{_COUNT}\s+{_COUNT}\s+{_COUNT}\s+[\d.]+ [smhd]\s+[\d.]+ [smhd]\s+(\S+)$"
)
_DEFERRED = re.compile(rf"^\s*{_COUNT}\s+deferred(?:\s+\({_COUNT}\s*deferrals\))?$", re.M)


class Rounded(ValueError):
    """pflogsumm showed a count above 512k divided by 1024 ("600k"): not exact."""


@dataclass(frozen=True)
class Counts:
    totals: dict[str, int]
    """delivered, forwarded, deferrals and bounced: delivery lines."""
    domains: dict[str, tuple[int, int]]
    """Recipient domain -> (sent lines, deferred lines)."""


def run(log: Path) -> str:
    return subprocess.run(
        ["pflogsumm", str(log)], capture_output=True, text=True, check=True
    ).stdout


def _exact(count: str, unit: str) -> int:
    if unit != " ":
        raise Rounded(f"pflogsumm shows {count}{unit}, a rounded count")
    return int(count)


def parse(text: str) -> Counts:
    """The counts of pflogsumm's report (its default options)."""
    totals = {}
    for name in ("delivered", "forwarded", "bounced"):
        found = re.search(rf"^\s*{_COUNT}\s+{name}$", text, re.M)
        if found is None:
            raise ValueError(f"no {name} total in pflogsumm's report")
        totals[name] = _exact(*found.groups())
    deferred = _DEFERRED.search(text)
    if deferred is None:
        raise ValueError("no deferred total in pflogsumm's report")
    totals["deferrals"] = _exact(deferred[3], deferred[4]) if deferred[3] else 0
    section = text.split("Host/Domain Summary: Message Delivery", 1)[1].split("\n\n", 1)[0]
    domains = {}
    for row in section.split(" -------- -------", 1)[1].splitlines()[1:]:
        found = _DOMAIN_ROW.match(row)
        if found is None:
            raise ValueError(f"a row of pflogsumm's delivery summary not understood: {row!r}")
        domains[found[7]] = (_exact(found[1], found[2]), _exact(found[5], found[6]))
    return Counts(totals, domains)


def ours(deliveries: Iterable[Delivery]) -> Counts:
    """The same counts from postwarden's reader, over every delivery agent."""
    statuses: Counter[str] = Counter()
    domains: dict[str, list[int]] = {}
    for delivery in deliveries:
        statuses[delivery.status] += 1
        if delivery.status in ("sent", "deferred"):
            counts = domains.setdefault(delivery.domain, [0, 0])
            counts[delivery.status == "deferred"] += 1
    return Counts(
        {
            "delivered": statuses["sent"],
            "forwarded": statuses["forwarded"],
            "deferrals": statuses["deferred"],
            "bounced": statuses["bounced"],
        },
        {domain: (sent, deferred) for domain, (sent, deferred) in domains.items()},
    )
