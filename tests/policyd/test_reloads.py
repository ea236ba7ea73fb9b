"""SIGHUPs that arrive while a reload runs: one more reload after it, not one each."""

from __future__ import annotations

import asyncio

from postwarden.policyd.daemon import Reloads


async def test_signals_during_a_reload_make_one_more_reload() -> None:
    started: list[int] = []
    gate = asyncio.Event()

    async def reload() -> None:
        started.append(len(started))
        await gate.wait()
        gate.clear()

    reloads = Reloads(reload)
    reloads.request()
    await asyncio.sleep(0)
    assert started == [0]
    for _ in range(3):  # three more signals while the first reload loads
        reloads.request()
    gate.set()
    await asyncio.sleep(0.01)
    assert started == [0, 1]  # the file as it is now is loaded once more
    gate.set()
    assert reloads.task is not None
    await reloads.task
    assert started == [0, 1]
    reloads.request()  # a signal after everything settled starts a new one
    await asyncio.sleep(0)
    assert started == [0, 1, 2]
    gate.set()
    await reloads.task
