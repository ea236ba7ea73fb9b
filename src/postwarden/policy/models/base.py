"""The base of every policy model."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, model_validator


class PolicyModel(BaseModel):
    """Unknown keys are errors; YAML already typed every scalar, so no coercion."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        frozen=True,
        populate_by_name=True,
        use_attribute_docstrings=True,
    )


class EntryModel(PolicyModel):
    """An entry whose settings are all optional: `example.org:` with nothing is allowed."""

    @model_validator(mode="before")
    @classmethod
    def _nothing_means_defaults(cls, data: Any) -> Any:
        return {} if data is None else data
