"""The most common passwords, from zxcvbn's frequency list (ranked from leaked
password sets; the package keeps it, postwarden only takes its head)."""

from __future__ import annotations

from functools import cache

COMMON_COUNT = 10_000
"""What `forbid_common` promises: the 10,000 most common passwords."""


@cache
def common_passwords() -> frozenset[str]:
    from zxcvbn.frequency_lists import FREQUENCY_LISTS

    ranked = FREQUENCY_LISTS["passwords"]
    if len(ranked) < COMMON_COUNT:  # a packaging fault, not a user's mistake
        raise RuntimeError(f"zxcvbn's password list has {len(ranked)} entries")
    return frozenset(word.lower() for word in ranked[:COMMON_COUNT])


def most_common(count: int) -> list[str]:
    """The ``count`` most common, most common first (what an audit tries)."""
    from zxcvbn.frequency_lists import FREQUENCY_LISTS

    return list(FREQUENCY_LISTS["passwords"][: min(count, COMMON_COUNT)])
