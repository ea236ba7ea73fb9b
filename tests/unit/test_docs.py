"""The README's policy reference names every key the models accept."""

from __future__ import annotations

import re
from typing import Any, get_args

from pydantic import BaseModel

from postwarden.policy.models import Policy
from postwarden.policy.models.events import EVENT_KINDS
from postwarden.policy.models.reports import ReportKind
from tests.conftest import ROOT

README = (ROOT / "README.md").read_text(encoding="utf-8")


def _models(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in get_args(annotation) for m in _models(arg)]


def _keys(model: type[BaseModel], prefix: str, seen: set[type[BaseModel]]) -> list[str]:
    keys = []
    for name, field in model.model_fields.items():
        key = f"{prefix}{field.alias or name}"
        keys.append(key)
        for sub in _models(field.annotation):
            if sub not in seen:
                keys += _keys(sub, f"{key}.", seen | {sub})
    return keys


def test_every_key_is_documented() -> None:
    missing = []
    for key in _keys(Policy, "", {Policy}):
        leaf = re.escape(key.split(".")[-1])
        if not re.search(rf"`([a-z_\[\].]*\.)?{leaf}(\.[a-z_\[\].]*)?:?`", README):
            missing.append(key)
    assert missing == []


def test_every_event_kind_and_report_kind_is_documented() -> None:
    for kind in (*EVENT_KINDS, *get_args(ReportKind)):
        assert f"`{kind}`" in README, kind


def test_readme_names_the_two_commands() -> None:
    assert "scripts/demo" in README
    assert "scripts/test" in README
