"""postwarden-policyd: its settings, and the policy with only the secrets it needs.

The daemon reads the policy with the same loader as the command line. Its
secrets file holds the values the policy references (relay password, tokens) and
when each password was set, never the users' password hashes: the daemon has no
use for them.
"""

from __future__ import annotations

import time
from urllib.parse import urlsplit

import yaml

from postwarden.policy.models import Policy
from postwarden.policy.secrets import PASSWORD_SET, TIME_FORMAT, Secrets
from postwarden.policyd.settings import SETTINGS_PATH, PolicydSettings
from postwarden.render.host import HostSettings
from postwarden.render.templating import header
from postwarden.render.tree import RenderedFile

DAEMON_USER = "postwarden"
DAEMON_GROUP = "postwarden"


def policyd_settings(host: HostSettings) -> PolicydSettings:
    return PolicydSettings(
        listen=[host.policyd_listen],
        metrics_listen=host.policyd_metrics_listen,
        socketmap_listen=host.policyd_socketmap_listen if host.runtime_pools else None,
        store=host.policyd_store,
        redis_url=host.redis_url,
        fail_mode=host.policyd_fail_mode,
        mynetworks=host.mynetworks,
        dnsbl_zones=host.dnsbl_zones,
        dnsbl_nameserver=host.dnsbl_nameserver,
        dnsbl_interval=host.dnsbl_interval,
    )


def named_secrets(secrets: Secrets) -> dict[str, str]:
    """Every named secret; password hashes stay out."""
    return dict(sorted(secrets.values.items()))


def render_policyd(
    policy: Policy, secrets: Secrets, host: HostSettings, source: str, policy_text: str
) -> list[RenderedFile]:
    settings = policyd_settings(host)
    dump = yaml.dump(settings.model_dump(mode="json"), Dumper=yaml.CSafeDumper, sort_keys=False)
    values: dict[str, object] = dict(named_secrets(secrets))
    # not secret, but kept with them: when each password was set, for max_age and the
    # audit on the host (whose hashes are Dovecot's, never in this file)
    set_at = {
        address: time.strftime(TIME_FORMAT, time.gmtime(moment))
        for address, moment in sorted(secrets.password_set.items())
        if address in policy.users
    }
    if set_at:
        values[PASSWORD_SET] = set_at
    secret_values = yaml.dump(values, Dumper=yaml.CSafeDumper, sort_keys=True) if values else ""
    # a Redis password in the URL makes the settings a secret
    private = bool(settings.redis_url and urlsplit(settings.redis_url).password)
    return [
        RenderedFile(
            SETTINGS_PATH,
            header(source) + dump,
            "postwarden-policyd",
            mode=0o640 if private else 0o644,
            group=DAEMON_GROUP if private else "root",
        ),
        RenderedFile(settings.policy, header(source) + policy_text, "postwarden-policyd"),
        RenderedFile(
            settings.secrets,
            header(source) + secret_values,
            "postwarden-policyd",
            mode=0o640,
            group=DAEMON_GROUP,
        ),
    ]
