"""postwarden-policyd proven through real Postfix: throttles, abuse detection, list
moderation, events reaching a webhook and the notification relay, IP pools at run time."""

from __future__ import annotations

import imaplib
import importlib.util
import json
import smtplib
import ssl
import subprocess
import sys
import time
import urllib.request
import uuid
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT
from tests.e2e.conftest import Webhook
from tests.e2e.mailhost import (
    DOVECOT_LOG,
    OUTSIDE,
    PASSWORDS,
    POLICYD_LOG,
    POSTFIX_LOG,
    MailHost,
    message,
    wait_for_port,
)
from tests.e2e.test_mail_flow import MAIN_POOL_ACTIVE, held_containing, sink_header
from tests.fake_dns import FakeDns

ADMIN = "127.0.0.1:9466"


def marker() -> str:
    return f"pd-{uuid.uuid4().hex[:12]}"


def postwarden(*arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "postwarden", *arguments],
        capture_output=True,
        text=True,
        check=False,
    )


def logged_in(login: str) -> smtplib.SMTP:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    client = smtplib.SMTP("127.0.0.1", 587, source_address=(OUTSIDE, 0), timeout=30)
    client.starttls(context=context)
    client.login(login, PASSWORDS[login])
    return client


def test_the_201st_message_in_the_hour_is_deferred(mailhost: MailHost, webhook: Webhook) -> None:
    login = "limited@example.com"

    def numbered(number: int) -> EmailMessage:
        # every size 3% apart, so that the same-size rule (2%) stays out of this test
        return message(login, f"r{number}@remote.test", marker(), "x" * int(500 * 1.03**number))

    with logged_in(login) as client:
        for number in range(200):
            client.send_message(numbered(number))
        with pytest.raises(smtplib.SMTPDataError) as deferred:
            client.send_message(numbered(200))
    assert deferred.value.smtp_code == 450
    assert b"sending limit reached: messages 200/h (hundreds)" in deferred.value.smtp_error
    webhook.wait_for(lambda b: b["event"] == "throttle.hit" and login in b["subject"])


def test_a_burst_of_same_sized_mail_is_held_and_notified(
    mailhost: MailHost, webhook: Webhook
) -> None:
    login, tag = "bulky@example.com", marker()
    body = "Buy now. " * 300
    with logged_in(login) as client:
        for number in range(30):
            client.send_message(
                message(login, f"target{number}@remote.test", f"{tag}-{number}", body)
            )
    try:
        assert held_containing(mailhost, f"{tag}-29"), "the 30th message is not on hold"
        assert not held_containing(mailhost, f"{tag}-28")
        # moderation says why, and for whom
        (queue_id,) = held_containing(mailhost, f"{tag}-29")
        held = moderation_list(queue_id)
        assert held["reason"].startswith("looks like bulk mail from an account: 30 messages")
        assert held["held_for"] == login
    finally:
        for queue_id in held_containing(mailhost, tag):
            subprocess.run(["postsuper", "-d", queue_id], check=False, capture_output=True)
    event = webhook.wait_for(
        lambda b: b["event"] == "abuse.internal_spammer" and b["subject"] == login
    )
    assert "30 messages of about" in event["detail"]
    # the email channel went through the notification relay (here: the sink)
    notice = mailhost.wait_for_sink("abuse.internal_spammer: bulky@example.com")
    assert "ops@remote.test" in sink_header(notice, "X-Rcpt-Args")


def test_a_recipient_harvester_is_refused_after_k_unknown_recipients(
    mailhost: MailHost, webhook: Webhook
) -> None:
    harvester = "127.0.0.20"
    codes = []
    with smtplib.SMTP("127.0.0.1", 25, source_address=(harvester, 0), timeout=30) as client:
        client.ehlo("probe.remote.test")
        client.mail("probe@remote.test")
        for number in range(1, 7):
            code, _ = client.rcpt(f"nobody{number}@example.com")
            codes.append(code)
        code, text = client.rcpt("bob@example.org")
    assert codes[:4] == [550] * 4
    assert codes[4:] == [554, 554]
    assert code == 554
    assert b"banned" in text
    assert f"ban client={harvester} reason=invalid_recipients count=5" in POLICYD_LOG.read_text()
    webhook.wait_for(lambda b: b["event"] == "abuse.bad_smtp_session" and b["subject"] == harvester)
    # another client is not affected
    tag = marker()
    mailhost.smtp25(message("friend@remote.test", "bob@example.org", tag), source="127.0.0.21")
    mailhost.wait_for_mailbox("bob@example.org", tag)


