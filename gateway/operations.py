"""Operator routes over the core's typed APIs (SPEC 7, 13): status, dead letters, replay.

``GET /status`` is ``bookgen-events status --json`` (streams, groups with lag and pending,
dead-letter and retry sizes); ``GET /dead-letters/{channel}`` lists a channel's dead
letters with reason and payload, ``POST .../redrive`` sends some or all back through the
channel, ``POST .../purge`` deletes them (``{"ids": [...]}`` or, to delete every one,
``{"all": true}``: a purge is never implied by an empty body); ``POST /replay`` redelivers
a range to one channel, ``"dry_run": true`` only counts. Every route needs
``ADMIN_API_KEY``; a bad field is a 422 naming it, an unknown channel a 404.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from bookgen_events.bus import EventBus
from bookgen_events.channel import DEAD_LETTER_GROUPS, GROUP_CHANNELS
from bookgen_events.endpoints import EndpointNotFound, EndpointRegistry, endpoint_recipient
from bookgen_events.errors import OffsetError
from bookgen_events.events import EventType
from bookgen_events.ops import status as ops_status
from bookgen_events.outcomes import DeadLetter, now_ms
from bookgen_events.registry import field_errors
from bookgen_events.replay import parse_offset, replay

from .access import admin_only, error
from .endpoints import json_object

MAX_IDS = 1000
_MAX_PART = (1 << 64) - 1
DeadLetterId = Annotated[str, Field(min_length=1, max_length=200)]
Ids = Annotated[list[DeadLetterId], Field(min_length=1, max_length=MAX_IDS)]


class RedriveRequest(BaseModel):
    """Which dead letters to send back: ``ids`` (dead-letter or event ids), absent = all."""

    model_config = ConfigDict(extra="forbid")
    ids: Ids | None = None


class PurgeRequest(BaseModel):
    """Which dead letters to delete: ``ids``, or ``"all": true`` (never implied)."""

    model_config = ConfigDict(extra="forbid")
    ids: Ids | None = None
    all: bool = False


class ReplayRequest(BaseModel):
    """A range of the event stream to redeliver to one channel (inclusive offsets: stream
    ids or ISO times), optionally filtered; ``endpoint`` narrows a webhook replay to it."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    channel: Annotated[str, Field(json_schema_extra={"enum": list(GROUP_CHANNELS)})]
    start: Annotated[str, Field(alias="from", min_length=1, max_length=64)]
    end: Annotated[str | None, Field(alias="to", max_length=64)] = None
    job_id: Annotated[str | None, Field(min_length=1, max_length=200)] = None
    type: EventType | None = None
    endpoint: Annotated[str | None, Field(min_length=1, max_length=200)] = None
    dry_run: bool = False


class DeadLetterView(BaseModel):
    """One dead letter as the console shows it; ``event`` is the payload (parsed JSON, or
    the raw text for a poison entry)."""

    dlq_id: str
    event_id: str
    entry_id: str
    recipient: str
    reason: str
    attempts: int
    poison: bool
    at_ms: int
    age_s: float
    event: Any = None


class DeadLetterPage(BaseModel):
    channel: str
    total: int
    dead_letters: list[DeadLetterView]


class RedriveResult(BaseModel):
    redriven: int
    poison_skipped: list[str]


class PurgeResult(BaseModel):
    purged: int


class ReplayResult(BaseModel):
    channel: str
    start: str
    end: str
    scanned: int
    matched: int
    scheduled: int
    skipped_poison: int
    no_recipient: int
    first_retained: str | None
    dry_run: bool
    event_ids: list[str] = Field(description="the matched events' ids (at most 1000)")


def _offset_problem(text: str) -> str | None:
    """Why ``text`` is no offset Redis takes (a stream id's parts are unsigned 64-bit)."""
    try:
        offset = parse_offset(text)
    except OffsetError as exc:
        return str(exc)
    ms, _, seq = offset.partition("-")
    if not (ms.isdigit() and (seq or "0").isdigit()):
        return f"{text!r} is before 1970"
    if int(ms) > _MAX_PART or int(seq or 0) > _MAX_PART:
        return f"{text!r} is past the largest stream id"
    return None


