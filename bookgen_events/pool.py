"""A bounded pool of worker tasks that run queued coroutines: the consumer's deliveries.

At most ``size`` worker tasks, fed from a queue. A worker runs one coroutine at a time, so a
delivery that waits (an HTTP call) holds one worker while the others go on, and one that
never waits costs no task of its own: a fast channel is not paced by task creation.

Why hand-rolled rather than a task each bounded by a semaphore (arq's shape): on uvloop a
no-op coroutine costs ~0.9 µs through this pool against ~7.8 µs as a task under an
``asyncio.Semaphore`` (100,000 coroutines, 64 at a time, on the 2-core bench box), where a
whole delivery costs the runtime ~9.5 µs of Python (``python -m bench.consume``).

How many workers run: if no worker is inside a coroutine that waits, one worker is enough
and runs queued work back to back (a batch that never waits costs no wake-ups); once some
wait, workers start for all the queued work at once (up to ``size``).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any, Generic, TypeVar

from .cancelling import cancel_and_wait

T = TypeVar("T")


class WorkerPool(Generic[T]):
    """Runs submitted coroutines on at most ``size`` worker tasks.

    Each coroutine comes with a ``token`` (what it settles); ``done(token, error, load)`` is
    called when it has finished, with ``error`` None, the exception it raised, or the
    ``CancelledError`` of :meth:`close`, and ``load`` the work still queued or running (the
    caller's cue that room freed up). ``done`` must not raise.
    """

    def __init__(
        self,
        size: int,
        done: Callable[[T, BaseException | None, int], None],
        *,
        name: str = "worker",
    ) -> None:
        self.size = size
        self._done = done
        self._name = name
        self._queue: deque[tuple[Coroutine[Any, Any, object], T]] = deque()
        self._busy = 0  # workers running a coroutine
        self._workers: set[asyncio.Task[None]] = set()
        self._idle: list[asyncio.Future[None]] = []  # workers waiting for work
        self._spread_pending = False
        self._waking = 0  # workers woken or started that have not run yet
        self._quiet = asyncio.Event()  # set when nothing is queued or running

    @property
    def load(self) -> int:
        """Coroutines queued or running."""
        return len(self._queue) + self._busy

    def submit(self, work: Coroutine[Any, Any, object], token: T) -> None:
        """Queue ``work``; it starts on a worker soon (never inside this call)."""
        self._queue.append((work, token))
        if not self._spread_pending:
            self._spread_pending = True
            asyncio.get_running_loop().call_soon(self._spread)

    async def quiesce(self) -> None:
        """Wait until nothing is queued or running."""
        while self.load:
            self._quiet.clear()
            await self._quiet.wait()

    async def close(self) -> list[T]:
        """Stop every worker: queued work is closed unstarted and its tokens returned;
        running work is cancelled (``done`` gets its ``CancelledError``)."""
        unstarted = []
        while self._queue:  # emptied first, so no worker starts anything meanwhile
            work, token = self._queue.popleft()
            work.close()
            unstarted.append(token)
        await cancel_and_wait(list(self._workers))
        self._idle.clear()
        self._waking = 0
        return unstarted

    def _spread(self) -> None:
        """Hand queued work to more workers; runs as a callback, between workers' turns."""
        self._spread_pending = False
        wanted = (len(self._queue) if self._busy else min(len(self._queue), 1)) - self._waking
        while wanted > 0:
            if self._idle:
                waiter = self._idle.pop()
                if waiter.done():  # cancelled
                    continue
                waiter.set_result(None)
            elif len(self._workers) < self.size:
                worker = asyncio.create_task(self._worker(), name=self._name)
                self._workers.add(worker)
                worker.add_done_callback(self._workers.discard)
            else:
                return
            self._waking += 1
            wanted -= 1

    async def _worker(self) -> None:
        queue = self._queue
        done = self._done
        loop = asyncio.get_running_loop()
        self._waking -= 1  # started by _spread
        while True:
            if not queue:
                waiter = loop.create_future()
                self._idle.append(waiter)
                await waiter
                self._waking -= 1
                continue
            work, token = queue.popleft()
            if queue and not self._spread_pending:
                self._spread_pending = True
                loop.call_soon(self._spread)
            self._busy += 1
            error: BaseException | None = None
            try:
                await work
            except BaseException as exc:
                error = exc
            self._busy -= 1
            load = len(queue) + self._busy
            done(token, error, load)
            if not load:
                self._quiet.set()
            if error is not None and not isinstance(error, Exception):
                raise error  # cancelled: the pool is closing
