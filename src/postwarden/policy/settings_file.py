"""Read a small YAML settings file (host variables, daemon settings) into a model,
with the same positioned errors as the policy."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ValidationError

from postwarden.policy.load import PolicyInvalid
from postwarden.policy.model_errors import convert
from postwarden.policy.placement import place
from postwarden.policy.problems import Finding, Problem, errors
from postwarden.policy.yaml_source import parse, yaml_findings

M = TypeVar("M", bound=BaseModel)


def load_settings_file(path: Path, model: type[M], inventory_key: str | None = None) -> M:
    """``inventory_key``: when the file's mapping has this key (an inventory's host_vars
    file, which holds other variables too), the settings are the mapping under it."""
    name = str(path)
    try:
        raw = path.read_bytes()
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise PolicyInvalid([Problem(name, 1, 1, "", f"cannot read {name}: {reason}")]) from None
    document = parse(raw)
    findings = yaml_findings(document, "settings")
    data = document.data if document.data is not None else {}
    prefix: tuple[str, ...] = ()
    if inventory_key is not None and isinstance(data, dict) and inventory_key in data:
        data, prefix = data[inventory_key] or {}, (inventory_key,)
    result = None
    if not isinstance(data, dict):
        findings.append(Finding(prefix, "expected a mapping of settings", source="settings"))
    elif not findings:
        try:
            result = model.model_validate(data)
        except ValidationError as error:
            findings += [
                replace(f, path=(*prefix, *f.path), source="settings")
                for f in convert(error.errors(include_url=False), model)
            ]
    problems = place(findings, {"settings": (name, document)})
    if errors(problems) or result is None:
        raise PolicyInvalid(problems)
    return result
