"""abuse.compromised_login: signs of a stolen password line up, the login is suspended;
driven against both stores (the local one and a real Redis)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from postwarden.policy.load import load_policy
from postwarden.policyd.decide import (
    SUSPENDED,
    SUSPENDED_FOR,
    Ban,
    Decision,
    Verdict,
    compromise_sign,
    decide,
    decide_auth,
    suspension_key,
)
from postwarden.policyd.redis_store import RedisStore
from postwarden.policyd.stores import LocalStore, Store
from postwarden.policyd.view import PolicyView, compile_view
from tests.throwaway_redis import RedisServer

WritePolicy = Callable[..., Path]

POLICY = """\
server: {hostname: mail.example.com, postmaster: ops@example.net}
domains:
  example.com: {throttle: small}
users:
  alice@example.com: {}
  bob@example.com: {}
throttles:
  small: {recipients: 2/h, messages: 50/h}
abuse:
  internal_spammer: {same_size_messages: 3, within: 10m, action: notify}
  outbound_spam: {hold_score: 10, reject_score: 15}
  compromised_login: {within: 1h, signals: 2, client_addresses: 3}
"""
NOW = 1_800_000_000.0


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def view(write_policy: WritePolicy) -> PolicyView:
    return compile_view(load_policy(write_policy(POLICY)).policy, ["127.0.0.0/8"])


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture(params=["local", "redis"])
async def store(request: pytest.FixtureRequest, clock: Clock) -> AsyncIterator[Store]:
    if request.param == "local":
        local = LocalStore(clock=clock)
        yield local
        await local.close()
        return
    server: RedisServer = request.getfixturevalue("redis_server")
    redis = RedisStore(server.url)
    yield redis
    await redis.close()


async def drive(decision: Decision, store: Store) -> Verdict:
    try:
        ops = next(decision)
        while True:
            ops = decision.send(await store.run(ops))
    except StopIteration as stop:
        verdict: Verdict = stop.value
        return verdict


def rcpt(login: str, recipient: str, client: str = "192.0.2.50") -> dict[str, str]:
    return {
        "protocol_state": "RCPT",
        "sasl_username": login,
        "sender": login,
        "recipient": recipient,
        "client_address": client,
    }


def end_of_message(login: str, size: int, client: str = "192.0.2.50") -> dict[str, str]:
    return {
        "protocol_state": "END-OF-MESSAGE",
        "sasl_username": login,
        "sender": login,
        "size": str(size),
        "recipient_count": "1",
        "client_address": client,
    }


async def logged_in(store: Store, view: PolicyView, login: str, client: str) -> Verdict:
    report: dict[str, object] = {"login": login, "remote": client, "success": True}
    return await drive(decide_auth("report", report, view, NOW), store)


async def allowed(store: Store, view: PolicyView, login: str) -> str:
    ask: dict[str, object] = {"login": login, "remote": "192.0.2.77"}
    return (await drive(decide_auth("allow", ask, view, NOW), store)).action


async def test_one_kind_of_sign_however_often_suspends_nobody(
    store: Store, view: PolicyView
) -> None:
    """A busy user hitting a throttle all day is not a stolen account."""
    verdicts = [
        await drive(decide(rcpt("alice@example.com", f"r{i}@remote.test"), view), store)
        for i in range(10)
    ]
    assert [v.action.split(" ")[0] for v in verdicts] == ["DUNNO"] * 2 + ["DEFER"] * 8
    assert all("abuse.compromised_login" not in [e.kind for e in v.events] for v in verdicts)
    assert await allowed(store, view, "alice@example.com") == "DUNNO"


async def test_a_throttle_and_a_same_size_burst_suspend_the_login(
    store: Store, view: PolicyView
) -> None:
    for i in range(3):
        await drive(decide(rcpt("alice@example.com", f"r{i}@remote.test"), view), store)
    assert await allowed(store, view, "alice@example.com") == "DUNNO"
    sizes = [await drive(decide(end_of_message("alice@example.com", 5000), view), store)]
    sizes.append(await drive(decide(end_of_message("alice@example.com", 5000), view), store))
    assert [v.action for v in sizes] == ["DUNNO", "DUNNO"]
    third = await drive(decide(end_of_message("Alice@example.com", 5000), view), store)
    # the burst trips internal_spammer (notify), and with the throttle that is two kinds
    assert third.action == "REJECT 5.7.1 this account is suspended: ask your mail administrator"
    assert [e.kind for e in third.events] == ["abuse.internal_spammer", "abuse.compromised_login"]
    suspension = third.events[1]
    assert suspension.subject == "alice@example.com"
    assert "postwarden account release alice@example.com" in suspension.detail
    assert third.logs == (
        "suspend login=alice@example.com reason=compromised_login signals=2 "
        "now=same_size within=3600s",
    )
    assert third.usage is not None
    assert third.usage.decision.startswith("REJECT")
    # refused from now on: mail, and logins to IMAP, POP3 and SMTP AUTH
    after = await drive(decide(rcpt("alice@example.com", "x@remote.test"), view), store)
    assert after == SUSPENDED
    assert await allowed(store, view, "alice@example.com") == "REJECT account suspended"
    # another login is untouched
    assert await allowed(store, view, "bob@example.com") == "DUNNO"
    # a fourth same-size message raises no second event
    fourth = await drive(decide(end_of_message("alice@example.com", 5000), view), store)
    assert "abuse.compromised_login" not in [e.kind for e in fourth.events]


async def test_released_means_the_signs_so_far_are_forgotten(
    store: Store, view: PolicyView
) -> None:
    login = "alice@example.com"
    for i in range(3):
        await drive(decide(rcpt(login, f"r{i}@remote.test"), view), store)
    held = await drive(compromise_sign(login, "spam", view), store)
    assert [e.kind for e in held.events] == ["abuse.compromised_login"]
    assert "now=spam" in held.logs[0]
    assert await store.lift(suspension_key(login)) is True
    assert await allowed(store, view, login) == "DUNNO"
    # one more sign alone does not suspend again: the ones before the release are gone
    again = await drive(compromise_sign(login, "spam", view), store)
    assert again.events == ()
    assert await allowed(store, view, login) == "DUNNO"


async def test_logins_from_too_many_client_addresses_are_a_sign(
    store: Store, view: PolicyView
) -> None:
    login = "bob@example.com"
    for client in ("192.0.2.1", "192.0.2.2", "192.0.2.1", "2001:db8::1"):
        assert (await logged_in(store, view, login, client)).events == ()
    # a fourth address is one more than the three allowed: a sign, not yet two kinds
    assert (await logged_in(store, view, login, "198.51.100.4")).events == ()
    assert await allowed(store, view, login) == "DUNNO"
    held = await drive(compromise_sign(login, "spam", view), store)
    assert [e.kind for e in held.events] == ["abuse.compromised_login"]
    assert await allowed(store, view, login) == "REJECT account suspended"


async def test_signs_that_do_not_line_up_in_the_window_do_not_suspend(
    view: PolicyView, clock: Clock
) -> None:
    store = LocalStore(clock=clock)
    login = "alice@example.com"
    await drive(compromise_sign(login, "spam", view), store)
    clock.now += 3601
    for i in range(3):
        verdict = await drive(decide(rcpt(login, f"r{i}@remote.test"), view), store)
    assert verdict.action.startswith("DEFER")
    assert await allowed(store, view, login) == "DUNNO"
    clock.now += 60
    await drive(compromise_sign(login, "spam", view), store)
    assert await allowed(store, view, login) == "REJECT account suspended"


async def test_without_the_rule_no_sign_is_counted(write_policy: WritePolicy) -> None:
    text = POLICY.replace(
        "  compromised_login: {within: 1h, signals: 2, client_addresses: 3}\n", ""
    )
    view = compile_view(load_policy(write_policy(text)).policy)
    store = LocalStore()
    assert await drive(compromise_sign("alice@example.com", "spam", view), store) == Verdict(
        "DUNNO"
    )
    await logged_in(store, view, "alice@example.com", "192.0.2.1")
    assert store.counters.seen == {}


async def test_mail_relayed_without_a_login_suspends_nothing(
    view: PolicyView,
) -> None:
    """Mail from the host's own networks counts for the user it names, but only a login
    proves the password was used: there is no login to suspend."""
    store = LocalStore()
    relayed = {**end_of_message("", 5000, client="127.0.0.1"), "sender": "alice@example.com"}
    for _ in range(4):
        verdict = await drive(decide(relayed, view), store)
    assert [e.kind for e in verdict.events] == ["abuse.internal_spammer"]
    assert store.counters.seen == {}


SHARED = """\
server: {hostname: mail.example.com, postmaster: ops@example.net}
domains:
  example.com: {shared_throttle: together}
