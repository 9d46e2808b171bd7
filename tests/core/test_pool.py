"""WorkerPool: bounded worker tasks running queued coroutines (no Redis involved)."""

from __future__ import annotations

import asyncio

from bookgen_events.pool import WorkerPool


class Record:
    """What a pool reported through ``done``."""

    def __init__(self) -> None:
        self.done: list[tuple[int, BaseException | None]] = []
        self.loads: list[int] = []

    def __call__(self, token: int, error: BaseException | None, load: int) -> None:
        self.done.append((token, error))
        self.loads.append(load)


async def test_every_coroutine_runs_and_reports_once() -> None:
    """Each submitted coroutine runs, ``done`` gets its token once, and the pool goes quiet."""
    record, ran = Record(), []

    async def work(i: int) -> None:
        ran.append(i)

    pool: WorkerPool[int] = WorkerPool(4, record)
    for i in range(50):
        pool.submit(work(i), i)
    assert pool.load == 50
    await pool.quiesce()
    assert sorted(ran) == list(range(50))
    assert sorted(record.done, key=lambda d: d[0]) == [(i, None) for i in range(50)]
    assert record.loads == list(range(49, -1, -1))  # what is left after each
    assert pool.load == 0
    assert await pool.close() == []


async def test_work_that_never_waits_runs_on_one_worker() -> None:
    """A batch that never waits costs one worker task, not one per coroutine."""
    tasks: set[asyncio.Task[object] | None] = set()

    async def work() -> None:
        tasks.add(asyncio.current_task())

    pool: WorkerPool[int] = WorkerPool(8, Record())
    for i in range(100):
        pool.submit(work(), i)
    await pool.quiesce()
    assert len(tasks) == 1
    await pool.close()


async def test_waiting_work_spreads_over_at_most_size_workers() -> None:
    """While coroutines wait, more workers start, but never more than ``size`` at once."""
    gate, running, peak = asyncio.Event(), 0, 0

    async def work() -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await gate.wait()
        running -= 1

    record = Record()
    pool: WorkerPool[int] = WorkerPool(5, record)
    for i in range(20):
        pool.submit(work(), i)
    for _ in range(20):
        await asyncio.sleep(0)
    assert peak == 5 and pool.load == 20
    gate.set()
    await pool.quiesce()
    assert len(record.done) == 20 and peak == 5
    await pool.close()


async def test_a_failing_coroutine_is_reported_and_the_pool_goes_on() -> None:
    """An exception goes to ``done`` with its token; later work still runs."""
    record = Record()

    async def boom() -> None:
        raise ValueError("no")

    async def fine() -> None:
        pass

    pool: WorkerPool[int] = WorkerPool(2, record)
    pool.submit(boom(), 1)
    pool.submit(fine(), 2)
    await pool.quiesce()
    [(token, error), later] = record.done
    assert token == 1 and isinstance(error, ValueError)
    assert later == (2, None)
    await pool.close()


async def test_close_hands_back_queued_work_and_cancels_running_work() -> None:
    """Unstarted coroutines are closed (never run) and returned; running ones see a cancel."""
    record, started = Record(), []

    async def forever(i: int) -> None:
        started.append(i)
        await asyncio.Event().wait()

    pool: WorkerPool[int] = WorkerPool(2, record)
    for i in range(5):
        pool.submit(forever(i), i)
    for _ in range(10):
        await asyncio.sleep(0)
    assert sorted(started) == [0, 1]
    assert sorted(await pool.close()) == [2, 3, 4]
    assert sorted(token for token, _ in record.done) == [0, 1]
    assert all(isinstance(error, asyncio.CancelledError) for _, error in record.done)
    assert sorted(started) == [0, 1]
