"""The period a report covers: the last N (``--since 7d``) or dates (``--from``/``--to``)."""

from __future__ import annotations

import datetime
import time
from dataclasses import dataclass

from postwarden.policy.units import parse_duration


class BadPeriod(ValueError):
    """The period given cannot be read, or holds no time at all."""


@dataclass(frozen=True)
class Period:
    start: float
    end: float
    """Epoch seconds, [start, end)."""

    def describe(self) -> str:
        return f"{_shown(self.start)} to {_shown(self.end)}"


def period_of(
    since: str | None, start: str | None, end: str | None, now: float | None = None
) -> Period:
    """``since`` counts back from now; ``start``/``end`` are ISO dates or times in the
    host's local time. A date alone for ``end`` means the end of that day, so that
    ``--from 2026-12-01 --to 2026-12-07`` covers seven whole days."""
    now = time.time() if now is None else now
    if since is not None and (start is not None or end is not None):
        raise BadPeriod("give --since or --from/--to, not both")
    if start is None and end is None:
        try:
            length = parse_duration(since or "7d")
        except ValueError as error:
            context = getattr(error, "context", None) or {}
            hint = f" ({context['hint']})" if context.get("hint") else ""
            raise BadPeriod(f"--since: {context.get('message', error)}{hint}") from None
        period = Period(now - length, now)
    else:
        period = Period(
            _moment(start, "--from", end_of_day=False) if start else 0.0,
            _moment(end, "--to", end_of_day=True) if end else now,
        )
    if period.end <= period.start:
        raise BadPeriod(f"the period {period.describe()} is empty: it must end after it starts")
    return period


def _moment(text: str, option: str, end_of_day: bool) -> float:
    try:
        moment = datetime.datetime.fromisoformat(text)
    except ValueError:
        raise BadPeriod(
            f"{option} {text!r}: not a date or time (try 2026-12-01 or 2026-12-01T08:00)"
        ) from None
    if end_of_day and len(text) == len("2026-12-01"):
        moment += datetime.timedelta(days=1)
    return moment.timestamp()


def _shown(moment: float) -> str:
    return datetime.datetime.fromtimestamp(moment).astimezone().strftime("%Y-%m-%d %H:%M %Z")
