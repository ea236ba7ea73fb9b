"""The JSON schema of the policy file, generated from the models.

Editors use it while the file is typed (the yaml-language-server modeline at
the top of a policy points at it); the committed copy is tested for drift.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic.json_schema import GenerateJsonSchema

from postwarden.policy.models import Policy

SCHEMA_PATH = Path("policy_schema/postwarden.schema.json")
SCHEMA_ID = "https://postwarden.dev/schema/policy-v1.json"


class _PolicySchema(GenerateJsonSchema):
    def encode_default(self, dft: Any) -> Any:
        # sizes and durations are int subclasses; show them as the file writes them
        if isinstance(dft, int) and type(dft) is not int and not isinstance(dft, bool):
            return str(dft)
        return super().encode_default(dft)


def policy_schema() -> dict[str, Any]:
    schema = Policy.model_json_schema(by_alias=True, schema_generator=_PolicySchema)
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": SCHEMA_ID, **schema}


def schema_text() -> str:
    return json.dumps(policy_schema(), indent=2, sort_keys=True) + "\n"
