"""IP pools at run time: which transport a sender's mail leaves through, with
addresses quarantined and released while Postfix runs."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import pytest

from postwarden.policy.load import load_policy
from postwarden.policy.models import Policy
from postwarden.policyd.pools import PoolRuntime
from postwarden.render.postfix import sender_transports

WritePolicy = Callable[..., Path]
HOSTNAME = "mail.example.com"

POLICY = """\
server: {hostname: mail.example.com, postmaster: ops@example.net}
domains:
  example.com: {ip_pool: main}
  example.org: {}
  bulk.example: {ip_pool: bulk}
users:
  alice@example.com: {}
  ceo@example.com: {ip_pool: solo}
  news@example.org: {ip_pool: bulk}
  plain@example.org: {}
lists:
  all-staff@example.com: {members: [alice@example.com], priority: low}
  chatter@example.com: {members: [alice@example.com]}
  misc@example.org: {members: [plain@example.org], priority: low}
ip_pools:
  main:
    helo: out.example.com
    addresses:
      - {address: 203.0.113.10}
      - {address: 203.0.113.11}
      - {address: 203.0.113.12}
      - {address: 203.0.113.13, state: draining}
      - {address: 203.0.113.14, state: quarantined}
  bulk:
    helo: bulk.example.com
    addresses: [{address: 203.0.113.20}]
    failover: main
  solo:
    helo: solo.example.com
    addresses: [{address: "2001:db8::5"}]
