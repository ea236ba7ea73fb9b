"""What a failed password audit sends: the `password.audit_failed` event to the
channels the policy names for it, and (with `audit.notify_users`) a word to each
user whose password failed, through the notification relay.

Never a password: the audit reports what kind of problem a password has, and the
users' mail says what to do about it."""

from __future__ import annotations

from dataclasses import dataclass, field

from postwarden.accounts.audit import Expiring, Failure, day
from postwarden.policy.models import Policy
from postwarden.policyd.notify import DeliveryFailed, Notification, deliver, send_email

EVENT = "password.audit_failed"
ADVICE = {
    "no password": "no password is set for your account",
    "unknown scheme": "your password is stored in a way the server no longer reads",
    "scheme": "your password is stored in an older way; setting it again updates it",
    "expired": "your password is older than the policy allows",
    "age unknown": "it is not known when your password was set",
    "common": "your password is one of the most common passwords",
    "personal": "your password is built from your own name or address",
}


@dataclass
class Sent:
    channels: list[str] = field(default_factory=list)
    users: list[str] = field(default_factory=list)
    warned: list[str] = field(default_factory=list)
    """Users told that their password expires soon."""
    failed: list[str] = field(default_factory=list)
    """What could not be sent, and why (no secret in it: DeliveryFailed's words)."""


def event_note(failures: list[Failure], host: str, now: float) -> Notification:
    users = sorted({f.address for f in failures})
    lines = [f"{f.address}: {f.problem}: {f.detail}" for f in failures]
    return Notification(
        EVENT,
        f"{len(users)} users fail the password audit"
        if len(users) != 1
        else f"{users[0]} fails the password audit",
        "\n".join(lines),
        host,
        now,
    )


def user_note(
    address: str, failures: list[Failure], schedule: str, host: str, now: float
) -> Notification:
    reasons = [_advice(f) for f in failures if f.address == address]
    detail = (
        f"The {schedule} check of the passwords on this mail server found that:\n"
        + "".join(f"  - {reason}\n" for reason in reasons)
        + "\nPlease set a new password (ask your administrator how), before your account "
        "is locked or misused. Nobody from this server will ever ask for your password."
    )
    return Notification(EVENT, "your mail password needs a change", detail, host, now)


def _advice(failure: Failure) -> str:
    advice = ADVICE.get(failure.problem, failure.problem)
    # its dates are the user's business: when it stops (or stopped) working
    return f"{advice} ({failure.detail})" if failure.problem == "expired" else advice


def expiring_note(expiring: Expiring, host: str, now: float) -> Notification:
    detail = (
        f"Your mail password expires on {day(expiring.expires)}: the policy of this mail "
        f"server allows a password for a limited time. From {day(expiring.refused_from)}, "
        "it stops working: your mail programs will no longer log in or send.\n\n"
        "Please set a new password before then (ask your administrator how). Nobody from "
        "this server will ever ask for your password."
    )
    return Notification(EVENT, "your mail password expires soon", detail, host, now)


def notify(
    policy: Policy, failures: list[Failure], now: float, expiring: list[Expiring] | None = None
) -> Sent:
    """The event for ``failures``; with ``audit.notify_users``, a mail to each user of
    ``failures`` and to each user whose password is ``expiring``."""
    sent = Sent()
    relay = policy.server.notification_relay
    sender = policy.server.notification_sender
    host = policy.server.hostname
    audit = policy.password_policy.audit
    if audit is not None and audit.notify_users:
        for soon in expiring or []:
            if relay is None:
                sent.failed.append(f"{soon.address}: users are told by email, through the relay")
                continue
            try:
                send_email(relay, sender, [soon.address], expiring_note(soon, host, now))
                sent.warned.append(soon.address)
            except DeliveryFailed as error:
                sent.failed.append(f"{soon.address}: {error}")
    if not failures:
        return sent
    note = event_note(failures, host, now)
    named = [name for event in policy.events if event.on == EVENT for name in event.notify]
    for name in dict.fromkeys(named):
        try:
            deliver(policy.notifications[name], relay, sender, note)
            sent.channels.append(name)
        except DeliveryFailed as error:
            sent.failed.append(f"channel {name}: {error}")
    if audit is not None and audit.notify_users:
        for address in sorted({f.address for f in failures}):
            if relay is None:
                sent.failed.append(f"{address}: users are told by email, through the relay")
                continue
            try:
                note = user_note(address, failures, audit.schedule, host, now)
                send_email(relay, sender, [address], note)
                sent.users.append(address)
            except DeliveryFailed as error:
                sent.failed.append(f"{address}: {error}")
    return sent