users:
  alice@example.com: {}
  mallory@example.com: {}
throttles:
  together: {recipients: 2/h}
abuse:
  internal_spammer: {same_size_messages: 3, within: 10m, action: notify}
  compromised_login: {within: 1h, signals: 2, client_addresses: 1}
"""


async def test_a_budget_others_spent_is_no_sign_of_the_login(
    write_policy: WritePolicy,
) -> None:
    """mallory spends the domain's shared budget; alice's next mail trips it, which
    says nothing about alice's password."""
    view = compile_view(load_policy(write_policy(SHARED)).policy, ["127.0.0.0/8"])
    store = LocalStore()
    for number in range(2):
        await drive(decide(rcpt("mallory@example.com", f"m{number}@remote.test"), view), store)
    tripped = await drive(decide(rcpt("alice@example.com", "a@remote.test"), view), store)
    assert tripped.action.startswith("DEFER")
    assert store.counters.seen.get("signals:alice@example.com") is None
    # her own second address is one sign only: not suspended
    await logged_in(store, view, "alice@example.com", "192.0.2.1")
    await logged_in(store, view, "alice@example.com", "192.0.2.2")
    assert await allowed(store, view, "alice@example.com") == "DUNNO"


async def test_mail_the_host_relays_under_a_users_address_plants_no_sign(
    view: PolicyView,
) -> None:
    """A web application on the host sends same-size mail as alice+x@: counted apart
    from alice's own, so her one message of that size is no burst of hers."""
    store = LocalStore()
    relayed = {**end_of_message("", 5000, client="127.0.0.1"), "sender": "alice+x@example.com"}
    for _ in range(3):
        await drive(decide(relayed, view), store)
    own = await drive(decide(end_of_message("alice@example.com", 5000), view), store)
    assert own.action == "DUNNO"
    assert store.counters.seen.get("signals:alice@example.com") is None


