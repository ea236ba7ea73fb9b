"""The daemon's policy, loaded in a child process: what comes back, what does not,
and how failures are told apart."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from postwarden.policy.load import PolicyInvalid, load_policy
from postwarden.policyd import runtime as runtime_module
from postwarden.policyd.pools import PoolRuntime
from postwarden.policyd.runtime import LoaderFailed, load_runtime
from postwarden.policyd.settings import PolicydSettings
from tests.policyd.test_pools import HOSTNAME, SENDERS
from tests.policyd.test_pools import POLICY as POOLS_POLICY

WritePolicy = Callable[..., Path]

POLICY = """\
server: {hostname: mail.example.com, postmaster: ops@example.net}
domains:
  example.com: {throttle: staff}
users:
  alice@example.com: {aliases: [info@example.com]}
  bob@example.com: {throttle: tight}
  carol@example.com: {}
lists:
  team@example.com: {members: [alice@example.com], posting: members}
throttles:
  staff: {messages: 100/h}
  tight: {messages: 2/h}
"""


def settings_for(policy: Path) -> PolicydSettings:
    return PolicydSettings(policy=str(policy), secrets=str(policy.parent / "secrets.yml"))


def test_the_daemon_gets_the_lookups_and_the_policy_without_its_users(
    write_policy: WritePolicy,
) -> None:
    loaded = load_runtime(settings_for(write_policy(POLICY)))
    assert loaded.policy.users == {}
    assert set(loaded.policy.lists) == {"team@example.com"}
    assert loaded.hostname == "mail.example.com"
    view = loaded.view
    assert view.user_throttles["alice@example.com"].name == "staff"
    assert view.user_throttles["bob@example.com"].name == "tight"
    assert {"alice@example.com", "info@example.com", "team@example.com"} <= view.known_addresses
    # one throttle object per throttle, however many users share it
    assert view.user_throttles["alice@example.com"] is view.user_throttles["carol@example.com"]


def test_an_invalid_policy_comes_back_with_its_positions(write_policy: WritePolicy) -> None:
    broken = write_policy(POLICY.replace("throttle: tight", "throttle: tigth"))
    with pytest.raises(PolicyInvalid) as raised:
        load_runtime(settings_for(broken))
    (problem,) = [p for p in raised.value.problems if p.severity == "error"]
    assert problem.text().startswith(f"{broken}:6:")
    assert "tigth" in problem.text()


def test_a_broken_loader_is_not_taken_for_a_bad_policy(
    write_policy: WritePolicy, monkeypatch: pytest.MonkeyPatch
) -> None:
    crash = [sys.executable, "-c", "import sys; print('out of memory', file=sys.stderr); exit(3)"]
    monkeypatch.setattr(runtime_module, "CHILD", crash)
    with pytest.raises(LoaderFailed, match=r"exit 3\): out of memory"):
        load_runtime(settings_for(write_policy(POLICY)))


def test_pools_answer_the_same_without_the_users(write_policy: WritePolicy) -> None:
    path = write_policy(POOLS_POLICY)
    full = PoolRuntime(load_policy(str(path)).policy, HOSTNAME)
    loaded = load_runtime(settings_for(path))
    trimmed = PoolRuntime(loaded.policy, HOSTNAME, user_pools=loaded.view.user_pools)
    senders = [
        *SENDERS,
        "ceo@example.com",
        "ceo+x@example.com",
        "news@example.org",
        "plain@example.org",
        "@example.com",
        "@bulk.example",
        "stranger@bulk.example",
        f"owner-pwlist-all-staff=example.com@{HOSTNAME}",
    ]
    assert [trimmed.lookup(s) for s in senders] == [full.lookup(s) for s in senders]
    assert trimmed.lookup("ceo@example.com") == "pw_solo_2001_db8__5"
