"""Load a policy: read the YAML, resolve secrets, validate the models, run the checks.

``load_policy`` returns a ``LoadedPolicy`` or raises ``PolicyInvalid`` carrying
every problem at once, each with file, line, column and dotted path.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter, ValidationError

from postwarden.gc_pause import cyclic_gc_paused
from postwarden.policy.checks import run_checks
from postwarden.policy.model_errors import convert
from postwarden.policy.models import SECTIONS, Policy
from postwarden.policy.placement import place
from postwarden.policy.problems import Finding, Problem, errors, sort_problems
from postwarden.policy.secrets import Secrets
from postwarden.policy.secrets_file import load_secrets
from postwarden.policy.yaml_source import parse, yaml_findings

DEFAULT_SECRETS_NAME = "secrets.yml"
REQUIRED_SECTIONS = ("server", "domains")


@dataclass
class LoadedPolicy:
    policy: Policy
    secrets: Secrets
    policy_file: str
    warnings: list[Problem] = field(default_factory=list)
    policy_text: str = ""
    """The policy file as written, for the hosts that read it themselves."""


class PolicyInvalid(Exception):
    """The policy cannot be used; ``problems`` holds every error and warning found."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = sort_problems(problems)
        super().__init__(f"{len(errors(self.problems))} error(s) in the policy")


def default_secrets_path(policy_path: Path) -> Path:
    return policy_path.parent / DEFAULT_SECRETS_NAME


def load_policy(
    policy_path: Path | str,
    secrets_path: Path | str | None = None,
    vault_password_file: Path | str | None = None,
) -> LoadedPolicy:
    with cyclic_gc_paused():
        return _load_policy(Path(policy_path), secrets_path, vault_password_file)


def _load_policy(
    policy_path: Path,
    secrets_path: Path | str | None,
    vault_password_file: Path | str | None,
) -> LoadedPolicy:
    explicit_secrets = secrets_path is not None
    secrets_file = Path(secrets_path) if secrets_path else default_secrets_path(policy_path)
    vault_file = Path(vault_password_file) if vault_password_file else None
    name = str(policy_path)

    try:
        raw = policy_path.read_bytes()
    except OSError as error:
        reason = error.strerror or type(error).__name__
        message = f"cannot read the policy file: {reason}"
        raise PolicyInvalid([Problem(name, 1, 1, "", message)]) from None
    if raw.lstrip().startswith(b"$ANSIBLE_VAULT;"):
        raise PolicyInvalid(
            [
                Problem(
                    name,
                    1,
                    1,
                    "",
                    "the policy file is encrypted with ansible-vault",
                    "keep policy.yml readable for review; put secrets in secrets.yml",
                )
            ]
        )
    document = parse(raw)
    secrets = load_secrets(secrets_file, explicit_secrets, vault_file)
    findings = yaml_findings(document, "policy") + secrets.findings

    policy = None
    if document.root is None and not document.problems:
        findings.append(
            Finding(
                (),
                "the policy file is empty",
                "start from the example policy; server and domains are required",
                at=(0, 0),
            )
        )
    elif document.root is not None and not isinstance(document.data, dict):
        findings.append(
            Finding(
                (), "the policy must be a mapping of sections", f"sections: {', '.join(SECTIONS)}"
            )
        )
    elif document.root is not None:
        policy, model_findings = _validate(document.data, secrets.secrets)
        spoiled = [p.path for p in document.problems if p.spoils_value]
        findings += [f for f in model_findings if not _under_any(f.path, spoiled)]

    sources = {
        "policy": (name, document),
        "secrets": (secrets.secrets.path or "", secrets.document),
    }
    problems = place(findings, sources)
    if errors(problems) or policy is None:
        raise PolicyInvalid(problems)
    return LoadedPolicy(policy, secrets.secrets, name, sort_problems(problems), raw.decode("utf-8"))


def _under_any(path: tuple[str | int, ...], prefixes: list[tuple[str | int, ...]]) -> bool:
    return any(path[: len(prefix)] == prefix for prefix in prefixes)


def _validate(data: dict[str, Any], secrets: Secrets) -> tuple[Policy | None, list[Finding]]:
    context = {"secrets": secrets}
    try:
        policy = Policy.model_validate(data, context=context)
    except ValidationError as error:
        findings = convert(error.errors(include_url=False), Policy)
        broken = {f.path[0] for f in findings if f.path} | {
            s for s in REQUIRED_SECTIONS if s not in data
        }
        partial = _partial(data, broken, context)  # adds sections that fail on their own
        valid = {s for s in SECTIONS if s not in broken}
        findings += run_checks(partial, secrets, valid)
        return None, findings
    return policy, run_checks(policy, secrets, set(SECTIONS))


def _partial(data: dict[str, Any], broken: set[Any], context: dict[str, Any]) -> Policy:
    """A policy made of the sections that validated, so that their checks can still run."""
    values: dict[str, Any] = {}
    for name, info in Policy.model_fields.items():
        if name in broken or name not in data:
            continue
        assert info.annotation is not None
        try:
            values[name] = TypeAdapter(info.annotation).validate_python(data[name], context=context)
        except ValidationError:
            broken.add(name)
    return Policy.model_construct(**values)
