"""Batched checkpoints (``runtime/checkpoints.py``): the batching itself. How runs use it
(owner checks, cancellation, replay by a retry) is in ``test_durable.py``; database
outages under it in ``test_faults.py``."""

from __future__ import annotations

import asyncio
import threading

import pytest

from pagerduty_connector.runtime.checkpoints import BATCH, Batches


def test_items_that_arrive_while_a_batch_is_in_the_database_go_together() -> None:
    started, go_on = threading.Event(), threading.Event()
    batches: list[list[int]] = []

    def work(items: list[int]) -> list[int]:
        batches.append(items)
        started.set()
        go_on.wait(5)
        return [n * 10 for n in items]

    async def scenario() -> list[int]:
        together: Batches[int, int] = Batches(work)
        first = asyncio.create_task(together.submit(0))
        await asyncio.get_running_loop().run_in_executor(None, started.wait, 5)
        rest = [asyncio.create_task(together.submit(n)) for n in range(1, 6)]
        await asyncio.sleep(0.05)
        go_on.set()
        return await asyncio.gather(first, *rest)

    assert asyncio.run(scenario()) == [0, 10, 20, 30, 40, 50]
    assert batches == [[0], [1, 2, 3, 4, 5]]  # alone at once, then all that waited


def test_a_batch_is_never_larger_than_its_limit() -> None:
    sizes: list[int] = []

    def work(items: list[int]) -> list[int]:
        sizes.append(len(items))
        return items

    async def scenario() -> list[int]:
        together: Batches[int, int] = Batches(work)
        return await asyncio.gather(*(together.submit(n) for n in range(BATCH * 2 + 1)))

    assert asyncio.run(scenario()) == list(range(BATCH * 2 + 1))
    assert max(sizes) == BATCH and sum(sizes) == BATCH * 2 + 1


def test_a_failed_batch_fails_its_own_callers_and_the_next_batch_goes_on() -> None:
    def work(items: list[str]) -> list[str]:
        if "bad" in items:
            raise RuntimeError("disk full")
        return [item.upper() for item in items]

    async def scenario() -> tuple[list[object], str]:
        together: Batches[str, str] = Batches(work)
        failed = await asyncio.gather(
            together.submit("bad"), together.submit("with it"), return_exceptions=True
        )
        return failed, await together.submit("later")

    failed, later = asyncio.run(scenario())
    assert [str(e) for e in failed] == ["disk full", "disk full"]
    assert later == "LATER"


def test_a_caller_that_stops_waiting_leaves_the_others_their_results() -> None:
    release = threading.Event()

    def work(items: list[int]) -> list[int]:
        release.wait(5)
        return items

    async def scenario() -> int:
        together: Batches[int, int] = Batches(work)
        first = asyncio.create_task(together.submit(1))
        second = asyncio.create_task(together.submit(2))
        await asyncio.sleep(0.05)
        first.cancel()
        release.set()
        with pytest.raises(asyncio.CancelledError):
            await first
        return await second

    assert asyncio.run(scenario()) == 2
