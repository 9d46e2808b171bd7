"""Stopping tasks for certain: cancel, and cancel again while they live.

On Python 3.11 ``asyncio.wait_for`` swallows a cancellation that lands as its inner future
completes (CPython gh-86296; fixed in 3.12). redis-py awaits ``wait_for`` on its command path,
so a task cancelled in the middle of a Redis call may carry on as if nothing happened, and
``await task`` after one ``cancel()`` can wait forever (seen as a dispatcher that never
stopped). :func:`cancel_and_wait` cancels until the tasks are done.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

#: How long a cancelled task gets before it is cancelled again.
RECANCEL_AFTER_S = 0.1


async def cancel_and_wait(tasks: Iterable[asyncio.Future[Any]]) -> None:
    """Cancel every task and return once all are done, whatever each one raised."""
    pending = {task for task in tasks if not task.done()}
    while pending:
        for task in pending:
            task.cancel()
        done, pending = await asyncio.wait(pending, timeout=RECANCEL_AFTER_S)
        for task in done:
            if not task.cancelled():
                task.exception()  # retrieved: the caller chose not to hear it
