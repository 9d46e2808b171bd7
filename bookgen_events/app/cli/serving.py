"""``up``, ``gateway`` and ``consume``: the commands that run workers until SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shlex
import signal
import sys
from collections.abc import Iterator
from types import FrameType
from typing import Any

from ...credentials import credentials_notice, ensure_credentials
from ...embedded import EmbeddedRedis
from ...replay import position_group
from ...settings import Settings
from ..listening import own_url, probe_listen, refuse_open_websockets
from ..runner import (
    embedded_if_needed,
    install_signal_handlers,
    open_bus,
    run_loop,
    run_workers,
    start_metrics_server,
)
from ..workers import CONSUMERS, enabled_workers
from .base import Add


class Terminated(BaseException):
    """SIGTERM before the event loop owns signals: unwinds like Ctrl-C, so nothing is left."""


@contextlib.contextmanager
def _sigterm_unwinds() -> Iterator[None]:
    # Until the loop installs its own handlers (which set ``stop``), SIGTERM would kill the
    # process outright and leave the embedded server running; raised here, it unwinds
    # through every ``with`` that started something.
    def handler(signum: int, frame: FrameType | None) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # once: let the unwinding finish
        raise Terminated

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def cmd_up(args: argparse.Namespace, settings: Settings) -> int:
    with _sigterm_unwinds():
        refuse_open_websockets(settings, args.host)
        from_env = settings
        settings = ensure_credentials(settings)
        # What the gateway would refuse, refused before anything is started.
        _check_gateway(settings, args.host, args.port)
        if settings.public_url is None:  # unsubscribe links point at this gateway
            settings = settings.model_copy(update={"public_url": own_url(args.host, args.port)})
        with embedded_if_needed(settings) as (settings, server):
            asyncio.run(_reachable(settings))  # else one line, before any notice
            _print_where(from_env, server)
            names = enabled_workers(settings)
            options: dict[str, dict[str, Any]] = {name: {} for name in names}
            options["gateway"] = {"host": args.host, "port": args.port}
            try:
                run_loop(_serve(settings, options))
            finally:
                # The loop is gone (SIGTERM is back to its default); stopping the embedded
                # server must not be cut short by a second one.
                signal.signal(signal.SIGTERM, signal.SIG_IGN)
    return 0


def _check_gateway(settings: Settings, host: str, port: int) -> None:
    from gateway.app import check_secret  # uvicorn and starlette: only for commands that serve

    check_secret(settings)  # no or a short WEBSOCKET_JWT_SECRET
    probe_listen(host, port)


def _print_where(from_env: Settings, server: EmbeddedRedis | None) -> None:
    """One block on stderr: where generated credentials and the Redis password are kept
    (paths only: the values stay in their files)."""
    paragraphs = []
    notice = credentials_notice(from_env)
    if notice:
        paragraphs.append(notice)
    if server is not None:
        password = shlex.quote(str(server.password_file))
        paragraphs.append(
            f"no REDIS_URL: embedded server on 127.0.0.1:{server.port} (data in "
            f"{server.data_dir}); other shells and folders reach it with\n"
            f'  export REDIS_URL="redis://:$(cat {password})@127.0.0.1:{server.port}/0"'
        )
    if paragraphs:
        block = "\n".join(f"bookgen-events up: {text}" for text in paragraphs)
        print(block, file=sys.stderr, flush=True)


async def _reachable(settings: Settings) -> None:
    async with open_bus(settings):
        pass


async def _serve(settings: Settings, workers: dict[str, dict[str, Any]]) -> None:
    stop = asyncio.Event()
    install_signal_handlers(stop)
    await run_workers(settings, workers, stop)


def cmd_consume(args: argparse.Namespace, settings: Settings) -> int:
    overrides: dict[str, Any] = {}
    if args.concurrency:
        overrides["concurrency"] = args.concurrency
    if args.name:
        overrides["name"] = args.name
    if args.start is not None:
        for line in asyncio.run(_position(settings, args.worker, args.start)):
            print(f"bookgen-events consume {args.worker}: {line}", file=sys.stderr, flush=True)
    start_metrics_server(args.metrics_port)
    run_loop(_serve(settings, {args.worker: overrides}))
    return 0


async def _position(settings: Settings, worker: str, start: str) -> list[str]:
    """``consume --from``: set the group's read position on purpose, before it runs."""

    async with open_bus(settings) as bus:
        # The logger projects the deliveries stream too; its ids are times like the events'.
        streams = [part.names.events for part in bus.partitions]  # STREAM_PARTITIONS
        if worker == "logger":
            streams += [part.names.deliveries for part in bus.partitions]
        return [p.describe() for p in await position_group(bus, worker, start, streams)]


def cmd_gateway(args: argparse.Namespace, settings: Settings) -> int:
    refuse_open_websockets(settings, args.host)
    _check_gateway(settings, args.host, args.port)
    run_loop(_serve(settings, {"gateway": {"host": args.host, "port": args.port}}))
    return 0


def register(add: Add) -> None:
    """Add this module's commands to the parser."""
    p = add("up", cmd_up, "Run the gateway and every enabled consumer in one process.")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p = add("gateway", cmd_gateway, "Run the WebSocket/HTTP gateway.")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p = add("consume", cmd_consume, "Run one consumer group worker.")
    p.add_argument("worker", choices=CONSUMERS)
    p.add_argument(
        "--from",
        dest="start",
        metavar="ID|TIME",
        help="first set the group's position: 0 (every retained event), a stream id or ISO "
        "time (inclusive), or $ (only new events); a new group otherwise starts at the end",
    )
    p.add_argument("--concurrency", type=int, help="entries processed at once")
    p.add_argument("--name", help="consumer name (stable names redo their own pending work)")
    p.add_argument("--metrics-port", type=int, help="expose Prometheus metrics on this port")
