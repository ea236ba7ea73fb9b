"""pydantic models of the policy file, one module per section."""

from postwarden.policy.models.policy import SECTIONS, Policy

__all__ = ["SECTIONS", "Policy"]
