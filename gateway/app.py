"""The gateway's Starlette app (``create_app``) and its uvicorn runner (``serve``).

The app's lifespan runs the one broadcast reader (:class:`~gateway.fanout.Fanout`);
``serve`` runs uvicorn inside the caller's loop with the runner owning signals, and on
``stop`` closes every WebSocket with 1001 before letting uvicorn exit (uvicorn's own
shutdown would say 1012).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.routing import BaseRoute, Route, WebSocketRoute

from bookgen_events.bus import EventBus
from bookgen_events.errors import ConfigError
from bookgen_events.logs import get_logger
from bookgen_events.settings import Settings

from . import http
from .auth import MIN_SECRET_BYTES, weak_secret
from .fanout import Fanout
from .protocol import FramedWebSocketProtocol
from .websocket import notifications

log = get_logger("gateway.app")

AUTH_OFF_WARNING = (
    "WEBSOCKET_AUTH=none: WebSocket auth is OFF. Anyone who can reach this gateway can "
    "watch any job or user. Set WEBSOCKET_AUTH=jwt and WEBSOCKET_JWT_SECRET in production."
)


def _routes(settings: Settings) -> list[BaseRoute]:
    routes: list[BaseRoute] = [
        Route("/", http.page),
        Route("/app.js", http.page_script),
        Route("/ws/status", http.ws_status),
        Route("/health", http.health),
        Route("/metrics", http.metrics),
        Route("/events", http.post_events, methods=["POST"]),
    ]
    if settings.websocket_enabled:  # WEBSOCKET_ENABLED=false keeps only the HTTP endpoints
        routes.append(WebSocketRoute("/ws/notifications", notifications))
    try:  # written by the logger's engineer; mounted once it exists
        from .notifications import list_notifications
    except ImportError:
        log.info("GET /notifications not mounted: gateway.notifications is not installed")
    else:
        routes.append(Route("/notifications", list_notifications))
    return routes


def create_app(bus: EventBus, settings: Settings) -> Starlette:
    """The gateway app over an injected bus; the fan-out starts and stops with its lifespan."""
    if settings.websocket_auth == "jwt" and settings.websocket_jwt_secret is None:
        raise ConfigError(
            "WEBSOCKET_AUTH=jwt needs WEBSOCKET_JWT_SECRET (or set WEBSOCKET_AUTH=none explicitly)"
        )
    secret = settings.websocket_jwt_secret
    if settings.websocket_auth == "jwt" and secret and weak_secret(secret.get_secret_value()):
        log.warning(
            f"WEBSOCKET_JWT_SECRET is shorter than {MIN_SECRET_BYTES} bytes: use a longer one"
        )
    fanout = Fanout(bus)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if settings.websocket_auth == "none":
            log.warning(AUTH_OFF_WARNING)
        await fanout.start()
        log.info("gateway fan-out reading", stream=bus.names.events, position=fanout.position)
        try:
            yield
        finally:
            await fanout.stop()

    app = Starlette(routes=_routes(settings), lifespan=lifespan)
    app.state.settings = settings
    app.state.bus = bus
    app.state.fanout = fanout
    return app


async def close_all(fanout: Fanout, code: int, reason: str, grace_s: float = 5.0) -> None:
    """Close every subscribed WebSocket and wait (bounded) for their handlers to finish."""
    for sub in list(fanout.all):
        sub.shut(code, reason)
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(grace_s):
            await fanout.idle.wait()


class _RedactTokens(logging.Filter):
    """uvicorn logs WebSocket paths with their query string; tokens must not reach logs."""

    _TOKEN = re.compile(r"(token=)[^&\s\"]+")

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "token=" in message:
            record.msg, record.args = self._TOKEN.sub(r"\1***", message), None
        return True


class _Server(uvicorn.Server):
    """uvicorn without its own signal handlers: the runner's SIGTERM/SIGINT set ``stop``."""

    @contextlib.contextmanager
    def capture_signals(self) -> Any:
        yield


async def serve(
    bus: EventBus,
    settings: Settings,
    stop: asyncio.Event,
    *,
    host: str,
    port: int,
    ping_interval: float | None = None,
    ping_timeout: float | None = None,
) -> None:
    """Serve the gateway until ``stop`` is set; pings every WEBSOCKET_PING_INTERVAL seconds and
    drops a client silent for WEBSOCKET_PING_TIMEOUT (Centrifugo's 25 s / 8 s by default)."""
    app = create_app(bus, settings)
    for name in ("uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _RedactTokens) for f in logger.filters):
            logger.addFilter(_RedactTokens())
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        lifespan="on",
        log_config=None,
        access_log=False,
        ws=FramedWebSocketProtocol,
        ws_per_message_deflate=False,
        ws_max_size=64 * 1024,  # clients have nothing big to say
        ws_ping_interval=ping_interval or settings.websocket_ping_interval,
        ws_ping_timeout=ping_timeout or settings.websocket_ping_timeout,
        timeout_graceful_shutdown=5,
    )
    server = _Server(config)
    server_task = asyncio.create_task(server.serve(), name="gateway-uvicorn")
    stopper = asyncio.create_task(stop.wait())
    await asyncio.wait({server_task, stopper}, return_when=asyncio.FIRST_COMPLETED)
    stopper.cancel()
    if not server_task.done():
        log.info("gateway stopping: closing WebSockets with 1001")
        await close_all(app.state.fanout, 1001, "server shutting down")
        server.should_exit = True
    await server_task
