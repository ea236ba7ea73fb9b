"""`server`: the host's identity, limits and TLS, and the relay for notifications."""

from __future__ import annotations

import ipaddress
from typing import Annotated, Literal

from pydantic import Field, model_validator
from pydantic_core import PydanticCustomError

from postwarden.policy.models.base import PolicyModel
from postwarden.policy.secrets import Secret
from postwarden.policy.units import (
    AbsolutePath,
    Address,
    ByteSize,
    Hostname,
    HostOrAddress,
    Login,
    Size,
    invalid,
    parse_address,
)


class Tls(PolicyModel):
    cert: AbsolutePath
    """Certificate chain (PEM) on the mail host."""
    key: AbsolutePath
    """Private key (PEM) on the mail host."""


class NotificationRelay(PolicyModel):
    host: HostOrAddress
    """Smart host that carries notification mail, never this server's own queue."""
    port: Annotated[int, Field(ge=1, le=65535)] = 587
    username: Login | None = None
    password: Secret | None = None
    starttls: bool = True
    """Require STARTTLS before authenticating."""

    @model_validator(mode="after")
    def _password_not_in_clear(self) -> NotificationRelay:
        # over loopback the password never leaves the host (a local relay or a tunnel)
        if self.password is not None and not self.starttls and not _loopback(self.host):
            raise invalid(
                "notification_relay",
                "a password would cross the network in clear",
                "set starttls: true, or use a relay on localhost",
            )
        return self


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Server(PolicyModel):
    hostname: Hostname
    """Fully qualified name of the mail host (HELO, banner, certificate)."""
    postmaster: Address
    """Receives bounces and reports about this server."""
    message_size_limit: Size = ByteSize(25 * 1024 * 1024)
    """Largest message accepted, in and out."""
    tls: Tls | None = None
    """Certificate and key; a self-signed pair is made on the host when absent."""
    port25_min_tls: Literal["TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3"] = "TLSv1.2"
    """The oldest TLS that servers delivering on port 25 may use (logins need TLSv1.2 up
    whatever this says). Older servers then deliver without TLS rather than on a broken
    protocol."""
    notification_relay: NotificationRelay | None = None

    @property
    def notification_sender(self) -> str:
        """Relays often accept only their login as sender; otherwise the postmaster."""
        relay = self.notification_relay
        if relay is not None and relay.username is not None:
            try:
                return parse_address(relay.username)
            except PydanticCustomError:
                pass
        return self.postmaster
