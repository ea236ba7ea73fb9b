"""The ``smtp_out_connections`` report: outbound SMTP per pool address and per
destination provider, from Postfix's delivery log (reports.postfix_log)."""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from postwarden.reports.builders import Table
from postwarden.reports.postfix_log import OUTBOUND, Delivery

PROVIDERS = {
    "gmail.com": "gmail",
    "googlemail.com": "gmail",
    "outlook.com": "microsoft",
    "hotmail.com": "microsoft",
    "live.com": "microsoft",
    "msn.com": "microsoft",
    "yahoo.com": "yahoo",
    "ymail.com": "yahoo",
    "aol.com": "yahoo",
}
"""Recipient domains that one provider's servers take: their mail, reputation and
limits are one."""
OTHERS = "others"
COLUMNS = ("connections", "delivered", "deferred", "bounced")
_SLOTS = {"deferred": 2, "bounced": 3}
_REASON_LENGTH = 100


def provider(domain: str) -> str:
    return PROVIDERS.get(domain, domain)


@dataclass
class ConnectionCounts:
    """What the connections tables are made from, before names are given and rows
    ranked: counts of one Postfix log or of several (``add``), as every MTA's report
    timer shares them (reports/gathered.py)."""

    by_transport: dict[str, list[int]] = field(default_factory=dict)
    """Postfix's transport -> connections, delivered, deferred, bounced."""
    by_domain: dict[str, list[int]] = field(default_factory=dict)
    reasons: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    """(domain, status, :func:`reason` of the text) -> delivery lines."""

    def add(self, other: ConnectionCounts) -> None:
        for mine, theirs in (
            (self.by_transport, other.by_transport),
            (self.by_domain, other.by_domain),
        ):
            for key, counts in theirs.items():
                into = mine.setdefault(key, [0, 0, 0, 0])
                for column, count in enumerate(counts):
                    into[column] += count
        self.reasons.update(other.reasons)

    def as_json(self) -> dict[str, object]:
        return {
            "by_transport": self.by_transport,
            "by_domain": self.by_domain,
            "reasons": [[*key, count] for key, count in self.reasons.items()],
        }

    @classmethod
    def from_json(cls, data: object) -> ConnectionCounts:
        """Raises ValueError when ``data`` is not what :meth:`as_json` gives."""
        if not isinstance(data, dict):
            raise ValueError("not an object")
        counts = cls()
        for name in ("by_transport", "by_domain"):
            rows = data.get(name)
            if not isinstance(rows, dict):
                raise ValueError(f"{name} is not an object")
            getattr(counts, name).update(
                {str(key): _four_counts(value) for key, value in rows.items()}
            )
        reasons = data.get("reasons")
        if not isinstance(reasons, list):
            raise ValueError("reasons is not a list")
        for entry in reasons:
            if not isinstance(entry, list) or len(entry) != 4:
                raise ValueError("a reason is not [domain, status, text, count]")
            domain, status, text, count = entry
            if status not in _SLOTS or not isinstance(count, int) or count < 0:
                raise ValueError(f"a reason has status {status!r}, count {count!r}")
            counts.reasons[(str(domain), status, str(text))] += count
        return counts


def _four_counts(value: object) -> list[int]:
    if (
        not isinstance(value, list)
        or len(value) != len(COLUMNS)
        or not all(isinstance(count, int) and count >= 0 for count in value)
    ):
        raise ValueError(f"{value!r} is not four counts")
    return list(value)