def _login_from(source: str, password: str) -> int:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with smtplib.SMTP("127.0.0.1", 587, source_address=(source, 0), timeout=30) as client:
        client.starttls(context=context)
        client.ehlo("guess.remote.test")
        # one mechanism, one attempt: login() would try PLAIN and then LOGIN
        client.user, client.password = "alice@example.com", password
        try:
            client.auth("PLAIN", client.auth_plain)
        except smtplib.SMTPAuthenticationError as error:
            return error.smtp_code
        return 235


def test_a_password_guesser_is_banned_on_every_host(mailhost: MailHost, webhook: Webhook) -> None:
    guesser = "127.0.0.30"
    # 535, or 454 once Dovecot's own growing penalty delay outlasts Postfix's patience
    assert all(_login_from(guesser, f"wrong-{n}") in (454, 535) for n in range(3))
    webhook.wait_for(lambda b: b["event"] == "abuse.auth_failures" and b["subject"] == guesser)
    assert f"ban client={guesser} reason=auth_failures count=3" in POLICYD_LOG.read_text()
    # the right password no longer helps: the shared ban list refuses the login itself
    assert _login_from(guesser, PASSWORDS["alice@example.com"]) in (454, 535)
    with pytest.raises(smtplib.SMTPRecipientsRefused):
        mailhost.smtp25(message("friend@remote.test", "bob@example.org", marker()), source=guesser)
    # and the user, from anywhere else, still logs in
    assert _login_from("127.0.0.31", PASSWORDS["alice@example.com"]) == 235


def moderation_list(queue_id: str, timeout: float = 10.0) -> dict[str, Any]:
    """The entry of ``moderation list`` for a held message, once its reason is in
    (the daemon writes it with its next batch, within a second)."""
    deadline = time.monotonic() + timeout
    while True:
        listed = postwarden("moderation", "list", "--format", "json")
        assert listed.returncode == 0, listed.stderr
        held = {entry["queue_id"]: entry for entry in json.loads(listed.stdout)}
        entry: dict[str, Any] = held[queue_id]
        if entry["reason"] or time.monotonic() > deadline:
            return entry
        time.sleep(0.3)


def test_a_held_list_post_is_released_by_a_moderator(mailhost: MailHost, webhook: Webhook) -> None:
    tag = marker()
    mailhost.submit("bob@example.org", message("bob@example.org", "all-staff@example.com", tag))
    (queue_id,) = held_containing(mailhost, tag)
    webhook.wait_for(lambda b: b["event"] == "list.post_held")

    held = moderation_list(queue_id)
    assert held["sender"] == "bob@example.org"
    assert held["subject"] == tag
    # why, and for whom: the daemon's words when it held the post at RCPT
    assert held["reason"] == "post to all-staff@example.com awaits a moderator"
    assert held["held_for"] == "bob@example.org"
    text = postwarden("moderation", "list").stdout
    assert "held: post to all-staff@example.com awaits a moderator (for bob@example.org)" in text
    # the list's own moderator is told (notify_moderators), through the relay
    notice = mailhost.wait_for_sink("list.post_held: all-staff@example.com")
    assert sink_header(notice, "X-Rcpt-Args") == "<alice@example.com>"

    released = postwarden("moderation", "release", queue_id)
    assert released.returncode == 0, released.stderr
    mailhost.wait_for_mailbox("alice@example.com", tag)
    mailhost.wait_for_mailbox("bob@example.org", tag)
    mailhost.wait_for_sink(tag)
    assert postwarden("moderation", "release", queue_id).returncode == 1


def test_a_held_message_can_be_deleted(mailhost: MailHost) -> None:
    tag = marker()
    mailhost.submit("bob@example.org", message("bob@example.org", "all-staff@example.com", tag))
    (queue_id,) = held_containing(mailhost, tag)
    assert postwarden("moderation", "delete", queue_id).returncode == 0
    assert held_containing(mailhost, tag) == []


