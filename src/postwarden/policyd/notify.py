"""Send notifications: email through the notification relay, webhooks, SMS gateways.

Each sender is blocking I/O run in a worker thread; the caller retries with
backoff. Email goes through ``server.notification_relay``, never through this
host's own queue, which may be the thing in trouble.
"""

from __future__ import annotations

import json
import smtplib
import ssl
import urllib.error
import urllib.parse
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
    """This attempt failed; another may succeed.

    The message is logged, so it names only the channel kind, scheme://host[:port]
    and a short reason: never a header, a password, a URL's path or query (a
    Slack-style hook's path is its token), nor an exception's text or repr.
    """


def origin(url: str) -> str:
    """scheme://host[:port] of a URL, without credentials, path or query."""
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError:
        return "(unparsable URL)"
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    return f"{parts.scheme}://{host}" + (f":{port}" if port is not None else "")


def reason(error: BaseException) -> str:
    """An exception's class name: its text may quote a header or a password."""
    if isinstance(error, urllib.error.URLError) and isinstance(error.reason, BaseException):
        error = error.reason
    return type(error).__name__


def send_email(relay: NotificationRelay, sender: str, to: list[str], note: Notification) -> None:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = ", ".join(to)
    message["Subject"] = note.title
    message["Date"] = formatdate(note.time)
    message["Message-ID"] = make_msgid(domain=note.host)
    message["Auto-Submitted"] = "auto-generated"
    message.set_content(note.text)
    relay_message(relay, message, sender, to, note.host)


def relay_message(
    relay: NotificationRelay, message: EmailMessage, sender: str, to: list[str], host: str
) -> None:
    """Hand a message to the notification relay (never the local queue, which may be
    what is in trouble). Raises DeliveryFailed saying which step failed."""
    where = f"email smtp://{relay.host}:{relay.port}"
    step = "connect"
    try:
        with smtplib.SMTP(relay.host, relay.port, timeout=TIMEOUT) as client:
            step = "EHLO"
            client.ehlo(host)
            if relay.starttls:
                step = "STARTTLS"
                client.starttls(context=ssl.create_default_context())
                client.ehlo(host)
            if relay.username and relay.password is not None:
                step = "login"
                client.login(relay.username, relay.password.reveal())
            step = "send"
            client.send_message(message, from_addr=sender, to_addrs=to)
    # anything at all: a non-ASCII password raises UnicodeEncodeError quoting it
    except Exception as error:
        code = getattr(error, "smtp_code", None)
        status = f" {code}" if isinstance(code, int) else ""
        raise DeliveryFailed(f"{where}: {step} failed: {reason(error)}{status}") from None


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirect would resend the headers (tokens) to wherever it points, as a GET."""

    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirect)


def post_json(
    url: str, payload: dict[str, object], headers: dict[str, str], kind: str = "webhook"
) -> None:
    where = f"{kind} {origin(url)}"
    try:
        request = urllib.request.Request(
            url,
            data=json.dumps(payload).encode(),
            headers={"Content-Type": "application/json", "User-Agent": "postwarden", **headers},
            method="POST",
        )
        with _OPENER.open(request, timeout=TIMEOUT) as response:
            status = response.status
    except urllib.error.HTTPError as error:  # any status but 2xx, redirects included
        error.close()
        status = error.code
    # anything at all: http.client's ValueError for a header ending in a newline quotes it
    except Exception as error:
        raise DeliveryFailed(f"{where}: {reason(error)}") from None
    if not 200 <= status < 300:
        raise DeliveryFailed(f"{where}: HTTP {status}")


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
        post_json(
            channel.sms.gateway, {"to": channel.sms.to, "message": note.title}, headers, "sms"
        )