def count_connections(deliveries: Iterable[Delivery]) -> ConnectionCounts:
    """Outbound SMTP (the ``smtp`` delivery lines; local delivery is left out) per
    Postfix transport and per recipient domain: connections, delivered, deferred,
    bounced; and the deferral and bounce texts, normalised by :func:`reason`.

    Delivered, deferred and bounced count delivery lines, one per recipient and
    attempt, as pflogsumm does: a message deferred three times counts three. A
    connection counts for the transport that opened it and for the domain of the
    first recipient it carried (postfix_log.parse_deliveries says which lines open
    one).
    """
    # Counted per raw text first, normalised after: the loop runs once per delivery
    # line, reason() once per different text.
    by_transport: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    by_domain: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    said: Counter[tuple[str, str, str]] = Counter()
    slots = _SLOTS
    for delivery in deliveries:
        if delivery.process != OUTBOUND:
            continue
        slot = slots.get(delivery.status, 1)
        counts = by_transport[delivery.transport]
        counts[0] += delivery.connection
        counts[slot] += 1
        counts = by_domain[delivery.domain]
        counts[0] += delivery.connection
        counts[slot] += 1
        if slot > 1:
            said[(delivery.domain, delivery.status, delivery.text)] += 1
    normalised: Counter[tuple[str, str, str]] = Counter()
    for (domain, status, text), count in said.items():
        normalised[(domain, status, reason(text))] += count
    return ConnectionCounts(dict(by_transport), dict(by_domain), normalised)


def smtp_out_connections(
    deliveries: Iterable[Delivery],
    transports: Mapping[str, str] | None = None,
    top: int = 10,
    reasons: int = 3,
) -> list[Table]:
    """The connections tables of one run of delivery lines (:func:`connection_tables`)."""
    return connection_tables(count_connections(deliveries), transports, top, reasons)


def connection_tables(
    counts: ConnectionCounts,
    transports: Mapping[str, str] | None = None,
    top: int = 10,
    reasons: int = 3,
) -> list[Table]:
    """Three tables:

    - per transport, or per pool and address when ``transports`` maps transport
      names to them (``{"pw_main_203_0_113_10": "main 203.0.113.10"}``; a transport
      it does not name is shown by its name): connections, delivered, deferred,
      bounced;
    - the same per destination provider (the domains of PROVIDERS grouped, any other
      domain on its own): the ``top`` busiest and one row of ``others``;
    - the ``reasons`` most frequent deferral and bounce texts of each of those rows.
    """
    names = transports or {}
    by_transport = _merged(counts.by_transport, lambda name: names.get(name, name))
    by_provider = _merged(counts.by_domain, provider)
    shown = _busiest(by_provider, top)
    grouped: dict[str, Counter[tuple[str, str]]] = defaultdict(Counter)
    for (domain, status, text), count in counts.reasons.items():
        where = provider(domain)
        grouped[where if where in shown else OTHERS][(status, text)] += count

    first = "pool address" if transports else "transport"
    return [
        Table(
            f"Outbound SMTP by {first}",
            (first, *COLUMNS),
            [(key, *totals) for key, totals in _ordered(by_transport)],
            chart="connections",
        ),
        Table(
            "Outbound SMTP by destination provider",
            ("provider", *COLUMNS),
            _with_others(by_provider, shown),
            chart="delivered",
        ),
        Table(
            "Most frequent deferral and bounce reasons by provider",
            ("provider", "status", "reason", "count"),
            [
                (where, status, text, count)
                for where in [*shown, OTHERS]
                for (status, text), count in sorted(
                    grouped[where].items(), key=lambda item: (-item[1], item[0])
                )[:reasons]
            ],
        ),
    ]


def _merged(totals: dict[str, list[int]], name: Callable[[str], str]) -> dict[str, list[int]]:
    merged: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    for key, counts in totals.items():
        into = merged[name(key)]
        for column, count in enumerate(counts):
            into[column] += count
    return merged


def _ordered(totals: dict[str, list[int]]) -> list[tuple[str, list[int]]]:
    return sorted(totals.items(), key=lambda item: (-item[1][0], -sum(item[1][1:]), item[0]))


def _busiest(totals: dict[str, list[int]], top: int) -> list[str]:
    """The ``top`` rows with the most delivery lines, or all of them when an
    ``others`` row would stand for a single one."""
    ranked = sorted(totals, key=lambda key: (-sum(totals[key][1:]), -totals[key][0], key))
    return ranked if len(ranked) <= top + 1 else ranked[:top]


