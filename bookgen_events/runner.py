"""Process assembly: one Redis client, the workers this deployment runs, signals, shutdown.

A worker is a module exposing ``async def serve(bus, settings, stop, **options)`` that runs
until ``stop`` is set. Channel workers build their channel and call :func:`run_channel`.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import importlib
import signal
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any, TypeVar

from prometheus_client import start_http_server

from .bus import EventBus
from .channel import Channel
from .connection import create_redis, resolve_redis_url
from .consumer import Consumer
from .embedded import EmbeddedRedis
from .logs import get_logger
from .metrics import keep_stream_gauges_fresh
from .settings import Settings

log = get_logger("bookgen_events.runner")

#: Worker name -> module providing ``serve``. Modules not installed yet are simply absent.
WORKERS = {
    "gateway": "gateway.app",
    "webhook": "consumers.webhook",
    "email": "consumers.emails",
    "logger": "consumers.logger",
}

Serve = Callable[..., Coroutine[Any, Any, None]]
T = TypeVar("T")


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


def load_worker(name: str) -> Serve | None:
    """The worker's ``serve`` function, or None if that module does not exist (yet)."""
    module_name = WORKERS.get(name)
    if module_name is None:
        return None
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            return None
        raise
    return getattr(module, "serve", None)


def enabled_workers(settings: Settings) -> list[str]:
    """Workers ``up`` runs: every one that exists and is switched on."""
    wanted = ["webhook"]
    if settings.email_enabled:
        wanted.append("email")
    if settings.enable_notification_logging:
        wanted.append("logger")
    return [name for name in wanted if load_worker(name) is not None]


async def run_channel(
    bus: EventBus, settings: Settings, channel: Channel, stop: asyncio.Event, **overrides: Any
) -> None:
    """Run ``channel`` on the consumer runtime until ``stop`` is set."""
    consumer = Consumer.from_settings(bus, channel, settings, **overrides)
    task = asyncio.create_task(consumer.run())
    stopper = asyncio.create_task(stop.wait())
    await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
    consumer.stop()
    stopper.cancel()
    await task


def install_signal_handlers(stop: asyncio.Event) -> None:
    """SIGTERM and SIGINT set ``stop``: in-flight work finishes or is handed back."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)


@contextlib.asynccontextmanager
async def open_bus(settings: Settings) -> AsyncIterator[EventBus]:
    """One Redis client for the process, closed on exit."""
    redis = create_redis(resolve_redis_url(settings))
    try:
        yield EventBus.from_settings(redis, settings)
    finally:
        await redis.aclose()


async def run_workers(
    settings: Settings, workers: dict[str, dict[str, Any]], stop: asyncio.Event
) -> None:
    """Run workers (name -> options) side by side until ``stop``; a crash in one stops all."""
    async with open_bus(settings) as bus:
        tasks: list[asyncio.Task[None]] = []
        for name, options in workers.items():
            serve = load_worker(name)
            if serve is None:
                raise SystemExit(f"worker {name!r} is not available in this installation")
            tasks.append(asyncio.create_task(serve(bus, settings, stop, **options), name=name))
        tasks.append(asyncio.create_task(keep_stream_gauges_fresh(bus, stop), name="gauges"))
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
def embedded_if_needed(settings: Settings) -> Any:
    """With no ``REDIS_URL``, run the embedded server for the duration and point settings at it."""
    if settings.redis_url:
        yield settings
        return
    server = EmbeddedRedis(settings.embedded_data_dir)
    url = server.start()
    log.warning("no REDIS_URL: using the embedded server", url=url)
    try:
        yield settings.model_copy(update={"redis_url": url})
    finally:
        server.stop()