def _payload(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def _view(dlq_id: str, letter: DeadLetter, now: int) -> DeadLetterView:
    return DeadLetterView(
        dlq_id=dlq_id,
        event_id=letter.event_id,
        entry_id=letter.entry_id,
        recipient=letter.recipient,
        reason=letter.reason,
        attempts=letter.attempts,
        poison=letter.poison,
        at_ms=letter.at_ms,
        age_s=round((now - letter.at_ms) / 1000, 1),
        event=_payload(letter.event) if letter.event else None,
    )


def _unknown_channel(channel: str) -> JSONResponse:
    return error(
        404, f"channel: {channel!r} has no dead letters: only {', '.join(DEAD_LETTER_GROUPS)} do"
    )


def _invalid(exc: ValidationError) -> JSONResponse:
    errors = [{"field": f, "message": m} for f, m in field_errors(exc)]
    detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
    return error(422, detail, errors=errors)


def _field_error(field: str, message: str) -> JSONResponse:
    return error(422, f"{field}: {message}", errors=[{"field": field, "message": message}])


M = TypeVar("M", bound=BaseModel)


async def _body(request: Request, model: type[M]) -> M | JSONResponse:
    fields = await json_object(request)
    if isinstance(fields, JSONResponse):
        return fields
    try:
        return model.model_validate(fields)
    except ValidationError as exc:
        return _invalid(exc)


async def status(request: Request) -> Response:
    """Streams, groups (lag, pending, consumers), dead-letter and retry sizes, memory."""
    return JSONResponse(await ops_status(request.app.state.bus))


async def dead_letters(request: Request) -> Response:
    """``?limit=`` (1-500, default 100) of a channel's dead letters, newest first."""
    channel = request.path_params["channel"]
    if channel not in DEAD_LETTER_GROUPS:
        return _unknown_channel(channel)
    try:
        limit = int(request.query_params.get("limit", "100"))
    except ValueError:
        return error(400, "limit: must be an integer")
    if not 1 <= limit <= 500:
        return error(400, "limit: must be between 1 and 500")
    bus: EventBus = request.app.state.bus
    letters = await bus.all_dead_letters.letters(channel)
    now = now_ms()
    views = [_view(i, d, now) for i, d in reversed(letters[-limit:])]
    page = DeadLetterPage(channel=channel, total=len(letters), dead_letters=views)
    return JSONResponse(page.model_dump(mode="json"))


async def redrive(request: Request) -> Response:
    channel = request.path_params["channel"]
    if channel not in DEAD_LETTER_GROUPS:
        return _unknown_channel(channel)
    body = await _body(request, RedriveRequest)
    if isinstance(body, JSONResponse):
        return body
    bus: EventBus = request.app.state.bus
    count, poison = await bus.all_dead_letters.redrive(channel, body.ids)
    return JSONResponse(RedriveResult(redriven=count, poison_skipped=poison).model_dump())


async def purge(request: Request) -> Response:
    channel = request.path_params["channel"]
    if channel not in DEAD_LETTER_GROUPS:
        return _unknown_channel(channel)
    body = await _body(request, PurgeRequest)
    if isinstance(body, JSONResponse):
        return body
    if body.ids is None and not body.all:
        return _field_error("all", 'say which: "ids": [...], or "all": true to delete every one')
    if body.ids is not None and body.all:
        return _field_error("all", 'give "ids" or "all": true, not both')
    bus: EventBus = request.app.state.bus
    count = await bus.all_dead_letters.purge(channel, body.ids)
    return JSONResponse(PurgeResult(purged=count).model_dump())


async def replay_range(request: Request) -> Response:
    body = await _body(request, ReplayRequest)
    if isinstance(body, JSONResponse):
        return body
    if body.channel not in GROUP_CHANNELS:
        return _field_error("channel", f"must be one of {', '.join(GROUP_CHANNELS)}")
    for field, value in (("from", body.start), ("to", body.end)):
        if value:
            problem = _offset_problem(value)
            if problem is not None:
                return _field_error(field, problem)
    bus: EventBus = request.app.state.bus
    targeting: dict[str, Any] = {}
    if body.endpoint is not None:
        if body.channel != "webhook":
            return _field_error("endpoint", "replays to one webhook endpoint: use channel webhook")
        registry = EndpointRegistry.for_prefix(bus.redis, bus.names.prefix)
        try:
            endpoint = await registry.get(body.endpoint)
        except EndpointNotFound as exc:
            return _field_error("endpoint", str(exc))
        recipient = endpoint_recipient(endpoint)
        targeting = {
            "recipients": lambda e: [recipient] if endpoint.wants(e) else [],
            "only": recipient,
        }
    try:
        result = await replay(
            bus,
            body.channel,
            body.start,
            body.end or "+",
            job_id=body.job_id,
            type_=body.type.value if body.type else None,
            dry_run=body.dry_run,
            **targeting,
        )
    except OffsetError as exc:
        return _field_error("from", str(exc))
    out = ReplayResult(
        channel=result.channel,
        start=result.start,
        end=result.end,
        scanned=result.scanned,
        matched=result.matched,
        scheduled=result.scheduled,
        skipped_poison=result.skipped_poison,
        no_recipient=result.no_recipient,
        first_retained=result.first_retained,
        dry_run=result.dry_run,
        event_ids=result.event_ids[:1000],
    )
    return JSONResponse(out.model_dump())


ROUTES: list[BaseRoute] = [
    Route("/status", admin_only(status), methods=["GET"]),
    Route("/dead-letters/{channel}", admin_only(dead_letters), methods=["GET"]),
    Route("/dead-letters/{channel}/redrive", admin_only(redrive), methods=["POST"]),
    Route("/dead-letters/{channel}/purge", admin_only(purge), methods=["POST"]),
    Route("/replay", admin_only(replay_range), methods=["POST"]),
]
