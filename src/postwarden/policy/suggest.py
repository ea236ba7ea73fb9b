"""'Did you mean ...?' hints for misspelled keys and names."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def closest(word: str, candidates: Iterable[str]) -> str | None:
    choices = [c for c in candidates if isinstance(c, str)]
    matches = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    if matches:
        return matches[0]
    lowered = word.lower()
    return next((c for c in choices if c.lower() == lowered), None)


def did_you_mean(word: str, candidates: Iterable[str]) -> str | None:
    match = closest(word, candidates)
    return f"did you mean {match!r}?" if match else None
