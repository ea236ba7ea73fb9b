"""`postwarden audit passwords`: each kind of failure found, the guesses bounded and
said, exit 1 when anything fails. The hashes are real argon2id and bcrypt hashes made
cheap to check (the audit reads the cost from each hash), so the test stays quick."""

from __future__ import annotations

import json
import time
from pathlib import Path

import bcrypt
import pytest
from argon2 import PasswordHasher
from typer.testing import CliRunner

from postwarden.accounts.audit import guess, plan_audit
from postwarden.cli import app
from postwarden.policy.load import load_policy
from postwarden.policy.secrets import TIME_FORMAT
from tests.conftest import Sink

runner = CliRunner()
CHEAP = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
NOW = time.time()
DAY = 86400

POLICY = """\
server:
  hostname: mail.example.com
  postmaster: ops@example.net
password_policy:
  max_age: 365d
domains:
  example.com: {}
users:
  alice@example.com:
    name: Alice Liddell
  bob@example.com: {}
  carol@example.com: {}
  dave@example.com: {}
  erin@example.com: {}
  frank@example.com: {}
  gina@example.com: {}
  old@example.com:
    disabled: true
"""


def when(days_ago: float) -> str:
    return time.strftime(TIME_FORMAT, time.gmtime(NOW - days_ago * DAY))


def write(tmp_path: Path, users: dict[str, tuple[str | None, float | None]]) -> Path:
    """users: address -> (hash, days since it was set)"""
    lines = ["password_hashes:"]
    lines += [f'  {a}: "{h}"' for a, (h, _) in users.items() if h is not None]
    lines += ["password_set:"]
    lines += [f'  {a}: "{when(d)}"' for a, (_, d) in users.items() if d is not None]
    (tmp_path / "secrets.yml").write_text("\n".join(lines) + "\n", encoding="utf-8")
    policy = tmp_path / "policy.yml"
    policy.write_text(POLICY, encoding="utf-8")
    return policy


GOOD = "Gl4cier-Moth-Ink#"


@pytest.fixture
def policy(tmp_path: Path) -> Path:
    return write(
        tmp_path,
        {
            "alice@example.com": (CHEAP.hash("Liddell2026"), 10),  # her own name
            "bob@example.com": (CHEAP.hash("password"), 10),  # the second most common
            "carol@example.com": (CHEAP.hash(GOOD), 10),  # passes
            # dave: no hash at all
            "erin@example.com": (bcrypt.hashpw(GOOD.encode(), bcrypt.gensalt(4)).decode(), 10),
            "frank@example.com": (CHEAP.hash(GOOD), 400),  # past max_age
            "gina@example.com": (CHEAP.hash(GOOD), None),  # set before passwd kept the time
        },
    )


def test_every_kind_of_failure_is_found(policy: Path) -> None:
    result = runner.invoke(
        app, ["audit", "passwords", "--policy", str(policy), "--common", "5", "--format", "json"]
    )
    assert result.exit_code == 1, result.output
    found = json.loads(result.stdout)
    assert [(f["user"], f["problem"]) for f in found] == [
        ("alice@example.com", "personal"),
        ("bob@example.com", "common"),
        ("dave@example.com", "no password"),
        ("erin@example.com", "scheme"),
        ("frank@example.com", "expired"),
        ("gina@example.com", "age unknown"),
    ]
    # not the password, nor which try found it (its rank in a public list)
    assert found[1]["detail"] == "one of the most common passwords"
    assert "password" not in found[1]["detail"].replace("passwords", "")
    assert "set 400 days ago" in found[4]["detail"]
    # said before it starts: 6 users with a hash, 5 common and their own words each
    assert "auditing 8 users:" in result.stderr
    assert "guesses against 6 hashes" in result.stderr


def test_a_clean_audit_exits_0(tmp_path: Path) -> None:
    policy = write(
        tmp_path,
        {
            f"{n}@example.com": (CHEAP.hash(GOOD), 1)
            for n in ("alice", "bob", "carol", "dave", "erin", "frank", "gina")
        },
    )
    result = runner.invoke(app, ["audit", "passwords", "--policy", str(policy), "--common", "3"])
    assert result.exit_code == 0, result.output
    assert "every password passes the audit" in result.stdout