def test_a_large_message_raises_its_event(mailhost: MailHost, webhook: Webhook) -> None:
    tag = marker()
    big = message("alice@example.com", "friend@remote.test", tag, ("z" * 75 + "\n") * 4000)
    mailhost.submit("alice@example.com", big)
    mailhost.wait_for_sink(tag)
    event = webhook.wait_for(lambda b: b["event"] == "message.large")
    assert event["subject"] == "alice@example.com"


def _address_used(mailhost: MailHost, login: str, recipient: str) -> str:
    tag = marker()
    mailhost.submit(login, message(login, recipient, tag))
    return sink_header(mailhost.wait_for_sink(tag), "X-Client-Addr")


def test_quarantining_an_address_moves_mail_without_a_reload(mailhost: MailHost) -> None:
    first = _address_used(mailhost, "alice@example.com", "q1@remote.test")
    assert first in MAIN_POOL_ACTIVE
    result = postwarden("pool", "quarantine", first, "--admin", ADMIN)
    assert result.returncode == 0, result.stderr
    try:
        # a recipient Postfix has not looked up for this sender yet: no cached answer
        second = _address_used(mailhost, "alice@example.com", "q2@remote.test")
        assert second in MAIN_POOL_ACTIVE
        assert second != first
    finally:
        assert postwarden("pool", "activate", first, "--admin", ADMIN).returncode == 0
    status = postwarden("pool", "status", "--admin", ADMIN)
    assert "127.0.0.3" in status.stdout
    assert "draining" in status.stdout


def test_a_pool_without_active_addresses_fails_over(mailhost: MailHost) -> None:
    assert _address_used(mailhost, "newsletter@example.com", "f1@remote.test") == "127.0.0.4"
    assert postwarden("pool", "quarantine", "127.0.0.4", "--admin", ADMIN).returncode == 0
    try:
        used = _address_used(mailhost, "newsletter@example.com", "f2@remote.test")
        assert used in MAIN_POOL_ACTIVE
    finally:
        postwarden("pool", "activate", "127.0.0.4", "--admin", ADMIN)


def test_unknown_pool_addresses_are_refused(mailhost: MailHost) -> None:
    result = postwarden("pool", "quarantine", "192.0.2.99", "--admin", ADMIN)
    assert result.returncode == 1
    assert "in no pool" in result.stderr


def test_metrics_are_served(mailhost: MailHost) -> None:
    with urllib.request.urlopen(f"http://{ADMIN}/metrics", timeout=10) as response:
        text = response.read().decode()
    assert 'postwarden_policyd_requests_total{state="RCPT"}' in text
    assert 'postwarden_policyd_decisions_total{action="DUNNO"}' in text
    assert "postwarden_policyd_decision_seconds_bucket" in text


def test_a_blocklisted_address_is_quarantined(
    mailhost: MailHost, webhook: Webhook, blocklist: FakeDns
) -> None:
    blocklist.answers["5.0.0.127.bl.test."] = "127.0.0.2"
    try:
        event = webhook.wait_for(
            lambda b: b["event"] == "ip.blacklisted" and b["subject"] == "127.0.0.5"
        )
        assert "bl.test" in event["detail"]
        status = postwarden("pool", "status", "--admin", ADMIN).stdout
        assert any(
            line.startswith("127.0.0.5") and "quarantined" in line for line in status.splitlines()
        )
        for number in range(6):
            used = _address_used(mailhost, "alice@example.com", f"bl{number}@remote.test")
            assert used == "127.0.0.2"
    finally:
        del blocklist.answers["5.0.0.127.bl.test."]
        postwarden("pool", "activate", "127.0.0.5", "--admin", ADMIN)


