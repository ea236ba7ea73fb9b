"""Send notifications: email through the notification relay, webhooks, SMS gateways.

Each sender is blocking I/O run in a worker thread; the caller retries with
backoff. Email goes through ``server.notification_relay``, never through this
host's own queue, which may be the thing in trouble.
"""

from __future__ import annotations

import http.client
import json
import smtplib
import ssl
import urllib.error
import urllib.request
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

from postwarden.policy.models.notifications import Channel
from postwarden.policy.models.server import NotificationRelay
from postwarden.policy.secret_types import SecretValue

TIMEOUT = 10.0


@dataclass(frozen=True)
class Notification:
    kind: str
    subject: str
    detail: str
    host: str
    time: float

    @property
    def title(self) -> str:
        return f"[postwarden {self.host}] {self.kind}: {self.subject}"

    @property
    def text(self) -> str:
        return f"{self.title}\n\n{self.detail}\n"

    def as_json(self) -> dict[str, object]:
        return {
            "event": self.kind,
            "subject": self.subject,
            "detail": self.detail,
            "host": self.host,
            "time": self.time,
        }


class DeliveryFailed(Exception):
    """This attempt failed; another may succeed."""


def send_email(relay: NotificationRelay, sender: str, to: list[str], note: Notification) -> None:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = ", ".join(to)
    message["Subject"] = note.title
    message["Date"] = formatdate(note.time)
    message["Message-ID"] = make_msgid(domain=note.host)
    message["Auto-Submitted"] = "auto-generated"
    message.set_content(note.text)
    try:
        with smtplib.SMTP(relay.host, relay.port, timeout=TIMEOUT) as client:
            client.ehlo(note.host)
            if relay.starttls:
                client.starttls(context=ssl.create_default_context())
                client.ehlo(note.host)
            if relay.username and relay.password is not None:
                client.login(relay.username, relay.password.reveal())
            client.send_message(message, from_addr=sender, to_addrs=to)
    except (OSError, smtplib.SMTPException) as error:
        raise DeliveryFailed(f"email via {relay.host}:{relay.port}: {error}") from None


def post_json(url: str, payload: dict[str, object], headers: dict[str, str]) -> None:
    request = urllib.request.Request(
        url,
        data=json.dumps(payload).encode(),
        headers={"Content-Type": "application/json", "User-Agent": "postwarden", **headers},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
            status = response.status
    except urllib.error.HTTPError as error:
        status = error.code
    except (OSError, urllib.error.URLError, http.client.HTTPException, ValueError) as error:
        # ValueError: a header value the HTTP library refuses (a token ending in a newline)
        raise DeliveryFailed(f"POST {url}: {type(error).__name__}: {error}") from None
    if not 200 <= status < 300:
        raise DeliveryFailed(f"POST {url}: HTTP {status}")


def header_values(headers: dict[str, str | SecretValue]) -> dict[str, str]:
    return {k: v.reveal() if isinstance(v, SecretValue) else v for k, v in headers.items()}


def deliver(
    channel: Channel, relay: NotificationRelay | None, sender: str, note: Notification
) -> None:
    """One attempt to notify one channel."""
    if channel.email is not None:
        if relay is None:
            raise DeliveryFailed("email channels need server.notification_relay")
        send_email(relay, sender, channel.email, note)
    elif channel.webhook is not None:
        post_json(channel.webhook.url, note.as_json(), header_values(channel.webhook.headers))
    elif channel.sms is not None:
        headers = (
            {"Authorization": f"Bearer {channel.sms.token.reveal()}"} if channel.sms.token else {}
        )
        post_json(channel.sms.gateway, {"to": channel.sms.to, "message": note.title}, headers)
