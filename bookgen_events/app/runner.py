"""Process assembly: the event loop, one Redis client, the workers, signals, shutdown.

A worker is an ``async def serve(bus, settings, stop, **options)`` that runs until ``stop``
is set (:mod:`bookgen_events.app.workers` lists them). Redis must answer before anything
starts; an embedded server is started when no ``REDIS_URL`` is set.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import re
import signal
import socket
from collections.abc import AsyncIterator, Coroutine, Iterator
from typing import Any, TypeVar

from prometheus_client import start_http_server
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ..bus import EventBus
from ..cancelling import cancel_and_wait
from ..connection import create_redis, resolve_redis_url
from ..credentials import redact_url
from ..embedded import EmbeddedRedis
from ..errors import Unreachable
from ..logs import get_logger
from ..metrics import keep_stream_gauges_fresh
from ..retention import keep_trimmed
from ..scheduled_events import keep_moving
from ..settings import Settings
from .workers import consumed_streams, serve_function

log = get_logger("bookgen_events.app.runner")

T = TypeVar("T")

_DRIVER_PREFIX = re.compile(r"^\([\w.]+\)\s*")

#: How long a command waits for Redis to answer at start before saying it cannot reach it.
CONNECT_TIMEOUT_S = 5.0


def failure_reason(exc: BaseException) -> str:
    """The short cause of a connection failure: ``connection refused``, ``timed out``...

    The operating system's words when an OSError lies in the chain; else the last clause of
    the error's first line (drivers prefix theirs: ``connection failed: ...: Connection
    refused``), without a leading ``(module.ErrorClass)``.
    """
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, (TimeoutError, RedisTimeoutError)):
            return "timed out"
        if isinstance(seen, OSError) and isinstance(seen.errno, int):
            text = seen.strerror if isinstance(seen, socket.gaierror) else os.strerror(seen.errno)
            return (text or str(seen)).rstrip(".").lower()
        seen = seen.__cause__ or seen.__context__
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = _DRIVER_PREFIX.sub("", lines[0]) if lines else type(exc).__name__
    text = text.rsplit(": ", 1)[-1].strip().rstrip(".")
    return text[:1].lower() + text[1:]


def tune_gc() -> None:
    """Make the cyclic garbage collector cheap for a long-running worker.

    A delivery allocates a few dozen short-lived containers (coroutines, the event's
    models, its records); with CPython's default gen0 threshold of 700 the collector ran every
    ~20 deliveries, rescanning the survivors each time, and cost 12 % of the runtime's
    throughput. Freezing what exists at start (modules, pydantic schemas) keeps it out of
    every later scan; a gen0 threshold of 5,000 lets most garbage die by refcount first.
    Measured: the same throughput as with the collector off.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(5_000, 10, 10)


def run_loop(main: Coroutine[Any, Any, T]) -> T:
    """Run a process's event loop: uvloop where it is installed, else asyncio's own.

    uvloop schedules tasks and callbacks in C; the consumer runtime measured 10-15 % more
    deliveries/s on it (bench/consume.py). The collector is tuned for the same reason (see
    :func:`tune_gc`).
    """
    tune_gc()
    try:
        import uvloop
    except ImportError:  # not built for this platform (Windows)
        return asyncio.run(main)
    return uvloop.run(main)


