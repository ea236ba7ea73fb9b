"""What this version accepts in a policy but does not enforce yet.

A key here is valid, so that a policy written for a later version still loads,
but nothing acts on it: `validate` warns about every one a policy sets, so that
nobody believes it is on. tests/unit/test_key_coverage.py ties this list to the
list of every key and the test that proves its effect: a key is in exactly one.
"""

from __future__ import annotations

from collections.abc import Iterator

from postwarden.policy.models import Policy
from postwarden.policy.problems import Finding

NOT_ENFORCED_KEYS: dict[tuple[str, ...], str] = {
    ("password_policy", "max_age"): (
        "the password audit reports expired passwords, but they still work at login"
    ),
}
"""Keys (``*`` for a name the administrator chooses) and why they do nothing yet."""

NOT_ENFORCED_EVENTS: dict[str, str] = {}
"""Event kinds that nothing raises yet."""

_SUFFIX = "not enforced by this version of postwarden"


def not_enforced(policy: Policy) -> Iterator[Finding]:
    """A warning for each setting the policy declares that this version ignores."""
    settings = policy.password_policy
    if settings.max_age is not None:
        yield _warning(("password_policy", "max_age"))
    for index, event in enumerate(policy.events):
        reason = NOT_ENFORCED_EVENTS.get(event.on)
        if reason is not None:
            yield Finding(
                ("events", index, "on"),
                f"{event.on} is never raised by this version of postwarden: {reason}",
                "keep it for a later version, or remove it",
                severity="warning",
            )


def _warning(path: tuple[str, ...]) -> Finding:
    return Finding(
        path,
        f"{_SUFFIX}: {NOT_ENFORCED_KEYS[path]}",
        "keep it for a later version, or remove it",
        severity="warning",
    )
