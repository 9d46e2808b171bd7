"""The gateway's HTTP endpoints: POST /events, /health, /ws/status, /metrics and the live page."""

from __future__ import annotations

import asyncio
import json
from functools import cache
from importlib.resources import files

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from redis.exceptions import RedisError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from bookgen_events.bus import EventBus
from bookgen_events.errors import EventTooLargeError, EventValidationError
from bookgen_events.events import make_event
from bookgen_events.jsondepth import MAX_JSON_DEPTH, too_deep
from bookgen_events.logs import get_logger
from bookgen_events.settings import Settings

from .access import error, producer_refusal
from .fanout import Fanout

log = get_logger("gateway.http")

_TOO_DEEP = f"body is JSON nested deeper than {MAX_JSON_DEPTH} levels"


async def _read_body(request: Request, limit: int) -> bytes | None:
    """The body, or None as soon as it exceeds ``limit`` (never buffers more)."""
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit:
        return None
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            return None
    return bytes(body)


async def post_events(request: Request) -> Response:
    """Validate and append one event for producers in other languages."""
    settings: Settings = request.app.state.settings
    bus: EventBus = request.app.state.bus
    refusal = producer_refusal(request)
    if refusal is not None:
        return refusal
    limit = settings.max_event_bytes
    body = await _read_body(request, limit)
    if body is None:
        return error(413, f"body is over MAX_EVENT_BYTES={limit}")
    try:
        payload = json.loads(body)
    except ValueError as exc:
        return error(422, f"body is not valid JSON: {exc}")
    except RecursionError:  # nested past what the parser itself takes
        return error(422, _TOO_DEEP)
    if too_deep(payload):
        return error(422, _TOO_DEEP)
    try:
        event = make_event(payload)
        stream_id = await bus.emit(event)
    except EventTooLargeError as exc:
        return error(413, str(exc))
    except EventValidationError as exc:
        errors = [{"field": field, "message": msg} for field, msg in exc.errors]
        return error(422, str(exc), errors=errors)
    except (RedisError, OSError) as exc:
        log.error("emit failed", error=str(exc))
        return error(503, "event store unavailable")
    return JSONResponse({"stream_id": stream_id, "event_id": event.id}, status_code=201)


async def health(request: Request) -> Response:
    """200 when Redis answers PING and the fan-out reader runs; 503 otherwise."""
    bus: EventBus = request.app.state.bus
    fanout: Fanout = request.app.state.fanout
    settings: Settings = request.app.state.settings
    body: dict[str, object] = {"websocket_auth": settings.websocket_auth}
    try:
        await asyncio.wait_for(bus.ping(), 2.0)
    except Exception as exc:
        return JSONResponse(
            {"status": "unavailable", "redis": f"error: {type(exc).__name__}", **body}, 503
        )
    if not fanout.running:
        return JSONResponse(
            {"status": "unavailable", "redis": "ok", "fanout": "stopped", **body}, 503
        )
    return JSONResponse({"status": "ok", "redis": "ok", "fanout": "running", **body})


async def ws_status(request: Request) -> Response:
    """The seed's shape exactly."""
    fanout: Fanout = request.app.state.fanout
    return JSONResponse({"status": "operational", "connections": fanout.stats()})


async def metrics(request: Request) -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


@cache
def _asset(name: str) -> str:
    return files("gateway.page").joinpath(name).read_text("utf-8")


async def page(request: Request) -> Response:
    return Response(_asset("index.html"), media_type="text/html; charset=utf-8")


async def page_script(request: Request) -> Response:
    return Response(_asset("app.js"), media_type="text/javascript; charset=utf-8")
