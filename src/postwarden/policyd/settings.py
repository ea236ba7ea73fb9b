"""The daemon's own settings file (/etc/postwarden/policyd.yml): where it listens,
where it keeps state, and where the policy it enforces is."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from postwarden.policy.endpoints import Listen, Nameserver, TcpListen, check_redis_url
from postwarden.policy.models.base import PolicyModel
from postwarden.policy.units import DomainName, Duration, Seconds
from postwarden.policyd.tokens import TOKENS_DIR

SETTINGS_PATH = "/etc/postwarden/policyd.yml"
POLICY_PATH = "/etc/postwarden/policy.yml"
SECRETS_PATH = "/etc/postwarden/secrets.yml"


class PolicydSettings(PolicyModel):
    policy: str = POLICY_PATH
    secrets: str = SECRETS_PATH
    listen: list[Listen] = Field(default_factory=lambda: ["127.0.0.1:10040"], min_length=1)
    """TCP HOST:PORT or unix:PATH, one or more."""
    metrics_listen: TcpListen = "127.0.0.1:9466"
    """Prometheus metrics, the Alertmanager bridge and the pool state (HTTP, loopback)."""
    tokens_dir: str | None = TOKENS_DIR
    """Where the tokens of the HTTP side's callers are (admin, dovecot, alertmanager)."""
    socketmap_listen: TcpListen | None = "127.0.0.1:10046"
    """Postfix asks here which transport a sender's mail leaves through."""
    pool_state: str = "/var/lib/postwarden/pools.json"
    """Pool addresses quarantined or released at run time."""
    store: Literal["sqlite", "redis"] = "sqlite"
    sqlite_path: str = "/var/lib/postwarden/counters.sqlite"
    redis_url: str | None = None
    """redis://[[USER]:PASSWORD@]HOST[:PORT][/DB]; TLS (rediss://) and unix sockets are
    not supported."""
    mynetworks: list[str] = Field(default_factory=lambda: ["127.0.0.0/8", "[::1]/128"])
    """Clients that relay without a login (Postfix's mynetworks): their mail is counted
    by its envelope sender."""
    fail_mode: Literal["open", "closed"] = "closed"
    """When the store cannot be reached: let mail through (open) or defer it (closed)."""
    usage_log: str = "/var/lib/postwarden/usage.sqlite"
    usage_retention: Duration = Seconds(90 * 86400)
    shared_usage_retention: Duration = Seconds(32 * 86400)
    """With the Redis store: how long the stream where the MTAs' usage rows meet keeps
    them (the reports of several hosts read it; a month's report needs 31 days)."""
    log_file: str = "/var/log/postwarden/policyd.log"
    dnsbl_zones: list[DomainName] = Field(
        default_factory=lambda: ["zen.spamhaus.org", "bl.spamcop.net", "b.barracudacentral.org"]
    )
    """Blocklists the outbound addresses are watched on; empty turns the watch off."""
    dnsbl_interval: Duration = Seconds(15 * 60)
    dnsbl_nameserver: Nameserver | None = None
    """HOST or HOST:PORT to ask instead of the system's resolver. Spamhaus refuses
    queries from big public resolvers: use a local one."""

    @field_validator("redis_url")
    @classmethod
    def _redis_url_is_supported(cls, value: str | None) -> str | None:
        return check_redis_url(value)
