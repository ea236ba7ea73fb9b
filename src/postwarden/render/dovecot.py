"""Dovecot: logins for IMAP and for Postfix (SASL), LMTP delivery, quotas.

Passwords and mailboxes live in two passwd-files: ``passwords`` (the passdb,
readable by Dovecot only) lists the users who may log in, which leaves out
disabled users and users without a password hash; ``users`` (the userdb) lists
every mailbox with its quota, so that mail still reaches a disabled user.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from postwarden.policy.checks import hash_scheme_of
from postwarden.policy.models import Policy
from postwarden.policy.secrets import Secrets
from postwarden.render import guard
from postwarden.render.host import HostSettings
from postwarden.render.postfix import DOVECOT_AUTH, DOVECOT_LMTP, tls_paths
from postwarden.render.templating import header, render_template
from postwarden.render.tree import RenderedFile

DOVECOT_DIR = "/etc/dovecot"
DATA_DIR = "/etc/dovecot/postwarden"
POSTFIX_SPOOL = "/var/spool/postfix"
VMAIL_USER = "vmail"
LOG_PATH = "/var/log/dovecot.log"
POLICY_TOKEN_FILE = f"{DATA_DIR}/policy-token.conf"
"""Root's only; roles/postwarden_common/files/make-tokens writes it."""

_SCHEME_PREFIX = {
    "argon2id": "{ARGON2ID}",
    "bcrypt": "{BLF-CRYPT}",
    "sha512-crypt": "{SHA512-CRYPT}",
}


@dataclass(frozen=True)
class DovecotSettings:
    hostname: str
    postmaster: str
    ssl_cert: str
    ssl_key: str
    mail_root: str
    auth_socket: str
    lmtp_socket: str
    passwords: str
    users: str
    log_path: str
    policy_url: str
    policy_nonce: str
    reject_without_policy: str
    """yes when the daemon's fail mode is closed: no login while it cannot answer."""
    policy_token: str
    """The file with the header that carries Dovecot's token (made on the host)."""


def with_scheme(password_hash: str) -> str:
    """Dovecot needs the scheme in front of the hash: {ARGON2ID}$argon2id$..."""
    if password_hash.startswith("{"):
        return password_hash
    scheme = hash_scheme_of(password_hash)
    return _SCHEME_PREFIX[scheme] + password_hash if scheme else password_hash


def password_entries(policy: Policy, secrets: Secrets) -> list[tuple[str, str]]:
    return [
        (address, with_scheme(secrets.password_hashes[address]))
        for address in sorted(policy.users)
        if not policy.users[address].disabled and address in secrets.password_hashes
    ]


def user_entries(policy: Policy) -> list[tuple[str, list[str]]]:
    """passwd-file userdb lines: the quota as an extra field where one is set."""
    entries = []
    for address in sorted(policy.users):
        quota = policy.users[address].quota
        extra = [f"userdb_quota_rule=*:storage={int(quota)}B"] if quota is not None else []
        entries.append((address, extra))
    return entries


def render_dovecot(
    policy: Policy, secrets: Secrets, host: HostSettings, source: str
) -> list[RenderedFile]:
    hostname = host.name or policy.server.hostname
    cert, key = tls_paths(policy, hostname)
    settings = DovecotSettings(
        hostname=hostname,
        postmaster=policy.server.postmaster,
        ssl_cert=cert,
        ssl_key=key,
        mail_root=host.mail_root,
        auth_socket=f"{POSTFIX_SPOOL}/{DOVECOT_AUTH}",
        lmtp_socket=f"{POSTFIX_SPOOL}/{DOVECOT_LMTP}",
        passwords=f"{DATA_DIR}/passwords",
        users=f"{DATA_DIR}/users",
        log_path=LOG_PATH,
        policy_url=f"http://{host.policyd_metrics_listen}/dovecot/",
        # Dovecot insists on a nonce; it salts password hashes that are never sent here
        policy_nonce=hashlib.sha256(f"postwarden:{hostname}".encode()).hexdigest()[:32],
        reject_without_policy="yes" if host.policyd_fail_mode == "closed" else "no",
        policy_token=POLICY_TOKEN_FILE,
    )
    passwords = "".join(
        guard.passwd_line([user, hashed], "the Dovecot passdb")
        for user, hashed in password_entries(policy, secrets)
    )
    # user:password:uid:gid:gecos:home:shell:extra — uid, gid and home come from the
    # userdb's default_fields, the password from the passdb
    users = "".join(
        guard.passwd_line([user, "", "", "", "", "", "", ""], "the Dovecot userdb", extra)
        for user, extra in user_entries(policy)
    )
    return [
        RenderedFile(
            f"{DOVECOT_DIR}/dovecot.conf",
            render_template("dovecot/dovecot.conf.j2", source, s=settings, vmail=VMAIL_USER),
            "dovecot",
        ),
        RenderedFile(
            settings.passwords,
            header(source) + passwords,
            "dovecot",
            mode=0o640,
            group="dovecot",
        ),
        RenderedFile(settings.users, header(source) + users, "dovecot"),
    ]
