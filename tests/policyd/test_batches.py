"""What one batch of operations means, the same in both stores: budgets are all or
nothing when mail is refused, and a ban says whether it is new."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from postwarden.policyd.counters import Counters
from postwarden.policyd.decide import Ban, Op, Result, SimilarSizes, Take
from postwarden.policyd.redis_store import RedisStore
from tests.throwaway_redis import RedisServer

Run = Callable[[list[Op]], Awaitable[list[Result]]]


@pytest.fixture(params=["local", "redis"])
async def run(request: pytest.FixtureRequest) -> AsyncIterator[Run]:
    if request.param == "local":
        counters = Counters()

        async def run_locally(ops: list[Op]) -> list[Result]:
            return counters.run(ops, 1_000_000.0)

        yield run_locally
        return
    server: RedisServer = request.getfixturevalue("redis_server")
    store = RedisStore(server.url)
    yield store.run
    await store.close()


MESSAGES: Op = Take("u:messages", 1, 3, 3600)
BYTES_OVER: Op = Take("u:bytes", 6000, 10_000, 3600)


async def test_a_refusing_take_that_does_not_fit_counts_nothing(run: Run) -> None:
    assert await run([MESSAGES, BYTES_OVER]) == [True, True]
    # the bytes do not fit: the message is refused, so it does not use a message either
    assert await run([MESSAGES, BYTES_OVER]) == [True, False]
    assert await run([MESSAGES, Take("u:bytes", 1000, 10_000, 3600)]) == [True, True]
    assert await run([MESSAGES, Take("u:bytes", 1000, 10_000, 3600)]) == [True, True]
    assert await run([MESSAGES]) == [False]


async def test_a_take_that_only_holds_or_notifies_does_not_stop_the_others(run: Run) -> None:
    assert await run([Take("held", 1, 1, 3600, refuses=False)]) == [True]
    lenient: list[Op] = [Take("held", 1, 1, 3600, refuses=False), Take("other", 1, 5, 3600)]
    assert await run(lenient) == [False, True]
    assert await run(lenient) == [False, True]
    assert await run([Take("other", 1, 3, 3600)]) == [True]  # 3 of 3 now
    assert await run([Take("other", 1, 3, 3600)]) == [False]


async def test_a_refused_message_does_not_record_its_size(run: Run) -> None:
    full = Take("m", 1, 1, 3600)
    sizes = SimilarSizes("sizes", 5000, 600, 0.02)
    assert await run([full, sizes]) == [True, 1]
    # offered again and again after its deferral: still one message of that size
    assert await run([full, sizes]) == [False, 0]
    assert await run([full, sizes]) == [False, 0]
    assert await run([sizes]) == [2]


async def test_a_ban_says_whether_it_is_new(run: Run) -> None:
    assert await run([Ban("192.0.2.7", 600)]) == [True]
    assert await run([Ban("192.0.2.7", 600)]) == [False]
    assert await run([Ban("192.0.2.8", 600)]) == [True]