def test_guessing_is_bounded_and_stops_at_a_hit(policy: Path) -> None:
    loaded = load_policy(policy)
    plan = plan_audit(loaded.policy, loaded.secrets, common_tries=5)
    personal = {g.address: [c for p, c in g.candidates if p == "personal"] for g in plan.guessing}
    assert "Liddell2026" in personal["alice@example.com"]
    assert all(len(words) <= 60 for words in personal.values())
    assert plan.tries == sum(len(g.candidates) for g in plan.guessing)
    seen: list[int] = []
    found = guess(plan, workers=2, progress=seen.append)
    assert {f.address for f in found} == {"alice@example.com", "bob@example.com"}
    assert seen[-1] == plan.tries
    assert seen == sorted(seen)


def test_the_rules_off_guess_nothing(tmp_path: Path) -> None:
    policy = write(tmp_path, {"bob@example.com": (CHEAP.hash("password"), 1)})
    text = policy.read_text().replace(
        "  max_age: 365d\n", "  max_age: 365d\n  forbid_common: false\n  forbid_personal: false\n"
    )
    policy.write_text(text)
    loaded = load_policy(policy)
    plan = plan_audit(loaded.policy, loaded.secrets, common_tries=5)
    assert plan.tries == 0


def telling_users(policy: str, relay_port: int) -> str:
    """The policy with audit.notify_users on, through a relay on ``relay_port``."""
    return policy.replace(
        "  max_age: 365d\n", "  max_age: 365d\n  audit:\n    notify_users: true\n"
    ).replace(
        "  postmaster: ops@example.net\n",
        "  postmaster: ops@example.net\n"
        f"  notification_relay: {{host: 127.0.0.1, port: {relay_port}, starttls: false}}\n",
    )


def test_notify_raises_the_event_and_tells_each_user(tmp_path: Path, sink: Sink) -> None:
    """--notify (what the audit timer runs): password.audit_failed to the admins'
    channel and, with notify_users, one mail to each user who failed, through the
    relay (Postfix's smtp-sink here); no password in any of them."""
    hashes: dict[str, tuple[str | None, float | None]] = {
        f"{n}@example.com": (CHEAP.hash(GOOD), 10)
        for n in ("alice", "carol", "dave", "erin", "frank", "gina")
    }
    hashes["bob@example.com"] = (CHEAP.hash("123456"), 10)  # the most common of all
    policy = write(tmp_path, hashes)
    text = telling_users(policy.read_text(), sink.port)
    text += (
        "notifications:\n  admins: {email: [ops@example.net]}\n"
        "events:\n  - on: password.audit_failed\n    notify: [admins]\n"
    )
    policy.write_text(text)
    result = runner.invoke(
        app, ["audit", "passwords", "--policy", str(policy), "--common", "3", "--notify"]
    )
    assert result.exit_code == 1, result.output
    assert "password.audit_failed sent to admins" in result.stderr
    assert "told 1 users: bob@example.com" in result.stderr
    messages = sink.messages(count=2)
    assert len(messages) == 2
    by_recipient = {str(m["To"]): m for m in messages}
    assert sorted(by_recipient) == ["bob@example.com", "ops@example.net"]
    admins = by_recipient["ops@example.net"].get_body(("plain",))
    assert admins is not None
    assert "bob@example.com fails the password audit" in str(
        by_recipient["ops@example.net"]["Subject"]
    )
    assert "bob@example.com: common: one of the most common passwords" in admins.get_content()
    bob = by_recipient["bob@example.com"].get_body(("plain",))
    assert bob is not None
    assert "your password is one of the most common passwords" in bob.get_content()
    assert "The weekly check of the passwords" in bob.get_content()
    for message in messages:
        assert "123456" not in message.as_string()