def _with_others(
    totals: dict[str, list[int]], shown: list[str]
) -> list[tuple[str | int | float, ...]]:
    rows: list[tuple[str | int | float, ...]] = [(key, *totals[key]) for key in shown]
    named = set(shown)
    rest = [counts for key, counts in totals.items() if key not in named]
    if rest:
        rows.append((OTHERS, *(sum(column) for column in zip(*rest, strict=True))))
    return rows


# Each pattern starts with a literal or a class of characters where it can, and runs
# only on texts holding its key character: the regex engine then skips to the places
# where it may match instead of trying each position. The benchmark's 29,000
# different texts take under a second (bench/report_bench.py).
_SAID = re.compile(r"host \S+ said: ")
_CONTINUED = re.compile(r"\d{3}-\d\.\d{1,3}\.\d{1,3} ")
_ANGLED = re.compile(r"<[^<>]*>")
_ADDRESS = re.compile(r"(?<![^\s<>()\[\]])[^\s<>()\[\]@]+@[^\s<>()\[\]]+")
_BRACKETED = re.compile(r"(?<!\S)[^\s\[]*\[[^\]]*\d[^\]]*\](?::\d+)?")
_LOOKED_UP = re.compile(r"name=\S+")
_T = "[A-Za-z0-9._-]"
_WORD = re.compile(
    rf"[0-9](?<!{_T}[0-9])(?={_T}{{4}}){_T}+"
    rf"|[A-Za-z._-](?<!{_T}{_T})(?={_T}{{7}})(?=[A-Za-z._-]*[0-9]){_T}+"
)
"""A whole word with a digit in it: of 5 characters or more when it starts with the
digit, of 8 or more otherwise."""
_RUN = re.compile(r"\d{5}")
_PUNCTUATION = str.maketrans("", "", "._-")


def reason(text: str) -> str:
    """A deferral or bounce text with what varies from message to message taken out,
    so that one cause is one row:

    - ``host mx.example.net[192.0.2.1] said:`` goes: the reply is what matters, and
      a provider answers from many hosts; of the codes that begin each line of a
      reply of several lines (``421-4.7.0``), the first stays;
    - addresses (``<a@example.net>``, ``a@example.net``) become ``<…>``;
    - brackets with a digit in them (an IP address, a server's name and time) become
      ``…``, with the host name before them and the port after them:
      ``connect to mx1.example.net[192.0.2.1]:25:`` becomes ``connect to …:``;
    - ``name=DOMAIN`` of a failed DNS lookup becomes ``name=…``;
    - words of letters and digits of 8 characters or more (queue IDs, tracking IDs),
      runs of 5 digits or more and dotted quads become ``…``; enhanced status codes
      such as 4.7.28 stay;
    - spaces are collapsed, and the text is cut at 100 characters.
    """
    said = _SAID.match(text)
    if said:
        text = text[said.end() :]
    if "-" in text:
        text = _CONTINUED.sub(_first_code_only, text)
    if "<" in text:
        text = _ANGLED.sub("<…>", text)
    if "@" in text:
        text = _ADDRESS.sub("<…>", text)
    if "[" in text:
        text = _BRACKETED.sub("…", text)
    if "name=" in text:
        text = _LOOKED_UP.sub("name=…", text)
    text = " ".join(_WORD.sub(_varying, text).split())
    if len(text) > _REASON_LENGTH:
        text = text[: _REASON_LENGTH - 1] + "…"
    return text


def _first_code_only(found: re.Match[str]) -> str:
    return "" if found.start() else found[0].replace("-", " ", 1)


def _varying(found: re.Match[str]) -> str:
    word = found[0]
    if word.translate(_PUNCTUATION).isdigit():
        return "…" if word.count(".") == 3 or _RUN.search(word) else word
    return "…" if len(word) >= 8 else word
