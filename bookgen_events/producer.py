"""``emit`` and ``emit_many`` for producers, with sync twins for code without an event loop.

The module-level functions use a default bus built lazily from the settings (one client per
event loop, since an asyncio Redis connection belongs to the loop that opened it). Pass
``bus=`` or call :func:`configure` to inject your own client instead.
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from collections.abc import Iterable
from typing import Any

import redis as sync_redis

from . import scripts, tracing
from .bus import EventBus
from .connection import create_redis, create_sync_redis, is_cluster, resolve_redis_url
from .events import Event, encode, make_event
from .idempotency import CHUNK, script_call
from .keys import StreamNames
from .partitions import partition_of
from .scheduled_events import Cancelled, cancel_in
from .settings import Settings, get_settings

_buses: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, EventBus] = weakref.WeakKeyDictionary()
_configured: dict[str, Any] = {}


def configure(*, settings: Settings | None = None, bus: EventBus | None = None) -> None:
    """Set the settings (and optionally the bus) the module-level producers use."""
    _buses.clear()
    _configured.clear()
    if settings is not None:
        _configured["settings"] = settings
    if bus is not None:
        _buses[asyncio.get_running_loop()] = bus
    _sync.reset()


def _settings() -> Settings:
    return _configured.get("settings") or get_settings()


def default_bus() -> EventBus:
    """The bus for the running event loop, created on first use."""
    loop = asyncio.get_running_loop()
    bus = _buses.get(loop)
    if bus is None:
        settings = _settings()
        client = create_redis(resolve_redis_url(settings), cluster=settings.redis_cluster)
        bus = EventBus.from_settings(client, settings)
        _buses[loop] = bus
    return bus


async def aclose() -> None:
    """Close the default bus of the running loop (call before the loop ends, e.g. at shutdown)."""
    bus = _buses.pop(asyncio.get_running_loop(), None)
    if bus is not None:
        await bus.redis.aclose()


async def emit(event: Event | dict[str, Any], *, bus: EventBus | None = None) -> str:
    """Validate and append one event; returns its stream entry id.

    Raises :class:`~bookgen_events.errors.EventValidationError` (a ``ValueError``) and writes
    nothing when the event is invalid.
    """
    return await (bus or default_bus()).emit(event)


async def emit_many(
    events: Iterable[Event | dict[str, Any]], *, bus: EventBus | None = None
) -> list[str]:
    """Validate every event, then append them all in one pipelined round trip."""
    return await (bus or default_bus()).emit_many(events)


async def cancel(event_id: str, *, bus: EventBus | None = None) -> Cancelled:
    """Cancel an event held for its ``deliver_at``: CANCELLED, ALREADY_SENT or UNKNOWN."""
    bus = bus or default_bus()
    return await cancel_in([part.scheduled_events for part in bus.partitions], event_id)


class SyncProducer:
    """Blocking producer over a sync Redis client, for Celery tasks and scripts."""

    def __init__(self, client: sync_redis.Redis, settings: Settings) -> None:
        self.client = client
        # The same key names as the asyncio bus: one set per partition (STREAM_PARTITIONS),
        # tagged on a cluster; an event goes to its partition, as EventBus.emit sends it.
        count = settings.stream_partitions
        self.partitions = [
            StreamNames(
                settings.stream_prefix, partition=p, partitions=count, cluster=is_cluster(client)
            )
            for p in range(count)
        ]
        self.names = self.partitions[0]
        self.maxlen = settings.stream_maxlen
        self.max_event_bytes = settings.max_event_bytes
        self.window_ms = int(settings.idempotency_window * 1000)
        self._script = client.register_script(scripts.source("emit_many"))
        self._cancel = client.register_script(scripts.source("cancel_event"))

    def emit(self, event: Event | dict[str, Any]) -> str:
        """As :meth:`EventBus.emit`: once per id within the window, held until ``deliver_at``."""
        [stream_id] = self.emit_many([event])
        return stream_id

    def emit_many(self, events: Iterable[Event | dict[str, Any]]) -> list[str]:
        encoded = []
        for e in events:
            event = make_event(e)
            if tracing.ACTIVE:
                event = tracing.traced_event(event)
            encoded.append((event, encode(event, self.max_event_bytes)))
        count = len(self.partitions)
        parts: dict[int, list[int]] = {}
        for i, (event, _) in enumerate(encoded):
            parts.setdefault(partition_of(event, count) if count > 1 else 0, []).append(i)
        out = [""] * len(encoded)
        for part, at in parts.items():
            for k in range(0, len(at), CHUNK):
                chunk = at[k : k + CHUNK]
                keys, args = script_call(
                    self.partitions[part],
                    [encoded[i] for i in chunk],
                    maxlen=self.maxlen,
                    window_ms=self.window_ms,
                )
                for i, stream_id in zip(chunk, self._script(keys=keys, args=args), strict=True):
                    out[i] = stream_id
        return out

    def cancel(self, event_id: str) -> Cancelled:
        """As :func:`cancel` (in whichever partition holds it)."""
        found = Cancelled.UNKNOWN
        for names in self.partitions:
            keys = [*names.held, names.idempotency(event_id)]
            found = Cancelled.from_reply(self._cancel(keys=keys, args=[event_id]))
            if found is not Cancelled.UNKNOWN:
                break
        return found


class _SyncDefault:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._producer: SyncProducer | None = None

    def get(self) -> SyncProducer:
        with self._lock:
            if self._producer is None:
                settings = _settings()
                # A cluster client on a cluster (detected, or REDIS_CLUSTER)
                client = create_sync_redis(
                    resolve_redis_url(settings), cluster=settings.redis_cluster
                )
                self._producer = SyncProducer(client, settings)
            return self._producer

    def reset(self) -> None:
        with self._lock:
            self._producer = None


_sync = _SyncDefault()


def emit_sync(event: Event | dict[str, Any]) -> str:
    """Blocking twin of :func:`emit`."""
    return _sync.get().emit(event)


def emit_many_sync(events: Iterable[Event | dict[str, Any]]) -> list[str]:
    """Blocking twin of :func:`emit_many`."""
    return _sync.get().emit_many(events)


def cancel_sync(event_id: str) -> Cancelled:
    """Blocking twin of :func:`cancel`."""
    return _sync.get().cancel(event_id)