def test_expiry_is_dated_and_users_are_warned_ahead(tmp_path: Path, sink: Sink) -> None:
    """max_age 365d, grace 7d, warning 14d: a password set 360 days ago expires in 5
    days (its user is warned, the audit still passes); one set 368 days ago expired
    and still works for 4 days; one set 400 days ago is refused at login already."""
    users: dict[str, tuple[str | None, float | None]] = {
        f"{n}@example.com": (CHEAP.hash(GOOD), 10.0)
        for n in ("alice", "carol", "dave", "erin", "frank", "gina")
    }
    users["bob@example.com"] = (CHEAP.hash(GOOD), 360.0)
    policy = write(tmp_path, users)
    text = telling_users(policy.read_text(), sink.port)
    policy.write_text(text)
    command = ["audit", "passwords", "--policy", str(policy), "--common", "0", "--notify"]
    warned = runner.invoke(app, command)
    assert warned.exit_code == 0, warned.output
    expires = time.strftime("%Y-%m-%d", time.gmtime(NOW + 5 * DAY))
    refused = time.strftime("%Y-%m-%d", time.gmtime(NOW + 12 * DAY))
    assert (
        f"note: the password of bob@example.com expires on {expires}, "
        f"stops working at login on {refused}"
    ) in warned.stderr
    assert "warned 1 users of their password's expiry: bob@example.com" in warned.stderr
    (mail,) = sink.messages()
    assert str(mail["To"]) == "bob@example.com"
    body = mail.get_body(("plain",))
    assert body is not None
    assert f"Your mail password expires on {expires}" in body.get_content()
    assert f"From {refused}, it stops working" in body.get_content()

    def expired_of(days_ago: float) -> str:
        loaded = load_policy(write(tmp_path, {"bob@example.com": (CHEAP.hash(GOOD), days_ago)}))
        (bob,) = [
            f.detail
            for f in plan_audit(loaded.policy, loaded.secrets, 0).failures
            if (f.address, f.problem) == ("bob@example.com", "expired")
        ]
        return bob

    four_days = time.strftime("%Y-%m-%d", time.gmtime(NOW + 4 * DAY))
    assert expired_of(368).endswith(f"; stops working at login on {four_days}")
    since = time.strftime("%Y-%m-%d", time.gmtime(NOW - 28 * DAY))
    assert expired_of(400).endswith(f"; refused at login since {since}")


def test_on_a_host_the_hashes_come_from_dovecots_passdb(tmp_path: Path) -> None:
    """Without --policy, as the audit timer runs it: the deployed policy, the daemon's
    secrets file (when each password was set; no hashes) and the hashes from
    Dovecot's passdb, all three as the renderer makes them."""
    from postwarden.render.dovecot import DATA_DIR
    from postwarden.render.host import load_host_settings
    from postwarden.render.render import render

    controller = tmp_path / "controller"
    controller.mkdir()
    policy = write(
        controller,
        {
            "bob@example.com": (CHEAP.hash("123456"), 10),
            "carol@example.com": (CHEAP.hash(GOOD), 10),
            "dave@example.com": (CHEAP.hash(GOOD), 500),
        },
    )
    tree = render(load_policy(policy), load_host_settings(None))
    host = tmp_path / "host"
    host.mkdir()
    daemon_secrets = tree["/etc/postwarden/secrets.yml"].content
    assert "$argon2id" not in daemon_secrets, "the daemon's secrets hold no hash"
    (host / "secrets.yml").write_text(daemon_secrets)
    (host / "policy.yml").write_text(tree["/etc/postwarden/policy.yml"].content)
    (host / "passwords").write_text(tree[f"{DATA_DIR}/passwords"].content)
    settings = host / "policyd.yml"
    settings.write_text(f"policy: {host / 'policy.yml'}\nsecrets: {host / 'secrets.yml'}\n")
    result = runner.invoke(
        app,
        [
            "audit",
            "passwords",
            "--settings",
            str(settings),
            "--passdb",
            str(host / "passwords"),
            "--common",
            "3",
            "--format",
            "json",
        ],
    )
    assert result.exit_code == 1, result.output
    found = {(f["user"], f["problem"]) for f in json.loads(result.stdout)}
    assert ("bob@example.com", "common") in found
    assert ("dave@example.com", "expired") in found
    assert not any(user == "carol@example.com" for user, _ in found)

    missing = runner.invoke(
        app, ["audit", "passwords", "--settings", str(settings), "--passdb", str(host / "nope")]
    )
    assert missing.exit_code == 1
    assert "cannot read the hashes in" in missing.stderr


def test_the_users_mail_names_the_schedule() -> None:
    from postwarden.accounts.audit import Failure
    from postwarden.accounts.audit_notify import user_note

    failed = [Failure("bob@example.com", "common", "one of the most common passwords")]
    note = user_note("bob@example.com", failed, "daily", "mail.example.com", NOW)
    assert "The daily check of the passwords" in note.detail
    assert "your password is one of the most common passwords" in note.detail
