"""Why a message is held, for `postwarden moderation list`: the engine notes each hold
it decides, at RCPT (before Postfix has a queue ID) or at END-OF-MESSAGE, and says so
with the queue ID; the usage log keeps it in its ``holds`` table."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from postwarden.policy.load import load_policy
from postwarden.policyd import engine as engine_module
from postwarden.policyd.engine import Engine, Hold
from postwarden.policyd.stores import LocalStore
from postwarden.policyd.usage import UsageLog
from postwarden.policyd.view import compile_view
from postwarden.reports.usage import read_holds

WritePolicy = Callable[..., Path]

POLICY = """\
server: {hostname: mail.example.com, postmaster: ops@example.net}
domains:
  example.com: {}
users:
  alice@example.com: {}
  bob@example.com: {throttle: holding}
lists:
  mods@example.com: {members: [alice@example.com, bob@example.com],
                     moderators: [alice@example.com], posting: moderators}
throttles:
  holding: {messages: 1/h, action: hold}
"""


@pytest.fixture
def engine(write_policy: WritePolicy) -> tuple[Engine, list[Hold]]:
    view = compile_view(load_policy(write_policy(POLICY)).policy)
    holds: list[Hold] = []
    return Engine(view, LocalStore(), on_hold=holds.append), holds


def request(state: str, instance: str, queue_id: str = "", **extra: str) -> dict[str, str]:
    return {
        "protocol_state": state,
        "instance": instance,
        "queue_id": queue_id,
        "client_address": "192.0.2.7",
        "sasl_username": "bob@example.com",
        "sender": "bob@example.com",
        "recipient": "mods@example.com",
        "recipient_count": "1",
        "size": "900",
        **extra,
    }


async def test_a_hold_at_rcpt_is_said_with_the_queue_id_at_end_of_message(
    engine: tuple[Engine, list[Hold]],
) -> None:
    decider, holds = engine
    action = await decider.decide(request("RCPT", "a1.b2"))
    assert action == "HOLD post to mods@example.com awaits a moderator"
    assert holds == []  # no queue ID yet
    await decider.decide(request("END-OF-MESSAGE", "a1.b2", "4F00D"))
    assert holds == [
        Hold(
            "4F00D",
            "post to mods@example.com awaits a moderator",
            "bob@example.com",
            "bob@example.com",
        )
    ]
    # said once: the next transaction on the connection is another message
    alice = {"sasl_username": "alice@example.com", "sender": "alice@example.com"}
    await decider.decide(request("END-OF-MESSAGE", "a1.b2", "4F00E", **alice))
    assert len(holds) == 1


async def test_a_hold_at_end_of_message_is_said_with_its_own_reason(
    engine: tuple[Engine, list[Hold]],
) -> None:
    decider, holds = engine
    first = request("END-OF-MESSAGE", "c3", "5A1", recipient="friend@remote.test")
    second = request("END-OF-MESSAGE", "c4", "5A2", recipient="friend@remote.test")
    assert await decider.decide(first) == "DUNNO"
    assert (await decider.decide(second)).startswith("HOLD sending limit reached")
    ((queue_id, reason, login, _),) = holds
    assert (queue_id, login) == ("5A2", "bob@example.com")
    assert reason.startswith("sending limit reached: messages 1/h")


async def test_nothing_held_nothing_said(engine: tuple[Engine, list[Hold]]) -> None:
    decider, holds = engine
    alice = {"sasl_username": "alice@example.com", "sender": "alice@example.com"}
    await decider.decide(request("RCPT", "d5", **alice))
    await decider.decide(request("END-OF-MESSAGE", "d5", "6B1", **alice))
    assert holds == []


async def test_transactions_that_never_end_are_forgotten(
    engine: tuple[Engine, list[Hold]], monkeypatch: pytest.MonkeyPatch
) -> None:
    decider, holds = engine
    monkeypatch.setattr(engine_module, "HELD_AT_RCPT_KEPT", 3)
    for number in range(5):  # a client that gives up after RCPT, again and again
        await decider.decide(request("RCPT", f"gone{number}"))
    assert len(decider._held_at_rcpt) == 3
    await decider.decide(request("END-OF-MESSAGE", "gone0", "7C1"))
    assert holds == []  # the oldest went first
    await decider.decide(request("END-OF-MESSAGE", "gone4", "7C2"))
    assert [h.queue_id for h in holds] == ["7C2"]


def test_the_usage_log_keeps_the_latest_reason_for_each_held_message(tmp_path: Path) -> None:
    path = tmp_path / "usage.sqlite"
    usage = UsageLog(str(path), 1000)
    usage.add_hold("8D1", "post to mods@example.com awaits a moderator", "", "x@remote.test")
    usage.add_hold("8D2", "sending limit reached", "bob@example.com", "bob@example.com")
    assert read_holds(str(path), ["8D1"]) == {}  # written with the next batch
    usage.flush()
    usage.add_hold("8D2", "spam (rspamd score 11.00)", "bob@example.com", "bob@example.com")
    usage.close()
    assert read_holds(str(path), ["8D1", "8D2", "9Z9"]) == {
        "8D1": ("post to mods@example.com awaits a moderator", "", "x@remote.test"),
        "8D2": ("spam (rspamd score 11.00)", "bob@example.com", "bob@example.com"),
    }


def test_no_usage_log_no_reasons(tmp_path: Path) -> None:
    assert read_holds(str(tmp_path / "absent.sqlite"), ["8D1"]) == {}
    (tmp_path / "garbage.sqlite").write_bytes(b"not a database at all" * 100)
    assert read_holds(str(tmp_path / "garbage.sqlite"), ["8D1"]) == {}
    assert not (tmp_path / "absent.sqlite").exists()
