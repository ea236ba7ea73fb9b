"""Load a policy: read the YAML, resolve secrets, validate the models, run the checks.

``load_policy`` returns a ``LoadedPolicy`` or raises ``PolicyInvalid`` carrying
every problem at once, each with file, line, column and dotted path.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter, ValidationError
from yaml.nodes import CollectionNode

from postwarden.policy.checks import run_checks
from postwarden.policy.model_errors import convert
from postwarden.policy.models import SECTIONS, Policy
from postwarden.policy.problems import Finding, Problem, dotted, errors, sort_problems
from postwarden.policy.secrets import Secrets
from postwarden.policy.secrets_file import SecretsSource, load_secrets
from postwarden.policy.yaml_source import NodeIndex, YamlDocument, parse, yaml_findings

DEFAULT_SECRETS_NAME = "secrets.yml"
REQUIRED_SECTIONS = ("server", "domains")


@dataclass
class LoadedPolicy:
    policy: Policy
    secrets: Secrets
    policy_file: str
    warnings: list[Problem] = field(default_factory=list)


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
    with _cyclic_gc_paused():
        return _load_policy(Path(policy_path), secrets_path, vault_password_file)


@contextmanager
def _cyclic_gc_paused() -> Iterator[None]:
    """Loading makes millions of small containers and no reference cycles; the cyclic
    collector would rescan the growing heap again and again (3x the load time at 100k
    users). Reference counting still frees everything."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


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

    problems = _place(findings, name, document, secrets)
    if errors(problems) or policy is None:
        raise PolicyInvalid(problems)
    return LoadedPolicy(policy, secrets.secrets, name, sort_problems(problems))


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


def _place(
    findings: list[Finding], name: str, document: YamlDocument, secrets: SecretsSource
) -> list[Problem]:
    """Give every finding its file, line and column."""
    indexes = {"policy": NodeIndex(document.root)}
    if secrets.document is not None:
        indexes["secrets"] = NodeIndex(secrets.document.root)
    files = {"policy": name, "secrets": secrets.secrets.path or ""}
    problems = []
    for finding in findings:
        line, column = finding.at or _position(indexes.get(finding.source), finding)
        problems.append(
            Problem(
                files[finding.source],
                line + 1,
                column + 1,
                dotted(finding.path),
                finding.message,
                finding.hint,
                finding.severity,
            )
        )
    return problems


def _position(index: NodeIndex | None, finding: Finding) -> tuple[int, int]:
    if index is None or index.root is None:
        return 0, 0
    steps = list(index.walk(finding.path))
    if not steps:
        mark = index.root.start_mark
        return mark.line, mark.column
    complete = len(steps) == len(finding.path)
    key_node, value_node = steps[-1]
    node = value_node
    block = isinstance(value_node, CollectionNode) and not value_node.flow_style
    if not complete or finding.point_at != "value" or block:
        # a key itself, a missing key, or a whole block mapping or list (which
        # starts on the next line): point at the entry by its key where it has one
        node = key_node or value_node
    return node.start_mark.line, node.start_mark.column
