"""What the Ansible roles need to deploy one host: its rendered files by service, and
the few host facts the policy implies (TLS files, DKIM keys, directories).

The collection's action plugin (postwarden.mail.render) is a thin shell around
this module, so that everything it decides is tested without Ansible.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, get_args

from pydantic import ValidationError

from postwarden.policy.load import LoadedPolicy, PolicyInvalid, load_policy
from postwarden.policy.model_errors import convert
from postwarden.policy.problems import Problem, dotted
from postwarden.render.dovecot import VMAIL_USER
from postwarden.render.fail2ban import DOVECOT_LOG, POLICYD_LOG, POSTFIX_LOG
from postwarden.render.guard import UnsafeValue
from postwarden.render.host import HostSettings
from postwarden.render.postfix import tls_paths
from postwarden.render.render import render
from postwarden.render.rspamd import DKIM_KEY_DIR, dkim_selectors
from postwarden.render.tree import RenderedFile, RenderedTree, Service

SERVICES: tuple[str, ...] = get_args(Service)
HOST_SETTINGS_VAR = "postwarden_host_settings"
CHECKER = "/usr/local/libexec/postwarden/check-config"
"""Installed by the roles: checks a candidate file together with the rest of its
service's new configuration, with the service's own tool, before it replaces the live
one (the `validate:` of each copy)."""


class DeployInvalid(Exception):
    """The policy or the host's settings cannot be deployed; ``lines`` say why."""

    def __init__(self, lines: list[str]) -> None:
        self.lines = lines
        super().__init__("\n".join(lines))


@dataclass(frozen=True)
class DeployRequest:
    policy: Path
    secrets: Path | None
    vault_password_file: Path | None
    host_settings: Mapping[str, Any]
    services: tuple[str, ...]


def host_settings_from_vars(data: Mapping[str, Any], host: str) -> HostSettings:
    """The host's settings from its inventory variable; problems name the variable."""
    if not isinstance(data, Mapping):
        raise DeployInvalid([f"{host}: {HOST_SETTINGS_VAR}: expected a mapping of settings"])
    try:
        return HostSettings.model_validate(dict(data))
    except ValidationError as error:
        findings = convert(error.errors(include_url=False), HostSettings)
        lines = []
        for finding in findings:
            hint = f" ({finding.hint})" if finding.hint else ""
            where = dotted((HOST_SETTINGS_VAR, *finding.path))
            lines.append(f"{host}: {where}: {finding.message}{hint}")
        raise DeployInvalid(lines) from None


def load_for_deploy(request: DeployRequest, host: str) -> tuple[LoadedPolicy, HostSettings]:
    unknown = [s for s in request.services if s not in SERVICES]
    if unknown:
        raise DeployInvalid(
            [f"unknown service {', '.join(unknown)} (expected one of: {', '.join(SERVICES)})"]
        )
    problems: list[Problem] = []
    loaded = None
    try:
        loaded = load_policy(request.policy, request.secrets, request.vault_password_file)
    except PolicyInvalid as invalid:
        problems = invalid.problems
    lines = [p.text() for p in problems]
    try:
        settings = host_settings_from_vars(request.host_settings, host)
    except DeployInvalid as invalid:
        lines += invalid.lines
    if lines or loaded is None:
        raise DeployInvalid(lines)
    return loaded, settings


def validate_command(rendered: RenderedFile) -> str:
    """The copy module's ``validate``: %s is the candidate file."""
    table = f" {rendered.postmap}" if rendered.postmap else ""
    return f"{CHECKER} {rendered.service} {rendered.path} %s{table}"


def _file_entry(rendered: RenderedFile) -> dict[str, Any]:
    return {
        "path": rendered.path,
        "content": rendered.content,
        "mode": f"{rendered.mode:04o}",
        "owner": rendered.owner,
        "group": rendered.group,
        "service": rendered.service,
        "postmap": rendered.postmap,
        "validate": validate_command(rendered),
    }


def _directories(files: Iterable[RenderedFile]) -> list[str]:
    """Every directory the files go into; the roles make the ones that are missing."""
    return sorted({str(PurePosixPath(f.path).parent) for f in files})


def deployment(
    loaded: LoadedPolicy, settings: HostSettings, tree: RenderedTree, services: Iterable[str]
) -> dict[str, Any]:
    """The files of the given services, split in public ones (shown in diffs) and secret
    ones (never shown), with the host facts that the roles act on."""
    wanted = set(services)
    files = [tree[path] for path in sorted(tree) if tree[path].service in wanted]
    hostname = settings.name or loaded.policy.server.hostname
    cert, key = tls_paths(loaded.policy, hostname)
    return {
        "warnings": [p.text() for p in loaded.warnings],
        "files": [_file_entry(f) for f in files if not f.secret],
        "secret_files": [_file_entry(f) for f in files if f.secret],
        "tables": [{"path": f.path, "command": f.postmap} for f in files if f.postmap],
        "directories": _directories(files),
        "facts": {
            "hostname": hostname,
            "tls_cert": cert,
            "tls_key": key,
            "dkim_keys": [
                {
                    "domain": domain,
                    "selector": selector,
                    "path": f"{DKIM_KEY_DIR}/{domain}.{selector}.key",
                }
                for domain, selector in dkim_selectors(loaded.policy)
            ],
            "dkim_key_dir": DKIM_KEY_DIR,
            "mail_root": settings.mail_root,
            "vmail_user": VMAIL_USER,
            "log_files": [POSTFIX_LOG, DOVECOT_LOG, POLICYD_LOG],
        },
    }


def render_for_deploy(request: DeployRequest, host: str) -> dict[str, Any]:
    loaded, settings = load_for_deploy(request, host)
    try:
        tree = render(loaded, settings)
    except UnsafeValue as unsafe:
        raise DeployInvalid([f"{host}: {unsafe}"]) from None
    services = request.services or SERVICES
    return deployment(loaded, settings, tree, services)


def build_id() -> str:
    """The version and a digest of the package's files: a host runs the daemon built
    from exactly the code on the controller, also between two releases."""
    from importlib.metadata import version

    package = Path(__file__).resolve().parent
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*")):
        if path.is_file() and path.suffix in {".py", ".j2", ".txt", ".json", ".typed"}:
            digest.update(path.relative_to(package).as_posix().encode() + b"\0")
            digest.update(path.read_bytes())
    return f"{version('postwarden')}-{digest.hexdigest()[:16]}"


if __name__ == "__main__":
    print(build_id())