def install_signal_handlers(stop: asyncio.Event) -> None:
    """SIGTERM and SIGINT set ``stop``: in-flight work finishes or is handed back."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)


def _redis_variable(settings: Settings) -> str:
    if settings.redis_url:
        return "REDIS_URL"
    return f"embedded server in EMBEDDED_DATA_DIR={settings.embedded_data_dir}"


class _Stopped(Exception):
    """``stop`` was set before Redis answered: nothing was started, nothing to hand back."""


async def _check_redis(
    redis: Redis, url: str, settings: Settings, stop: asyncio.Event | None
) -> None:
    """Raise :class:`Unreachable` unless Redis answers a PING within CONNECT_TIMEOUT_S, or
    :class:`_Stopped` if ``stop`` is set first (SIGTERM always ends a starting process)."""
    ping: asyncio.Future[Any] = asyncio.ensure_future(redis.ping())
    waits: set[asyncio.Future[Any]] = {ping}
    stopped = asyncio.ensure_future(stop.wait()) if stop is not None else None
    if stopped is not None:
        waits.add(stopped)
    done, pending = await asyncio.wait(
        waits, timeout=CONNECT_TIMEOUT_S, return_when=asyncio.FIRST_COMPLETED
    )
    await cancel_and_wait(pending)
    if ping in done:
        try:
            ping.result()
        except (RedisError, OSError) as exc:
            reason = failure_reason(exc)
        else:
            return
    elif stopped in done:
        raise _Stopped
    else:
        reason = f"no answer within {CONNECT_TIMEOUT_S:g} s"
    raise Unreachable("Redis", redact_url(url), _redis_variable(settings), reason)


@contextlib.asynccontextmanager
async def open_bus(
    settings: Settings, *, check: bool = True, stop: asyncio.Event | None = None
) -> AsyncIterator[EventBus]:
    """One Redis client for the process, closed on exit.

    With ``check`` it first makes sure Redis answers (one PING, raced against ``stop``), so
    a command that cannot reach it says so in one line (:class:`Unreachable`) instead of a
    traceback; a connection lost later is reported the same way.
    """
    url = resolve_redis_url(settings)
    redis = create_redis(
        url, cluster=settings.redis_cluster, socket_connect_timeout=CONNECT_TIMEOUT_S
    )
    try:
        if check:
            await _check_redis(redis, url, settings, stop)
        try:
            bus = EventBus.from_settings(redis, settings)
            if check:
                await bus.check_layout()
            yield bus
        except (RedisConnectionError, RedisTimeoutError) as exc:
            raise Unreachable(
                "Redis", redact_url(url), _redis_variable(settings), failure_reason(exc)
            ) from exc
    finally:
        await redis.aclose()


async def run_workers(
    settings: Settings, workers: dict[str, dict[str, Any]], stop: asyncio.Event
) -> None:
    """Run workers (name -> options) side by side until ``stop``; a crash in one stops all.

    Redis must answer first (else :class:`Unreachable`); a ``stop`` meanwhile ends it at once.
    """
    try:
        async with open_bus(settings, stop=stop) as bus:
            await _run_tasks(bus, settings, workers, stop)
    except _Stopped:
        log.info("stopped before Redis answered: nothing started")


async def _run_tasks(
    bus: EventBus, settings: Settings, workers: dict[str, dict[str, Any]], stop: asyncio.Event
) -> None:
    # A new group starts at the end of the stream (SPEC 11): the consumers' groups exist
    # before any worker serves, so nothing emitted once the gateway answers is missed.
    for name in workers:
        for stream in consumed_streams(bus, name):
            await bus.ensure_group(name, stream=stream)
    tasks: list[asyncio.Task[None]] = []
    for name, options in workers.items():
        serve = serve_function(name)
        tasks.append(asyncio.create_task(serve(bus, settings, stop, **options), name=name))
    tasks.append(asyncio.create_task(keep_stream_gauges_fresh(bus, stop), name="gauges"))
    # Whichever process runs moves due scheduled events: no scheduler of its own (SPEC 11).
    for part in bus.partitions:
        mover = keep_moving(part.scheduled_events, stop)
        tasks.append(asyncio.create_task(mover, name=f"mover-{part.names.partition}"))
    # STREAM_RETENTION and DLQ_RETENTION: every process trims (idempotent); off when unset.
    tasks.append(asyncio.create_task(keep_trimmed(bus, settings, stop), name="retention"))
    log.info("workers running", workers=sorted(workers))
    try:
        # The first to finish (normally all, after stop) ends the wait; a crash raises.
        await asyncio.gather(*tasks)
    finally:
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)


def start_metrics_server(port: int | None) -> None:
    if port:
        start_http_server(port, addr="127.0.0.1")
        log.info("metrics exposed", port=port)


@contextlib.contextmanager
def embedded_if_needed(settings: Settings) -> Iterator[tuple[Settings, EmbeddedRedis | None]]:
    """With no ``REDIS_URL``, run the embedded server for the duration and point settings at it.

    Yields the settings to use and the server (None when ``REDIS_URL`` is set). The server
    is stopped on the way out, whatever ends the block (an error, a signal turned exception).
    """
    if settings.redis_url:
        yield settings, None
        return
    server = EmbeddedRedis(settings.embedded_data_dir)
    url = server.start()
    try:
        log.warning("no REDIS_URL: using the embedded server", url=redact_url(url))
        yield settings.model_copy(update={"redis_url": url}), server
    finally:
        server.stop()
