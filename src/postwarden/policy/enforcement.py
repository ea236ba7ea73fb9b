"""What this version accepts in a policy but does not enforce yet.

A key here is valid, so that a policy written for a later version still loads,
but nothing acts on it: `validate` warns about every one a policy sets, so that
nobody believes it is on. tests/unit/test_key_coverage.py ties this list to the
list of every key and the test that proves its effect: a key is in exactly one.
"""

from __future__ import annotations

from collections.abc import Iterator

from postwarden.policy.models import Policy
from postwarden.policy.models.base import PolicyModel
from postwarden.policy.problems import Finding

NOT_ENFORCED_KEYS: dict[tuple[str, ...], str] = {}
"""Keys (``*`` for a name the administrator chooses) and why they do nothing yet."""

NOT_ENFORCED_EVENTS: dict[str, str] = {}
"""Event kinds that nothing raises yet."""

_SUFFIX = "not enforced by this version of postwarden"


def not_enforced(policy: Policy) -> Iterator[Finding]:
    """A warning for each setting the policy declares that this version ignores."""
    for path in NOT_ENFORCED_KEYS:
        if _is_set(policy, path):
            yield _warning(path)
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


def _is_set(policy: Policy, path: tuple[str, ...]) -> bool:
    """Whether the policy sets the key at ``path`` (a model field at each step)."""
    node: object = policy
    for name in path:
        if not isinstance(node, PolicyModel) or name not in node.model_fields_set:
            return False
        node = getattr(node, name)
    return True
