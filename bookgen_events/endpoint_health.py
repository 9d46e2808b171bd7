"""Auto-disable (SPEC 9): an endpoint that only ever fails is switched off, and operators told.

Each failed attempt to an endpoint counts in its failing window (one Redis script, shared by
every dispatcher replica); any success closes the window. When a window has lasted
``ENDPOINT_DISABLE_AFTER`` (5 days, Svix's) with at least ``ENDPOINT_DISABLE_MIN_FAILURES``
(10) failures and nothing else, the endpoint is disabled with the reason and an
``admin_alert`` (``alert_type`` "endpoint_disabled", the endpoint's id and URL in its
metadata) is emitted, so operators hear of it on their own channels. A change to the
endpoint, re-enabling it included, starts a new window.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from . import scripts
from .connection import run_script_many
from .endpoints import Endpoint, EndpointRegistry
from .events import Event
from .keys import StreamNames
from .logs import get_logger
from .outcomes import now_ms
from .service import EventFactory

log = get_logger("bookgen_events.endpoint_health")

#: How long a success here vouches for an endpoint's window being closed.
SUCCESS_EVERY_S = 10.0


class EndpointHealth:
    """Counts an endpoint's failures, closes its window on success, disables when due."""

    def __init__(
        self,
        redis: Redis,
        names: StreamNames,
        registry: EndpointRegistry,
        emit: Callable[[Event], Awaitable[str]],
        *,
        disable_after_s: float,
        min_failures: int,
        admin_emails: Sequence[str] = (),
    ) -> None:
        self._r: Any = redis
        self.key = names.endpoint_health
        self.registry = registry
        self.emit = emit
        self.disable_after_ms = disable_after_s * 1000
        self.min_failures = min_failures
        self._alerts = EventFactory(admin_emails=list(admin_emails))
        self._failure = scripts.register(redis, "endpoint_failure")
        # Endpoint id -> until when (monotonic) its window is known closed by a success here.
        self._closed: dict[str, float] = {}
        # What this loop turn's deliveries reported, written together by one call each: one
        # event to 100 endpoints must not take 100 Redis connections at once.
        self._closing: list[str] = []
        self._failing: list[tuple[list[Any], asyncio.Future[tuple[int, int]]]] = []
        self._writes: set[asyncio.Task[None]] = set()

    async def succeeded(self, endpoint: Endpoint) -> None:
        """Close the endpoint's failing window, if it may have one.

        A success writes only after a failure seen here, or once per ``SUCCESS_EVERY_S``
        (another replica's failures), and the writes of one loop turn go in one HDEL, not
        awaited by the delivery: an HDEL per delivery cost the dispatcher a Redis round trip
        per endpoint delivery, and with 100 endpoints per event exhausted the connection pool
        (bench/webhook.py). A window that lasts days is not wronged by closing ten seconds late.
        """
        now = time.monotonic()
        if self._closed.get(endpoint.id, 0.0) > now:
            return
        if len(self._closed) >= 65536:
            self._closed.clear()
        self._closed[endpoint.id] = now + SUCCESS_EVERY_S
        if not self._closing:
            asyncio.get_running_loop().call_soon(self._later, self._close_windows)
        self._closing.append(endpoint.id)

    def _later(self, write: Callable[[], Coroutine[Any, Any, None]]) -> None:
        task = asyncio.create_task(write())
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    async def _close_windows(self) -> None:
        ids, self._closing = self._closing, []
        try:
            await self._r.hdel(self.key, *ids)
        except (RedisError, OSError) as exc:
            for endpoint_id in ids:  # not known closed: the next success tries again
                self._closed.pop(endpoint_id, None)
            log.warning("endpoint health not recorded", endpoints=len(ids), error=str(exc))

    async def _count_failures(self) -> None:
        batch, self._failing = self._failing, []
        try:
            replies = await run_script_many(
                self._r, self._failure, [([self.key], args) for args, _ in batch]
            )
        except BaseException as exc:
            for _, counted in batch:
                if not counted.done():
                    counted.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        for (_, counted), (since, count) in zip(batch, replies, strict=True):
            if not counted.done():
                counted.set_result((int(since), int(count)))

    async def failed(self, endpoint: Endpoint, reason: str) -> bool:
        """Count a failure; True when it disabled the endpoint (one replica wins)."""
        self._closed.pop(endpoint.id, None)  # the next success closes the window at once
        now = now_ms()
        counted: asyncio.Future[tuple[int, int]] = asyncio.get_running_loop().create_future()
        if not self._failing:
            asyncio.get_running_loop().call_soon(self._later, self._count_failures)
        self._failing.append(([endpoint.id, now, repr(endpoint.updated_at)], counted))
        since, count = await counted
        if count < self.min_failures or now - int(since) < self.disable_after_ms:
            return False
        if not await self._r.hdel(self.key, endpoint.id):
            return False  # another replica is disabling it
        days = (now - int(since)) / 86_400_000
        why = f"every delivery failed for {days:.1f} days ({count} attempts); last: {reason}"
        await self.registry.disable(endpoint.id, why[:500])
        alert = self._alerts.admin_alert(
            "endpoint_disabled",
            f"Endpoint {endpoint.id} ({endpoint.url}) was disabled: {why}"[:1000],
            metadata={
                "endpoint_id": endpoint.id,
                "url": endpoint.url,
                "failures": count,
                "failing_since_ms": int(since),
            },
        )
        await self.emit(alert)
        log.warning("endpoint disabled", endpoint_id=endpoint.id, failures=count)
        return True