def _probe_module() -> Any:
    """The SMTP and IMAP probe the Molecule hosts run: it stands alone there (the
    standard library only), and is loaded from its file here."""
    path = ROOT / "molecule" / "shared" / "smtp_probe.py"
    spec = importlib.util.spec_from_file_location("smtp_probe", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_ImapFrom = _probe_module().ImapFrom


def imap_login(source: str) -> bool:
    try:
        with _ImapFrom(source) as client:
            client.login("bob@example.org", PASSWORDS["bob@example.org"])
            client.logout()
    except imaplib.IMAP4.error:
        return False
    return True


def can_log_in(source: str, login: str) -> bool:
    try:
        with _ImapFrom(source) as client:
            client.login(login, PASSWORDS[login])
            client.logout()
    except imaplib.IMAP4.error:
        return False
    return True


def test_a_password_past_max_age_and_grace_stops_working(mailhost: MailHost) -> None:
    """stale@ has the right password, set in 2020 (max_age 365d, grace 7d): IMAP and
    SMTP AUTH refuse it, with the reason in the daemon's log. Refused logins are no
    guesses: retried more often than auth_failures, they ban nobody. bob@, with the
    same hash but no record of its age, logs in."""
    source = "127.0.0.61"
    before = POLICYD_LOG.stat().st_size  # the log outlives a run
    for _ in range(5):
        assert not can_log_in(source, "stale@example.com")
    with pytest.raises(smtplib.SMTPAuthenticationError):
        logged_in("stale@example.com")
    assert can_log_in(source, "bob@example.org")
    with POLICYD_LOG.open("rb") as log:
        log.seek(before)
        logged = log.read().decode(errors="replace")
    assert (
        f"refused login=stale@example.com client={source} reason=password_expired "
        "expired=2020-12-31"
    ) in logged
    assert f"ban client={source}" not in logged


def test_a_suspended_account_is_refused_until_released(mailhost: MailHost) -> None:
    """`postwarden account suspend`: the login's mail is refused at RCPT and its
    logins (IMAP, SMTP AUTH) fail, at once and with no reload; `release` restores
    both. The other users are untouched."""
    login, source = "bob@example.org", "127.0.0.62"
    assert can_log_in(source, login)
    done = postwarden("account", "suspend", login, "--admin", ADMIN)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "bob@example.org: suspended"
    try:
        status = postwarden("account", "status", "--admin", ADMIN)
        assert status.stdout.startswith("bob@example.org"), status.stdout
        assert not can_log_in(source, login)
        assert can_log_in(source, "alice@example.com")
        with pytest.raises(smtplib.SMTPAuthenticationError):
            logged_in(login)
    finally:
        released = postwarden("account", "release", login, "--admin", ADMIN)
    assert released.stdout.strip() == "bob@example.org: released", released.stderr
    assert can_log_in(source, login)
    with logged_in(login) as client:
        client.send_message(message(login, "back@remote.test", marker()))
    unknown = postwarden("account", "suspend", "nobody@example.org", "--admin", ADMIN)
    assert unknown.returncode == 1
    assert "not a user of the policy" in unknown.stderr


def test_a_login_suspended_during_its_session_is_refused_at_rcpt(mailhost: MailHost) -> None:
    """Logged in before the suspension, the session goes on: its next recipient is
    refused by the daemon."""
    login = "bulky@example.com"
    with logged_in(login) as client:
        client.mail(login)
        assert client.rcpt("first@remote.test")[0] == 250
        done = postwarden("account", "suspend", login, "--admin", ADMIN)
        assert done.returncode == 0, done.stderr
        try:
            code, text = client.rcpt("second@remote.test")
        finally:
            postwarden("account", "release", login, "--admin", ADMIN)
        client.rset()
    assert code == 554
    assert b"this account is suspended" in text


def harvest(source: str, count: int = 5) -> None:
    with smtplib.SMTP("127.0.0.1", 25, source_address=(source, 0), timeout=30) as client:
        client.ehlo("probe.remote.test")
        client.mail("probe@remote.test")
        for number in range(count):
            client.rcpt(f"nobody{number}@example.com")


def test_a_banned_address_stays_out_while_the_daemon_restarts(mailhost: MailHost) -> None:
    banned, other = "127.0.0.50", "127.0.0.51"
    assert imap_login(banned)
    harvest(banned)
    assert not imap_login(banned)
    mailhost.kill_policyd()
    try:
        # nobody answers Dovecot's policy question: closed (the host's fail mode) refuses
        assert not imap_login(banned)
        assert not imap_login(other)
    finally:
        mailhost.start_policyd()
    wait_for_port("127.0.0.1", 9466)
    # back, the daemon still knows the ban it made a moment before it was killed
    assert not imap_login(banned)
    assert imap_login(other)


def _guess_over_imaps_and_drop(source: str) -> None:
    """A wrong password over IMAPS, then the connection dropped without LOGOUT."""
    client = _ImapFrom(source)
    with pytest.raises(imaplib.IMAP4.error):
        client.login("bob@example.org", "not-the-password")
    client.sock.close()


def test_fail2ban_bans_a_guesser_and_never_a_suspended_users_phone(
    mailhost: MailHost, tmp_path: Path
) -> None:
    """The auth filter, run on this run's real lines: the daemon's ban of a client that
    guessed wrong passwords (over IMAPS, dropped, and SMTP AUTH) is matched once, with
    its address; the failed-login lines Dovecot and Postfix write for a suspended
    user's phone, which look like a guesser's, match nothing, however many."""
    guesser, phone = "127.0.0.62", "127.0.0.64"
    marks = {log: mailhost.log_mark(log) for log in (DOVECOT_LOG, POSTFIX_LOG, POLICYD_LOG)}
    for _ in range(2):
        _guess_over_imaps_and_drop(guesser)
    for number in range(2):
        assert _login_from(guesser, f"wrong-{number}") in (454, 535)
    done = postwarden("account", "suspend", "alice@example.com", "--admin", ADMIN)
    assert done.returncode == 0, done.stderr
    try:
        for _ in range(6):
            assert _login_from(phone, PASSWORDS["alice@example.com"]) in (454, 535)
    finally:
        postwarden("account", "release", "alice@example.com", "--admin", ADMIN)
    time.sleep(1)
    lines = [line for log, mark in marks.items() for line in _read_from(log, mark)]
    refused = [line for line in lines if f"[{phone}]: SASL " in line]
    assert len(refused) == 6, refused
    log = tmp_path / "run.log"
    log.write_text("\n".join(lines) + "\n")
    filter_file = tmp_path / "postwarden-auth.conf"
    filter_file.write_text(mailhost.tree["/etc/fail2ban/filter.d/postwarden-auth.conf"].content)
    found = subprocess.run(
        ["fail2ban-regex", "--out", "<ip>\t<msg>", str(log), str(filter_file)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    assert [row.split("\t")[0] for row in found] == [guesser], found
    assert f"ban client={guesser} reason=auth_failures count=3" in found[0]


def _read_from(log: Path, mark: int) -> list[str]:
    with log.open("rb") as handle:
        handle.seek(mark)
        return handle.read().decode("utf-8", "replace").splitlines()


def test_a_ban_is_listed_and_lifted_by_the_operator(mailhost: MailHost) -> None:
    harvester = "127.0.0.63"
    harvest(harvester)
    with pytest.raises(smtplib.SMTPRecipientsRefused):
        mailhost.smtp25(
            message("friend@remote.test", "bob@example.org", marker()), source=harvester
        )
    listed = postwarden("ban", "list", "--admin", ADMIN)
    assert listed.returncode == 0, listed.stderr
    assert harvester in listed.stdout
    lifted = postwarden("ban", "lift", harvester, "--admin", ADMIN)
    assert lifted.returncode == 0, lifted.stderr
    assert f"{harvester}: ban lifted in postwarden-policyd's store" in lifted.stdout
    assert harvester not in postwarden("ban", "list", "--admin", ADMIN).stdout
    tag = marker()
    mailhost.smtp25(message("friend@remote.test", "bob@example.org", tag), source=harvester)
    mailhost.wait_for_mailbox("bob@example.org", tag)
    assert f"ban lifted client={harvester}" in POLICYD_LOG.read_text()


def test_a_domains_senders_have_each_a_budget_and_one_together(mailhost: MailHost) -> None:
    """Local applications relay from the host's own networks as addresses nobody
    declared (apps.example.com: 3/h each, 5/h together)."""

    def relay(sender: str) -> int:
        try:
            mailhost.smtp25(
                message(sender, "friend@remote.test", marker()), sender=sender, source="127.0.0.1"
            )
        except smtplib.SMTPDataError as refused:
            return refused.smtp_code
        return 250

    assert [relay("webapp@apps.example.com") for _ in range(4)] == [250, 250, 250, 450]
    assert [relay("cron@apps.example.com") for _ in range(3)] == [250, 250, 450]
