"""Turn pydantic's validation errors into findings an administrator can act on."""

from __future__ import annotations

import types
import typing
from dataclasses import replace
from typing import Any, Literal, get_args, get_origin

from pydantic import BaseModel
from pydantic_core import ErrorDetails

from postwarden.policy.problems import Finding, Path, dotted
from postwarden.policy.secret_types import SecretRef, SecretValue
from postwarden.policy.suggest import did_you_mean
from postwarden.policy.units import describe

_EXPECTED = {
    "int_type": "a whole number",
    "int_parsing": "a whole number",
    "int_from_float": "a whole number",
    "float_type": "a number",
    "float_parsing": "a number",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "string_type": "text",
    "list_type": "a list",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
    "literal_error": None,
}


KEY_STEP = "[key]"


def convert(errors: list[ErrorDetails], root: type[BaseModel]) -> list[Finding]:
    findings = []
    for error in errors:
        loc: Path = tuple(error["loc"])
        finding = _finding(error, loc, root)
        if loc and loc[-1] == KEY_STEP:  # a mapping key failed: point at the key itself
            finding = replace(finding, point_at="key")
        findings.append(finding)
    return findings


def _finding(error: ErrorDetails, loc: Path, root: type[BaseModel]) -> Finding:
    kind = error["type"]
    value = error.get("input")
    ctx = error.get("ctx") or {}
    data_path = _data_path(loc, root)

    if kind == "extra_forbidden":
        key = str(loc[-1])
        model = model_at(root, loc[:-1])
        allowed = _keys_of(model)
        hint = did_you_mean(key, allowed) or (
            f"allowed here: {', '.join(allowed)}" if allowed else None
        )
        return Finding(data_path, f"unknown key {key!r}", hint, point_at="key")
    if kind == "missing":
        return Finding(data_path[:-1], f"missing required key {str(loc[-1])!r}", point_at="entry")
    if kind == "union_tag_invalid":
        tag = str(ctx.get("tag", ""))
        expected = [t.strip().strip("'") for t in str(ctx.get("expected_tags", "")).split(",")]
        hint = did_you_mean(tag, expected) or f"one of: {', '.join(expected)}"
        discriminator = str(ctx.get("discriminator", "")).strip("'")
        return Finding((*data_path, discriminator), f"unknown kind {tag!r}", hint)
    if kind == "union_tag_not_found":
        discriminator = str(ctx.get("discriminator", "")).strip("'")
        return Finding(data_path, f"missing required key {discriminator!r}", point_at="entry")
    if kind == "literal_error" and loc == ("version",) and value == "1":
        return Finding(
            data_path, "expected the number 1, got the text '1'", "write version: 1 without quotes"
        )
    if kind == "literal_error" and loc == ("version",):
        return Finding(
            data_path,
            f"unsupported policy version {value!r}",
            "this postwarden reads 'version: 1', written as a number",
        )
    if kind == "literal_error":
        expected = _literal_choices(root, loc)
        hint = did_you_mean(str(value), expected) if isinstance(value, str) else None
        shown = repr(value) if isinstance(value, str) else describe(value)
        return Finding(data_path, f"{shown} is not one of: {', '.join(expected)}", hint)
    secret_where_none_goes = kind != "secret" and (kind in _EXPECTED or "message" in ctx)
    if isinstance(value, SecretRef | SecretValue) and secret_where_none_goes:
        return Finding(
            data_path,
            "a !secret value is not allowed here",
            "only passwords and tokens can be secrets",
        )
    if "message" in ctx:  # our own validators: message and hint as written
        path = (*data_path, str(ctx["at"])) if ctx.get("at") else data_path
        return Finding(path, str(ctx["message"]), ctx.get("hint"))
    if kind in _EXPECTED:
        return Finding(
            data_path,
            f"expected {_EXPECTED[kind]}, got {describe(value)}",
            _shorthand_hint(kind, root, loc, value),
        )
    if kind == "too_short" and ctx.get("min_length") == 1:
        return Finding(data_path, "must not be empty")
    if kind == "too_short":
        return Finding(data_path, f"needs at least {ctx.get('min_length')} items")
    if kind in ("greater_than_equal", "greater_than", "less_than_equal", "less_than"):
        words = {
            "greater_than_equal": "at least",
            "greater_than": "more than",
            "less_than_equal": "at most",
            "less_than": "less than",
        }[kind]
        limit = next(iter(ctx.values()), "?")
        return Finding(data_path, f"must be {words} {limit}, got {describe(value)}")
    message = str(error.get("msg", "invalid value"))
    return Finding(data_path, message[:1].lower() + message[1:])


def _shorthand_hint(kind: str, root: type[BaseModel], loc: Path, value: Any) -> str | None:
    """For a plain value where a mapping with one required key belongs, show the mapping."""
    if kind != "model_type" or not isinstance(value, str | int | float):
        return None
    model = model_at(root, loc)
    required = [
        f.alias or n for n, f in (model.model_fields if model else {}).items() if f.is_required()
    ]
    return f"write it as '{required[0]}: {value}'" if len(required) == 1 else None


def _data_path(loc: Path, root: type[BaseModel]) -> Path:
    """The path as the file spells it: without the union tags pydantic inserts."""
    path: list[str | int] = []
    annotation: Any = root
    for step in loc:
        annotation, is_tag = _descend(annotation, step)
        if not is_tag and step != KEY_STEP:
            path.append(step)
    return tuple(path)


def model_at(root: type[BaseModel], loc: Path) -> type[BaseModel] | None:
    annotation: Any = root
    for step in loc:
        annotation, _ = _descend(annotation, step)
    model = _unwrap(annotation)
    return model if isinstance(model, type) and issubclass(model, BaseModel) else None


def _keys_of(model: type[BaseModel] | None) -> list[str]:
    if model is None:
        return []
    return [field.alias or name for name, field in model.model_fields.items()]


def _literal_choices(root: type[BaseModel], loc: Path) -> list[str]:
    annotation: Any = root
    for step in loc:
        annotation, _ = _descend(annotation, step)
    return [str(choice) for choice in _literals(annotation)]


def _literals(annotation: Any) -> list[Any]:
    annotation = _unwrap(annotation)
    if get_origin(annotation) is Literal:
        return list(get_args(annotation))
    if _is_union(annotation):
        return [v for arg in get_args(annotation) for v in _literals(arg)]
    return []


def _unwrap(annotation: Any) -> Any:
    while get_origin(annotation) is typing.Annotated:
        annotation = get_args(annotation)[0]
    if _is_union(annotation):
        args = [a for a in get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return _unwrap(args[0])
    return annotation


def _is_union(annotation: Any) -> bool:
    return get_origin(annotation) in (typing.Union, types.UnionType)


def _descend(annotation: Any, step: Any) -> tuple[Any, bool]:
    """The annotation one step down, and whether the step was a union tag."""
    annotation = _unwrap(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        for name, field in annotation.model_fields.items():
            if step in (name, field.alias):
                return field.annotation, False
        return None, False
    origin = get_origin(annotation)
    if origin is list:
        return get_args(annotation)[0], False
    if origin is dict:
        return get_args(annotation)[0 if step == KEY_STEP else 1], False
    if _is_union(annotation):
        for option in get_args(annotation):
            member = _unwrap(option)
            if (
                isinstance(member, type)
                and issubclass(member, BaseModel)
                and any(
                    step in _literals(field.annotation) for field in member.model_fields.values()
                )
            ):
                return member, True
        return None, False
    return None, False


__all__ = ["convert", "dotted", "model_at"]
