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
from typing import Any

from pydantic import ValidationError

from postwarden.policy.load import LoadedPolicy, PolicyInvalid, load_policy
from postwarden.policy.model_errors import convert
from postwarden.policy.problems import Problem, dotted
from postwarden.render.dovecot import VMAIL_USER
from postwarden.render.fail2ban import DOVECOT_LOG, POLICYD_LOG, POSTFIX_LOG
from postwarden.render.guard import UnsafeValue
from postwarden.render.host import HostSettings
from postwarden.render.policyd import DAEMON_USER
from postwarden.render.postfix import tls_paths
from postwarden.render.render import render
from postwarden.render.reports import timers
from postwarden.render.rspamd import DKIM_KEY_DIR, dkim_selectors
from postwarden.render.tree import RenderedFile, RenderedTree, Service

HOST_SETTINGS_VAR = "postwarden_host_settings"


@dataclass(frozen=True)
class Role:
    """One of the collection's roles: the services whose files it puts in place, and the
    Debian packages those need."""

    services: tuple[Service, ...]
    packages: tuple[str, ...]


ROLES: dict[str, Role] = {
    # procps: the units reload with /bin/kill
    "policyd": Role(("postwarden-policyd",), ("python3-venv", "python3-pip", "procps")),
    "rspamd": Role(("rspamd",), ("rspamd",)),
    "postfix": Role(("postfix",), ("postfix",)),
    "dovecot": Role(("dovecot",), ("dovecot-core", "dovecot-imapd", "dovecot-lmtpd")),
    "fail2ban": Role(("fail2ban",), ("fail2ban", "nftables")),
    "monitoring": Role(
        ("prometheus", "alertmanager"),
        ("prometheus", "prometheus-alertmanager", "prometheus-node-exporter", "procps"),
    ),
}
MTA_ROLES = ("policyd", "rspamd", "postfix", "dovecot", "fail2ban")
GROUP_ROLES: dict[str, tuple[str, ...]] = {
    "mail": (*MTA_ROLES, "monitoring"),
    "mx": MTA_ROLES,
    "submission": MTA_ROLES,
    "monitoring": ("monitoring",),
}
"""The roles site.yml runs for each inventory group."""
CHECKED_BY_ITS_ROLE = ("postwarden-policyd",)
"""Its check runs the daemon's own new build, which its role installs; the controller
has already loaded its policy and settings with the same code."""
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
    roles: tuple[str, ...] = ()
    """The roles whose files are wanted; none named: those of ``groups``."""
    groups: tuple[str, ...] = ()
    """The host's inventory groups; with no roles and no known group, every role."""

    def wanted_roles(self) -> tuple[str, ...]:
        if self.roles:
            return self.roles
        from_groups = [role for group in self.groups for role in GROUP_ROLES.get(group, ())]
        return tuple(dict.fromkeys(from_groups)) or tuple(ROLES)


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
    unknown = [r for r in request.roles if r not in ROLES]
    if unknown:
        raise DeployInvalid(
            [f"unknown role {', '.join(unknown)} (expected one of: {', '.join(ROLES)})"]
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


def host_facts(loaded: LoadedPolicy, settings: HostSettings) -> dict[str, Any]:
    """What the roles act on besides files: certificates, DKIM keys, directories, logs."""
    hostname = settings.name or loaded.policy.server.hostname
    cert, key = tls_paths(loaded.policy, hostname)
    return {
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
        # the policyd role enables these and removes any other report timer
        "report_timers": timers(loaded.policy),
        "mail_root": settings.mail_root,
        "vmail_user": VMAIL_USER,
        # they name clients and logins: readable by their writers and the group adm only
        "log_files": [
            {"path": POSTFIX_LOG, "owner": "root", "group": "adm", "mode": "0640"},
            {"path": DOVECOT_LOG, "owner": "root", "group": "adm", "mode": "0640"},
            {"path": POLICYD_LOG, "owner": DAEMON_USER, "group": "adm", "mode": "0640"},
        ],
    }


def role_part(files: list[RenderedFile], role: Role, facts: dict[str, Any]) -> dict[str, Any]:
    """One role's files, split in public ones (shown in diffs) and secret ones (never
    shown), with its packages and the host facts."""
    return {
        "files": [_file_entry(f) for f in files if not f.secret],
        "secret_files": [_file_entry(f) for f in files if f.secret],
        "tables": [{"path": f.path, "command": f.postmap} for f in files if f.postmap],
        "directories": _directories(files),
        "packages": list(role.packages),
        "facts": facts,
    }


def staging(files: list[RenderedFile]) -> dict[str, Any]:
    """Every new file of the host, staged together, and the arguments of the one check of
    every service's new set (check-config --all) before any file goes live."""
    services = list(dict.fromkeys(f.service for f in files if f.service not in CHECKED_BY_ITS_ROLE))
    tables = [arg for f in files if f.postmap for arg in ("--table", f"{f.postmap}:{f.path}")]
    return {
        "files": [{"path": f.path, "content": f.content} for f in files],
        "directories": _directories(files),
        "check_args": [*tables, *services],
    }


def deployment(
    loaded: LoadedPolicy, settings: HostSettings, tree: RenderedTree, roles: Iterable[str]
) -> dict[str, Any]:
    """The host's files by role, staged all together for the check across services."""
    facts = host_facts(loaded, settings)
    parts: dict[str, Any] = {}
    every_file: list[RenderedFile] = []
    for name in roles:
        role = ROLES[name]
        files = [tree[path] for path in sorted(tree) if tree[path].service in role.services]
        parts[name] = role_part(files, role, facts)
        every_file += files
    packages = [p for name in roles for p in ROLES[name].packages]
    return {
        "warnings": [p.text() for p in loaded.warnings],
        "roles": parts,
        "packages": list(dict.fromkeys(packages)),
        "facts": {**facts, "tls": any(n in parts for n in ("postfix", "dovecot"))},
        "stage": staging(every_file),
        "has_secrets": any(f.secret for f in every_file),
    }


def render_for_deploy(request: DeployRequest, host: str) -> dict[str, Any]:
    loaded, settings = load_for_deploy(request, host)
    try:
        tree = render(loaded, settings)
    except UnsafeValue as unsafe:
        raise DeployInvalid([f"{host}: {unsafe}"]) from None
    return deployment(loaded, settings, tree, request.wanted_roles())


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
