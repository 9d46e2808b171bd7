"""The gateway's HTTP endpoints: POST /events, DELETE /events/{id}, /health, /ws/status,
/metrics and the live page."""

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
from bookgen_events.idempotency import HELD
from bookgen_events.jsondepth import MAX_JSON_DEPTH, too_deep
from bookgen_events.logs import get_logger
from bookgen_events.scheduled_events import Cancelled, cancel_in
from bookgen_events.settings import Settings

from .access import error, producer_refusal
from .fanout import Fanout

log = get_logger("gateway.http")

_TOO_DEEP = f"body is JSON nested deeper than {MAX_JSON_DEPTH} levels"
_IDEMPOTENCY_KEY = "Idempotency-Key"


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


def _with_key(payload: object, key: str | None) -> tuple[object, Response | None]:
    """The body with an ``Idempotency-Key`` header as its event id (SPEC 11).

    The header is the event id: a body without ``id`` takes it, a body with the same ``id``
    is unchanged, a body with another ``id`` is refused (which one was meant is unknowable).
    """
    if key is None or not isinstance(payload, dict):
        return payload, None
    body_id = payload.get("id")
    if body_id is not None and body_id != key:
        message = f"differs from the body's id {str(body_id)[:80]!r}: send one or make them equal"
        errors = [{"field": _IDEMPOTENCY_KEY, "message": message}]
        return payload, error(422, f"{_IDEMPOTENCY_KEY} {message}", errors=errors)
    return {**payload, "id": key}, None


async def post_events(request: Request) -> Response:
    """Validate and append one event for producers in other languages.

    201 with its stream id (the first one again for an id already emitted within
    IDEMPOTENCY_WINDOW); 202 with ``stream_id: null`` for an event held until ``deliver_at``.
    """
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
    key = request.headers.get("idempotency-key")
    payload, refused = _with_key(payload, key)
    if refused is not None:
        return refused
    try:
        event = make_event(payload)  # type: ignore[arg-type]
        stream_id = await bus.emit(event)
    except EventTooLargeError as exc:
        return error(413, str(exc))
    except EventValidationError as exc:
        # An id that came from the header is the header's fault: name it.
        rename = {"id": _IDEMPOTENCY_KEY} if key is not None else {}
        errors = [{"field": rename.get(field, field), "message": msg} for field, msg in exc.errors]
        detail = str(exc).replace("id:", f"{_IDEMPOTENCY_KEY}:", 1) if rename else str(exc)
        return error(422, detail, errors=errors)
    except (RedisError, OSError) as exc:
        log.error("emit failed", error=str(exc))
        return error(503, "event store unavailable")
    if stream_id == HELD and event.deliver_at is not None:
        deliver_at = event.deliver_at.isoformat().replace("+00:00", "Z")
        held = {"stream_id": None, "event_id": event.id, "deliver_at": deliver_at}
        return JSONResponse(held, status_code=202)
    return JSONResponse({"stream_id": stream_id, "event_id": event.id}, status_code=201)


async def cancel_event(request: Request) -> Response:
    """Cancel an event held for its ``deliver_at`` (PRODUCER_API_KEY): 204; 404 unknown; 409
    already sent."""
    bus: EventBus = request.app.state.bus
    refusal = producer_refusal(request)
    if refusal is not None:
        return refusal
    event_id = request.path_params["event_id"]
    try:
        found = await cancel_in([part.scheduled_events for part in bus.partitions], event_id)
    except (RedisError, OSError) as exc:
        log.error("cancel failed", error=str(exc))
        return error(503, "event store unavailable")
    if found is Cancelled.ALREADY_SENT:
        return error(409, f"event {event_id} was already sent: too late to cancel")
    if found is Cancelled.UNKNOWN:
        return error(404, f"no scheduled event {event_id}")
    return Response(status_code=204)


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
