"""Cross-section checks at and across their boundaries, warnings included."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from postwarden.policy.checks import hash_scheme_of
from postwarden.policy.load import LoadedPolicy, PolicyInvalid, load_policy
from tests.conftest import MINIMAL_POLICY

WritePolicy = Callable[..., Path]
ARGON = (
    "$argon2id$v=19$m=65536,t=3,p=1$JhIRdsyZzXCJNl1ipusBIA"
    "$+TU5upoXNfR+GBKB+S17/yixbSArLNq9ym4gXSCKyyU"
)


def _load(write_policy: WritePolicy, extra: str, secrets: str | None = None) -> LoadedPolicy:
    return load_policy(write_policy(MINIMAL_POLICY + extra, secrets))


def _errors(write_policy: WritePolicy, extra: str, secrets: str | None = None) -> list[str]:
    with pytest.raises(PolicyInvalid) as raised:
        _load(write_policy, extra, secrets)
    return [f"{p.path}: {p.message}" for p in raised.value.problems if p.severity == "error"]


def _warnings(write_policy: WritePolicy, extra: str, secrets: str | None = None) -> list[str]:
    return [f"{p.path}: {p.message}" for p in _load(write_policy, extra, secrets).warnings]


def test_nested_lists_without_a_loop_are_fine(write_policy: WritePolicy) -> None:
    extra = (
        "lists:\n"
        "  a@example.com: {members: [b@example.com, x@elsewhere.net]}\n"
        "  b@example.com: {members: [c@example.com]}\n"
        "  c@example.com: {members: [y@elsewhere.net]}\n"
    )
    assert _load(write_policy, extra).policy.lists["a@example.com"].members[0] == "b@example.com"


def test_a_loop_of_three_lists(write_policy: WritePolicy) -> None:
    extra = (
        "lists:\n"
        "  a@example.com: {members: [b@example.com]}\n"
        "  b@example.com: {members: [c@example.com]}\n"
        "  c@example.com: {members: [a@example.com]}\n"
    )
    assert _errors(write_policy, extra) == [
        "lists.a@example.com.members[0]: the lists form a loop: "
        "a@example.com -> b@example.com -> c@example.com -> a@example.com"
    ]


def test_failover_chain_without_a_loop(write_policy: WritePolicy) -> None:
    extra = (
        "ip_pools:\n"
        "  a: {helo: a.example.com, addresses: [{address: 192.0.2.1, state: quarantined}],"
        " failover: b}\n"
        "  b: {helo: b.example.com, addresses: [{address: 192.0.2.2}], failover: c}\n"
        "  c: {helo: c.example.com, addresses: [{address: 192.0.2.3}]}\n"
    )
    assert _load(write_policy, extra).policy.ip_pools["a"].failover == "b"


def test_failover_loop_through_three_pools(write_policy: WritePolicy) -> None:
    extra = (
        "ip_pools:\n"
        "  a: {helo: a.example.com, addresses: [{address: 192.0.2.1}], failover: b}\n"
        "  b: {helo: b.example.com, addresses: [{address: 192.0.2.2}], failover: c}\n"
        "  c: {helo: c.example.com, addresses: [{address: 192.0.2.3}], failover: a}\n"
    )
    assert _errors(write_policy, extra) == [
        "ip_pools.a.failover: failover loops back to this pool: a -> b -> c -> a"
    ]


@pytest.mark.parametrize(
    ("scores", "ok"),
    [
        ("{add_header_score: 6, hold_score: 10, reject_score: 15}", True),
        ("{add_header_score: 6, reject_score: 15}", True),
        ("{hold_score: 10}", True),
        ("{add_header_score: 10, hold_score: 10}", False),
        ("{hold_score: 15, reject_score: 10}", False),
        ("{add_header_score: 16, reject_score: 15}", False),
        ("{}", False),
    ],
)
def test_spam_scores_rise(write_policy: WritePolicy, scores: str, ok: bool) -> None:
    extra = f"abuse:\n  outbound_spam: {scores}\n"
    if ok:
        _load(write_policy, extra)
    else:
        assert len(_errors(write_policy, extra)) == 1


def test_send_as_in_a_local_domain_is_allowed(write_policy: WritePolicy) -> None:
    extra = "users:\n  a@example.com: {send_as: [billing@example.com]}\n"
    assert _load(write_policy, extra).policy.users["a@example.com"].send_as == [
        "billing@example.com"
    ]


def test_alias_equal_to_own_address(write_policy: WritePolicy) -> None:
    errors = _errors(write_policy, "users:\n  a@example.com: {aliases: [a@example.com]}\n")
    assert errors == [
        "users.a@example.com.aliases[0]: a@example.com is already defined as this user"
    ]


def test_events_that_can_never_fire_warn(write_policy: WritePolicy) -> None:
    extra = (
        "notifications:\n  chat: {webhook: {url: 'https://chat.example.net/h'}}\n"
        "events:\n"
        # rspamd's own thresholds judge outbound mail without abuse.outbound_spam
        "  - {on: spam.outbound, notify: [chat]}\n"
        "  - {on: abuse.auth_failures, notify: [chat]}\n"
        "  - {on: message.large, above: 30MiB, notify: [chat]}\n"
        "  - {on: ip.blacklisted, notify: [chat]}\n"
    )
    assert _warnings(write_policy, extra) == [
        "events[1].on: abuse.auth_failures never fires: "
        "abuse.bad_smtp_sessions.auth_failures is not configured",
        "events[2].above: never fires: 30MiB is not below server.message_size_limit (25MiB)",
    ]


def test_plain_http_webhook_warns(write_policy: WritePolicy) -> None:
    extra = "notifications:\n  chat: {webhook: {url: 'http://chat.example.net/h'}}\n"
    assert _warnings(write_policy, extra) == [
        "notifications.chat.webhook.url: notifications would travel unencrypted"
    ]


def test_email_channel_without_relay_is_an_error_only_when_used(write_policy: WritePolicy) -> None:
    unused = "notifications:\n  admins: {email: [ops@example.com]}\n"
    _load(write_policy, unused)
    used = unused + "events:\n  - {on: queue.size, above: 100, notify: [admins]}\n"
    assert _errors(write_policy, used) == [
        "notifications.admins.email: email notifications need server.notification_relay"
    ]


def test_disabled_moderator_warns(write_policy: WritePolicy) -> None:
    extra = (
        "users:\n  mod@example.com: {disabled: true}\n"
        "lists:\n  l@example.com: {members: [x@example.net], moderators: [mod@example.com],"
        " posting: moderators}\n"
    )
    assert "lists.l@example.com.moderators[0]: moderator mod@example.com is disabled" in _warnings(
        write_policy, extra
    )


def test_password_hash_checks(write_policy: WritePolicy) -> None:
    extra = "users:\n  a@example.com: {}\n  b@example.com: {}\n"
    bcrypt = "$2y$05$" + "a" * 53
    secrets = (
        f"password_hashes:\n  a@example.com: '{ARGON}'\n  b@example.com: '{bcrypt}'\n"
        f"  ghost@example.com: '{ARGON}'\n"
    )
    warnings = _warnings(write_policy, extra, secrets)
    assert warnings == [
        "password_hashes.b@example.com: hashed with bcrypt, not argon2id",
        "password_hashes.ghost@example.com: password hash for ghost@example.com, who is not a user",
    ]


def test_plain_password_in_hashes_is_an_error(write_policy: WritePolicy) -> None:
    extra = "users:\n  a@example.com: {}\n"
    secrets = "password_hashes:\n  a@example.com: Summer2026!\n"
    with pytest.raises(PolicyInvalid) as raised:
        _load(write_policy, extra, secrets)
    (error,) = [p for p in raised.value.problems if p.severity == "error"]
    assert error.file.endswith("secrets.yml")
    assert (error.line, error.column) == (2, 18)
    assert "Summer2026" not in error.text()


@pytest.mark.parametrize(
    ("value", "scheme"),
    [
        (ARGON, "argon2id"),
        ("{ARGON2ID}" + ARGON, "argon2id"),
        ("$2b$12$" + "x" * 53, "bcrypt"),
        ("$6$saltsalt$" + "y" * 86, "sha512-crypt"),
        ("$6$rounds=5000$saltsalt$" + "y" * 86, "sha512-crypt"),
        ("plaintext", None),
        ("$1$md5salt$hash", None),
    ],
)
def test_hash_schemes(value: str, scheme: str | None) -> None:
    assert hash_scheme_of(value) == scheme


LIST = (
    "users:\n  a@example.com: {}\n"
    "lists:\n  l@example.com: {members: [a@example.com], moderators: [a@example.com]}\n"
)


def test_a_list_post_held_event_may_tell_only_the_moderators(write_policy: WritePolicy) -> None:
    relay = "  notification_relay: {host: relay.example.net}\n"
    path = write_policy(
        MINIMAL_POLICY.replace("server:\n", "server:\n" + relay)
        + LIST
        + "events:\n  - {on: list.post_held, notify_moderators: true}\n"
    )
    (event,) = load_policy(path).policy.events
    assert event.notify == []


def test_a_list_post_held_event_must_tell_someone(write_policy: WritePolicy) -> None:
    errors = _errors(write_policy, LIST + "events:\n  - {on: list.post_held}\n")
    assert errors == ["events[0]: list.post_held notifies nobody"]


def test_only_list_post_held_has_moderators_to_tell(write_policy: WritePolicy) -> None:
    extra = (
        "notifications:\n  chat: {webhook: {url: 'https://chat.example.net/h'}}\n"
        "events:\n  - {on: throttle.hit, notify: [chat], notify_moderators: true}\n"
    )
    (error,) = _errors(write_policy, extra)
    assert error == "events[0].notify_moderators: unknown key 'notify_moderators'"


def test_moderators_are_told_through_the_relay(write_policy: WritePolicy) -> None:
    extra = LIST + "events:\n  - {on: list.post_held, notify_moderators: true}\n"
    assert _errors(write_policy, extra) == [
        "events[0].notify_moderators: moderators are told by email, "
        "which needs server.notification_relay"
    ]


def test_users_told_of_a_failed_audit_need_the_relay(write_policy: WritePolicy) -> None:
    extra = "password_policy:\n  audit: {schedule: weekly, notify_users: true}\n"
    assert _errors(write_policy, extra) == [
        "password_policy.audit.notify_users: users are told by email, "
        "which needs server.notification_relay"
    ]
    quiet = "password_policy:\n  audit: {schedule: weekly, notify_users: false}\n"
    assert _load(write_policy, quiet).policy.password_policy.audit is not None


def test_expiry_without_a_warning_ahead_warns(write_policy: WritePolicy) -> None:
    told = "password_policy:\n  max_age: 365d\n  audit: {notify_users: true}\n"
    relay = MINIMAL_POLICY.replace("server:\n", "server:\n  notification_relay: {host: r.test}\n")
    assert load_policy(write_policy(relay + told)).warnings == []
    for untold in ("  max_age: 365d\n", "  max_age: 365d\n  audit: {schedule: daily}\n"):
        assert _warnings(write_policy, "password_policy:\n" + untold) == [
            "password_policy.max_age: expired passwords stop working at login, and nobody "
            "tells their users ahead"
        ]


@pytest.mark.parametrize("key", ["max_age_grace", "max_age_warning"])
def test_expiry_settings_without_max_age_warn(write_policy: WritePolicy, key: str) -> None:
    assert _warnings(write_policy, f"password_policy:\n  {key}: 3d\n") == [
        f"password_policy.{key}: {key} has no effect without max_age"
    ]


def test_expiry_warnings_that_could_not_reach_the_users(write_policy: WritePolicy) -> None:
    relay = MINIMAL_POLICY.replace("server:\n", "server:\n  notification_relay: {host: r.test}\n")

    def warned(rules: str) -> list[str]:
        loaded = load_policy(write_policy(relay + "password_policy:\n" + rules))
        return [f"{w.path}: {w.message}" for w in loaded.warnings]

    monthly = "  max_age: 365d\n  audit: {schedule: monthly, notify_users: true}\n"
    assert warned(monthly) == [
        "password_policy.max_age_warning: the monthly audit may never run within 2w of a "
        "password's expiry: its user would not be told"
    ]
    assert warned(monthly + "  max_age_warning: 31d\n") == []
    always = "  max_age: 10d\n  audit: {notify_users: true}\n"
    assert warned(always) == [
        "password_policy.max_age_warning: 2w is not shorter than max_age (1w3d): every "
        "password is always about to expire"
    ]


def test_a_compromised_login_rule_that_can_never_trip(write_policy: WritePolicy) -> None:
    rule = "abuse:\n  compromised_login: {within: 1h, signals: 2}\n"
    assert _errors(write_policy, "users:\n  a@example.com: {}\n" + rule) == [
        "abuse.compromised_login.signals: never suspends anyone: it needs 2 kinds of sign "
        "and this policy shows 0 (none)"
    ]
    # a throttle on the domain, the same-size rule and client addresses: three kinds
    shown = (
        "throttles:\n  t: {messages: 10/h}\n"
        "abuse:\n  internal_spammer: {same_size_messages: 5, within: 10m}\n"
        "  compromised_login: {within: 1h, signals: 4, client_addresses: 4}\n"
    )
    domain = MINIMAL_POLICY.replace("example.com: {}", "example.com: {throttle: t}")
    with pytest.raises(PolicyInvalid) as raised:
        load_policy(write_policy(domain + shown))
    assert [p.message for p in raised.value.problems if p.severity == "error"] == [
        "never suspends anyone: it needs 4 kinds of sign and this policy shows 3 "
        "(throttle, same_size, client_addresses)"
    ]
    fine = shown.replace("signals: 4", "signals: 3")
    warnings = [p.message for p in load_policy(write_policy(domain + fine)).warnings]
    assert "a login is suspended and nobody is told" in warnings


def test_signals_are_between_one_and_four(write_policy: WritePolicy) -> None:
    (error,) = _errors(write_policy, "abuse:\n  compromised_login: {within: 1h, signals: 5}\n")
    assert error.startswith("abuse.compromised_login.signals:")


def test_a_recovery_address_is_elsewhere_and_needs_the_relay(write_policy: WritePolicy) -> None:
    assert _errors(write_policy, "users:\n  a@example.com: {recovery_email: b@example.com}\n") == [
        "users.a@example.com.recovery_email: a recovery address must be outside this "
        "server's domains",
        "users.a@example.com.recovery_email: a suspended user is told by email, which "
        "needs server.notification_relay",
    ]