"""

M10, M11, M12, M13, M14 = (f"pw_main_203_0_113_{n}" for n in (10, 11, 12, 13, 14))
MAIN = [M10, M11, M12]
B20 = "pw_bulk_203_0_113_20"
S5 = "pw_solo_2001_db8__5"
LISTS_MAIN = "pw_lists_main"
STAFF_OWNER = f"owner-pwlist-all-staff=example.com@{HOSTNAME}"
CHATTER_OWNER = f"owner-pwlist-chatter=example.com@{HOSTNAME}"
MISC_OWNER = f"owner-pwlist-misc=example.org@{HOSTNAME}"
SENDERS = [f"user{i}@example.com" for i in range(500)]


def spread(names: list[str], key: str) -> str:
    """The documented spread: the first 4 bytes of SHA-256 of the key, modulo."""
    digest = hashlib.sha256(key.encode()).digest()
    return names[int.from_bytes(digest[:4], "big") % len(names)]


def no_address(pool: str) -> str:
    return f"retry:4.7.0 pool {pool} has no active outbound address"


@pytest.fixture
def policy(write_policy: WritePolicy) -> Policy:
    return load_policy(write_policy(POLICY)).policy


@pytest.fixture
def pools(policy: Policy) -> PoolRuntime:
    return PoolRuntime(policy, HOSTNAME)


def test_a_user_with_a_pool_of_their_own(pools: PoolRuntime) -> None:
    assert pools.lookup("ceo@example.com") == S5
    assert pools.lookup("news@example.org") == B20
    assert pools.lookup("News@Example.ORG") == B20


def test_senders_of_a_domain_are_spread_over_its_pool(pools: PoolRuntime, policy: Policy) -> None:
    for sender in ("alice@example.com", "nobody@example.com", "user7@example.com"):
        assert pools.lookup(sender) == spread(MAIN, sender)
    assert pools.lookup("Alice@EXAMPLE.com") == spread(MAIN, "alice@example.com")
    # the same on every run
    again = PoolRuntime(policy, HOSTNAME)
    assert [again.lookup(s) for s in SENDERS] == [pools.lookup(s) for s in SENDERS]


def test_domain_keys(pools: PoolRuntime) -> None:
    assert pools.lookup("@example.com") == spread(MAIN, "example.com")
    assert pools.lookup("@bulk.example") == B20
    assert pools.lookup("@example.org") is None
    assert pools.lookup("@elsewhere.test") is None


def test_senders_without_a_pool_fall_through(pools: PoolRuntime) -> None:
    assert pools.lookup("plain@example.org") is None
    assert pools.lookup("someone@remote.test") is None
    assert pools.lookup("<>") is None
    assert pools.lookup("") is None


def test_draining_and_quarantined_addresses_are_never_chosen(pools: PoolRuntime) -> None:
    assert {pools.lookup(s) for s in SENDERS} == set(MAIN)


def test_runtime_agrees_with_the_rendered_table(pools: PoolRuntime, policy: Policy) -> None:
    table = sender_transports(policy, HOSTNAME)
    assert table  # @domains, users with a pool, list owners
    for key, transport in table:
        assert pools.lookup(key) == transport, key


@pytest.mark.parametrize("state", ["quarantined", "draining"])
def test_taking_an_address_out_and_back(pools: PoolRuntime, state: str) -> None:
    before = {s: pools.lookup(s) for s in SENDERS}

    pools.set_state("203.0.113.10", state)
    assert pools.overrides == {"203.0.113.10": state}
    assert {pools.lookup(s) for s in SENDERS} == {M11, M12}
    assert all(pools.lookup(s) == spread([M11, M12], s) for s in SENDERS)
    assert pools.lookup("@example.com") == spread([M11, M12], "example.com")

    pools.set_state("203.0.113.10", "active")
    assert {s: pools.lookup(s) for s in SENDERS} == before


def test_the_run_time_state_wins_over_the_policy(pools: PoolRuntime) -> None:
    pools.set_state("203.0.113.14", "active")  # quarantined in the policy
    pools.set_state("203.0.113.13", "active")  # draining in the policy
    pools.set_state("203.0.113.11", "quarantined")
    names = [M10, M12, M13, M14]
    assert {pools.lookup(s) for s in SENDERS} == set(names)
    assert all(pools.lookup(s) == spread(names, s) for s in SENDERS)


def test_a_pool_without_an_active_address_uses_its_failover(pools: PoolRuntime) -> None:
    pools.set_state("203.0.113.20", "quarantined")
    assert pools.lookup("news@example.org") == spread(MAIN, "news@example.org")
    assert pools.lookup("@bulk.example") == spread(MAIN, "bulk.example")
    assert pools.lookup("x@bulk.example") == spread(MAIN, "x@bulk.example")


def test_a_pool_with_nothing_left_defers_its_mail(pools: PoolRuntime) -> None:
    pools.set_state("2001:db8::5", "quarantined")
    assert pools.lookup("ceo@example.com") == no_address("solo")

    for address in ("203.0.113.10", "203.0.113.11", "203.0.113.12"):
        pools.set_state(address, "draining")
    assert pools.lookup("alice@example.com") == no_address("main")
    assert pools.lookup("@example.com") == no_address("main")
    # bulk's own address is active
    assert pools.lookup("news@example.org") == B20
    pools.set_state("203.0.113.20", "quarantined")
    # and its failover has nothing either: never None, which would send from the host
    assert pools.lookup("news@example.org") == no_address("bulk")
    assert pools.lookup("@bulk.example") == no_address("bulk")
    assert pools.lookup(STAFF_OWNER) == no_address("main")


def test_unknown_addresses_and_states_are_refused(pools: PoolRuntime) -> None:
    with pytest.raises(KeyError):
        pools.set_state("192.0.2.1", "active")
    with pytest.raises(KeyError):
        pools.set_state("main", "quarantined")
    for state in ("disabled", "", "Active", "None"):
        with pytest.raises(ValueError, match=state or "^$"):
            pools.set_state("203.0.113.10", state)
    assert pools.overrides == {}


def test_the_list_owner_leaves_through_the_list_transport(pools: PoolRuntime) -> None:
    assert pools.lookup(STAFF_OWNER) == LISTS_MAIN
    assert pools.lookup(STAFF_OWNER.upper()) == LISTS_MAIN
    # a list in a domain without a pool: Postfix's default
    assert pools.lookup(MISC_OWNER) is None


def test_the_list_transport_follows_its_address(pools: PoolRuntime) -> None:
    # pw_lists_main is bound to the pool's first active address as rendered: .10
    pools.set_state("203.0.113.11", "quarantined")
    assert pools.lookup(STAFF_OWNER) == LISTS_MAIN

    pools.set_state("203.0.113.10", "quarantined")
    assert pools.lookup(STAFF_OWNER) == spread([M12], STAFF_OWNER) == M12
    pools.set_state("203.0.113.11", "active")
    assert pools.lookup(STAFF_OWNER) == spread([M11, M12], STAFF_OWNER)

    pools.set_state("203.0.113.10", "draining")
    assert pools.lookup(STAFF_OWNER) == spread([M11, M12], STAFF_OWNER)

    pools.set_state("203.0.113.10", "active")
    assert pools.lookup(STAFF_OWNER) == LISTS_MAIN


def test_addresses_report_their_states(pools: PoolRuntime) -> None:
    pools.set_state("203.0.113.10", "quarantined")
    pools.set_state("203.0.113.14", "active")
    assert pools.addresses() == {
        "203.0.113.10": {"pool": "main", "policy": "active", "state": "quarantined"},
        "203.0.113.11": {"pool": "main", "policy": "active", "state": "active"},
        "203.0.113.12": {"pool": "main", "policy": "active", "state": "active"},
        "203.0.113.13": {"pool": "main", "policy": "draining", "state": "draining"},
        "203.0.113.14": {"pool": "main", "policy": "quarantined", "state": "active"},
        "203.0.113.20": {"pool": "bulk", "policy": "active", "state": "active"},
        "2001:db8::5": {"pool": "solo", "policy": "active", "state": "active"},
    }


def test_overrides_given_at_start_apply(policy: Policy) -> None:
    pools = PoolRuntime(policy, HOSTNAME, {"203.0.113.20": "quarantined"})
    assert pools.lookup("news@example.org") == spread(MAIN, "news@example.org")
    assert pools.addresses()["203.0.113.20"]["state"] == "quarantined"


def test_an_address_extension_keeps_the_users_own_pool(pools: PoolRuntime) -> None:
    # None is fine too: Postfix then asks for ceo@example.com
    assert pools.lookup("ceo+news@example.com") in (S5, None)


def test_a_normal_priority_list_does_not_use_the_low_priority_transport(
    pools: PoolRuntime,
) -> None:
    assert pools.lookup(CHATTER_OWNER) in MAIN
