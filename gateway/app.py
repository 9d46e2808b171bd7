"""The gateway's Starlette app (``create_app``) and its uvicorn runner (``serve``).

The app's lifespan runs the one broadcast reader (:class:`~gateway.fanout.Fanout`);
``serve`` runs uvicorn inside the caller's loop with the runner owning signals, and on
``stop`` closes every WebSocket with 1001 before letting uvicorn exit (uvicorn's own
shutdown would say 1012).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import re
import socket
from collections.abc import AsyncIterator
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.routing import BaseRoute, Route, WebSocketRoute

from bookgen_events.bus import EventBus
from bookgen_events.errors import ConfigError, GatewayBindError
from bookgen_events.logs import get_logger
from bookgen_events.settings import Settings
from bookgen_events.subscriber_index import SubscriberIndex
from bookgen_events.subscribers import SubscriberRegistry

from . import console, endpoints, http, openapi, operations, subscribers, unsubscribe
from .access import admin_only
from .admission import ConnectionCaps
from .auth import MIN_SECRET_BYTES, weak_secret
from .fanout import Fanout
from .headers_timeout import HeadersTimeoutProtocol
from .notifications import list_notifications
from .protocol import FramedWebSocketProtocol
from .websocket import notifications

log = get_logger("gateway.app")

AUTH_OFF_WARNING = (
    "WEBSOCKET_AUTH=none: WebSocket auth is OFF. Anyone who can reach this gateway can "
    "watch any job or user. Set WEBSOCKET_AUTH=jwt and WEBSOCKET_JWT_SECRET in production."
)


def _routes(settings: Settings) -> list[BaseRoute]:
    """Open: the page, health, status and metrics (no per-user data). Keyed: the rest."""
    routes: list[BaseRoute] = [
        Route("/", http.page),
        Route("/app.js", http.page_script),
        Route("/ws/status", http.ws_status),
        Route("/health", http.health),
        Route("/metrics", http.metrics),
        Route("/events", http.post_events, methods=["POST"]),  # PRODUCER_API_KEY
        Route("/events/{event_id}", http.cancel_event, methods=["DELETE"]),  # PRODUCER_API_KEY
        Route("/notifications", admin_only(list_notifications)),
        *endpoints.ROUTES,  # ADMIN_API_KEY
        *subscribers.ROUTES,  # ADMIN_API_KEY
        *unsubscribe.ROUTES,  # the signed link is the key
        *operations.ROUTES,  # ADMIN_API_KEY: status, dead letters, replay
        *console.ROUTES,  # the page holds no data; its every call carries ADMIN_API_KEY
        *openapi.ROUTES,  # the API's description, open
    ]
    if settings.websocket_enabled:  # WEBSOCKET_ENABLED=false keeps only the HTTP endpoints
        routes.append(WebSocketRoute("/ws/notifications", notifications))
    return routes


def check_secret(settings: Settings) -> None:
    """Refuse to start with WebSocket auth on and no, or a too short, signing secret."""
    if settings.websocket_auth != "jwt":
        return
    secret = settings.websocket_jwt_secret
    if secret is None:
        raise ConfigError(
            "WEBSOCKET_AUTH=jwt needs WEBSOCKET_JWT_SECRET (or set WEBSOCKET_AUTH=none explicitly)"
        )
    if weak_secret(secret.get_secret_value()):
        raise ConfigError(
            f"WEBSOCKET_JWT_SECRET is shorter than {MIN_SECRET_BYTES} bytes: HS256 needs a key "
            "at least as long as its hash (e.g. python -c 'import secrets; "
            "print(secrets.token_urlsafe(32))')"
        )


def create_app(bus: EventBus, settings: Settings) -> Starlette:
    """The gateway app over an injected bus; the fan-out starts and stops with its lifespan."""
    check_secret(settings)
    fanout = Fanout(bus)
    # Subscribers' WebSocket preferences, kept current (SPEC 9): see Fanout.muted.
    subscribers = SubscriberIndex(SubscriberRegistry.for_prefix(bus.redis, bus.names.prefix))
    fanout.subscribers = subscribers

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if settings.websocket_auth == "none":
            log.warning(AUTH_OFF_WARNING)
        async with subscribers.kept_current(wait=False):
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
    app.state.connection_caps = ConnectionCaps(settings.websocket_max_connections_per_user)
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
    sock = listen(host, port)
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
        http=functools.partial(  # type: ignore[arg-type]
            HeadersTimeoutProtocol, header_timeout=settings.http_header_timeout
        ),
        ws=FramedWebSocketProtocol,
        ws_per_message_deflate=False,
        ws_max_size=64 * 1024,  # clients have nothing big to say
        ws_ping_interval=ping_interval or settings.websocket_ping_interval,
        ws_ping_timeout=ping_timeout or settings.websocket_ping_timeout,
        timeout_graceful_shutdown=5,
    )
    server = _Server(config)
    server_task = asyncio.create_task(server.serve(sockets=[sock]), name="gateway-uvicorn")
    stopper = asyncio.create_task(stop.wait())
    await asyncio.wait({server_task, stopper}, return_when=asyncio.FIRST_COMPLETED)
    stopper.cancel()
    if not server_task.done():
        log.info("gateway stopping: closing WebSockets with 1001")
        await close_all(app.state.fanout, 1001, "server shutting down")
        server.should_exit = True
    try:
        await server_task
    finally:
        sock.close()


def listen(host: str, port: int) -> socket.socket:
    """The gateway's listening socket, bound here so that a taken port is a clear error.

    (uvicorn logs a bind failure and calls ``sys.exit`` inside its task, which leaves the
    rest of the process running.)
    """
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise GatewayBindError(f"cannot listen on {host}:{port}: {_reason(exc)}") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        raise GatewayBindError(f"cannot listen on {host}:{port}: {_reason(exc)}") from None
    sock.set_inheritable(True)
    return sock


def _reason(exc: OSError) -> str:
    return (exc.strerror or str(exc)).lower()
