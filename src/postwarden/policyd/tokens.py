"""Who may call the daemon's HTTP side: a token per caller, each in a file of its own.

The deploy makes them on the host (roles/postwarden_common/files/make-tokens), in a
directory readable by root and the daemon's group only:

- ``admin``: the operator's commands (``postwarden pool ...``), run as root; it
  may do everything;
- ``dovecot``: Dovecot's auth policy requests (sent as a header from a root-only
  file that dovecot.conf includes);
- ``alertmanager``: the Alertmanager bridge (read by Alertmanager from a file of
  its group);
- ``rspamd``: rspamd's verdicts on outbound mail (our rule in rspamd reads it from a
  file only its group may read).

A caller sends ``Authorization: Bearer TOKEN``. Prometheus' ``/metrics`` needs no
token. A scope whose file is missing accepts the admin token only; with no files at
all, nothing but the metrics answers.
"""

from __future__ import annotations

import hmac
import logging
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger("postwarden.policyd")

SCOPES = ("admin", "dovecot", "alertmanager", "rspamd")
TOKENS_DIR = "/etc/postwarden/tokens"


@dataclass(frozen=True)
class Tokens:
    by_scope: dict[str, str] = field(default_factory=dict)

    @classmethod
    def read(cls, directory: str | None) -> Tokens:
        found: dict[str, str] = {}
        if directory is None:
            return cls(found)
        for scope in SCOPES:
            path = Path(directory) / scope
            try:
                token = path.read_text(encoding="ascii").strip()
            except FileNotFoundError:
                continue
            except (OSError, UnicodeDecodeError) as error:
                log.warning("cannot read the %s token at %s: %s", scope, path, type(error).__name__)
                continue
            if token:
                found[scope] = token
        return cls(found)

    def allows(self, authorization: str | None, scope: str) -> bool:
        """Whether the header carries the token of ``scope``, or the admin's."""
        if not authorization or not authorization.startswith("Bearer "):
            return False
        given = authorization.removeprefix("Bearer ").strip().encode()
        return any(
            hmac.compare_digest(given, self.by_scope[name].encode())
            for name in dict.fromkeys((scope, "admin"))
            if name in self.by_scope
        )
