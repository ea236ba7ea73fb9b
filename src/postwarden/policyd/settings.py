"""The daemon's own settings file (/etc/postwarden/policyd.yml): where it listens,
where it keeps state, and where the policy it enforces is."""

from __future__ import annotations

from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator

from postwarden.policy.models.base import PolicyModel
from postwarden.policy.units import Duration, Seconds, invalid

SETTINGS_PATH = "/etc/postwarden/policyd.yml"
POLICY_PATH = "/etc/postwarden/policy.yml"
SECRETS_PATH = "/etc/postwarden/secrets.yml"


class PolicydSettings(PolicyModel):
    policy: str = POLICY_PATH
    secrets: str = SECRETS_PATH
    listen: list[str] = Field(default_factory=lambda: ["127.0.0.1:10040"])
    """TCP HOST:PORT or unix:PATH, one or more."""
    metrics_listen: str = "127.0.0.1:9466"
    """Prometheus metrics, the Alertmanager bridge and the pool state (HTTP, loopback)."""
    socketmap_listen: str | None = "127.0.0.1:10046"
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
    log_file: str = "/var/log/postwarden/policyd.log"
    dnsbl_zones: list[str] = Field(
        default_factory=lambda: ["zen.spamhaus.org", "bl.spamcop.net", "b.barracudacentral.org"]
    )
    """Blocklists the outbound addresses are watched on; empty turns the watch off."""
    dnsbl_interval: Duration = Seconds(15 * 60)
    dnsbl_nameserver: str | None = None
    """HOST or HOST:PORT to ask instead of the system's resolver. Spamhaus refuses
    queries from big public resolvers: use a local one."""

    @field_validator("redis_url")
    @classmethod
    def _redis_url_is_supported(cls, value: str | None) -> str | None:
        return check_redis_url(value)


def check_redis_url(value: str | None) -> str | None:
    """``value`` if the daemon can connect with it, else a settings error. Shared so
    that the host settings rendering policyd.yml can refuse the same URLs."""
    if value is None:
        return value
    # the messages never repeat the URL: it may hold the password
    example = "use redis://[:PASSWORD@]HOST[:PORT][/DB]"
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError on a port that is not a number
    except ValueError:
        raise invalid("redis_url", "not a valid Redis URL", example) from None
    if parts.scheme == "rediss":
        raise invalid(
            "redis_url",
            "rediss:// (Redis over TLS) is not supported",
            "reach Redis over a private network or a TLS tunnel (stunnel, spiped) "
            "and point redis:// at its local end",
        )
    if parts.scheme != "redis":
        scheme = f"{parts.scheme}://" if parts.scheme else "a URL without a scheme"
        raise invalid("redis_url", f"{scheme} is not supported", example)
    if not parts.hostname:
        raise invalid("redis_url", "the Redis URL has no host", example)
    database = parts.path.strip("/")
    if database and not database.isdigit():
        raise invalid("redis_url", "the database after the host must be a number", example)
    return value