async def test_a_login_suspended_after_its_rcpt_sends_nothing_at_the_end(
    store: Store, view: PolicyView
) -> None:
    """Its RCPT passed before the suspension (another session, another MTA): the
    message is refused at END-OF-MESSAGE all the same."""
    login = "alice@example.com"
    assert (await drive(decide(rcpt(login, "x@remote.test"), view), store)).action == "DUNNO"
    await store.run([Ban(suspension_key(login), SUSPENDED_FOR)])
    assert await drive(decide(end_of_message(login, 700), view), store) == SUSPENDED
    # another login's message still goes
    other = await drive(decide(end_of_message("bob@example.com", 700), view), store)
    assert other.action == "DUNNO"


async def test_a_late_sign_keeps_the_suspensions_time(view: PolicyView, clock: Clock) -> None:
    store = LocalStore(clock=clock)
    login = "bob@example.com"
    for client in ("192.0.2.1", "192.0.2.2", "192.0.2.3", "192.0.2.4"):
        await logged_in(store, view, login, client)
    await drive(compromise_sign(login, "spam", view), store)
    until = store.counters.bans[suspension_key(login)]
    clock.now += 600
    late = await drive(compromise_sign(login, "spam", view), store)
    assert late.events == ()
    assert store.counters.bans[suspension_key(login)] == until


async def test_an_ipv6_client_counts_as_its_64(store: Store, view: PolicyView) -> None:
    """A phone's privacy addresses change within its /64 all day: one place."""
    login = "bob@example.com"
    for host in range(1, 9):
        await logged_in(store, view, login, f"2001:db8:1:2::{host}")
    await drive(compromise_sign(login, "spam", view), store)
    assert await allowed(store, view, login) == "DUNNO"
    for network in range(3, 7):
        await logged_in(store, view, login, f"2001:db8:1:{network}::1")
    await drive(compromise_sign(login, "spam", view), store)
    assert await allowed(store, view, login) == "REJECT account suspended"
