"""Every key of the policy is listed in tests/key_coverage.yml with the tests that show
its effect, or as not enforced; the not enforced ones are exactly those `validate`
warns about (postwarden.policy.enforcement). A new key without a test fails here."""

from __future__ import annotations

import ast
import types
from collections.abc import Iterator
from functools import cache
from typing import Annotated, Any, Union, get_args, get_origin

import yaml
from pydantic import BaseModel

from postwarden.policy.enforcement import NOT_ENFORCED_EVENTS, NOT_ENFORCED_KEYS
from postwarden.policy.models import Policy
from postwarden.policy.models.events import EVENT_KINDS
from tests.conftest import ROOT

COVERAGE: dict[str, Any] = yaml.safe_load((ROOT / "tests" / "key_coverage.yml").read_text())
NOT_ENFORCED = "not enforced"


def _unwrap(annotation: Any) -> Any:
    while get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    return annotation


def _keys(model: type[BaseModel], prefix: str) -> Iterator[tuple[str, bool]]:
    """(dotted key, has keys below it) for every key of the model."""
    for name, field in model.model_fields.items():
        path = f"{prefix}.{field.alias or name}" if prefix else field.alias or name
        below = list(_below(field.annotation, path))
        yield path, bool(below)
        yield from below


def _below(annotation: Any, path: str) -> Iterator[tuple[str, bool]]:
    annotation = _unwrap(annotation)
    origin = get_origin(annotation)
    if origin in (Union, types.UnionType):
        for member in get_args(annotation):
            yield from _below(member, path)
    elif origin is dict:
        yield from _below(get_args(annotation)[1], f"{path}.*")
    elif origin is list:
        yield from _below(get_args(annotation)[0], f"{path}[]")
    elif isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield from _keys(annotation, path)


def leaf_keys() -> set[str]:
    keys = {key for key, has_children in _keys(Policy, "") if not has_children}
    keys.discard("events[].on")
    return keys | {f"events[].on={kind}" for kind in EVENT_KINDS}


@cache
def _test_names(path: str) -> frozenset[str]:
    tree = ast.parse((ROOT / path).read_text())
    return frozenset(
        node.name
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.name.startswith("test_")
    )


def test_every_key_is_listed_once() -> None:
    assert sorted(leaf_keys() - set(COVERAGE)) == [], "keys with no test listed"
    assert sorted(set(COVERAGE) - leaf_keys()) == [], "listed keys the policy does not have"


def test_every_listed_test_exists() -> None:
    missing = []
    for key, tests in COVERAGE.items():
        if tests == NOT_ENFORCED:
            continue
        assert isinstance(tests, list), f"{key}: list its tests, or 'not enforced'"
        assert tests, f"{key}: list its tests, or 'not enforced'"
        for test in tests:
            path, _, name = test.partition("::")
            if not (ROOT / path).is_file() or name not in _test_names(path):
                missing.append(f"{key}: {test}")
    assert missing == []


def test_what_is_not_enforced_is_exactly_what_validate_warns_about() -> None:
    listed = {key for key, tests in COVERAGE.items() if tests == NOT_ENFORCED}
    warned = {".".join(key) for key in NOT_ENFORCED_KEYS} & leaf_keys()
    warned |= {f"events[].on={kind}" for kind in NOT_ENFORCED_EVENTS}
    assert listed == warned
