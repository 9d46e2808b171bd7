"""``GET /openapi.json``: the gateway's HTTP API as an OpenAPI 3.1 document (SPEC 13).

Request and response bodies come from the pydantic models that validate or produce them
(the event union, the endpoint and subscriber models, the operator routes' models), so the
description cannot drift from the validation; the few replies built as plain dicts get a
model here. Two bearer schemes: ``producerKey`` (``POST /events``) and ``adminKey`` (every
operator route). The document is built once per process; it holds no secret, so the route
is open like ``/health``.
"""

from __future__ import annotations

import copy
from functools import cache
from typing import Annotated, Any

from pydantic import BaseModel, Discriminator, Field, TypeAdapter
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from bookgen_events.channel import CHANNELS, DEAD_LETTER_GROUPS
from bookgen_events.db import STATUSES
from bookgen_events.endpoints import Endpoint
from bookgen_events.events import (
    AdminEvent,
    CompletionEvent,
    ErrorEvent,
    ProgressEvent,
    StatusChangeEvent,
)
from bookgen_events.subscribers import Subscriber, SubscriberFields

from . import operations

REF = "#/components/schemas/{model}"
#: Endpoint fields only the registry sets: not in a request body.
_STORED_ONLY = {"id", "previous_secret", "previous_secret_until", "disabled_reason"}
_STORED_ONLY |= {"created_at", "updated_at"}


class FieldError(BaseModel):
    field: str
    message: str


class Error(BaseModel):
    """Every refusal: ``detail`` in words, ``errors`` per field where there are several."""

    detail: str
    errors: list[FieldError] | None = None


class LogQueryError(BaseModel):
    """``GET /notifications``'s refusal of a query parameter."""

    error: str


class EventAccepted(BaseModel):
    stream_id: str
    event_id: str


class EventHeld(BaseModel):
    """An event held until its ``deliver_at``: no stream id yet."""

    stream_id: None
    event_id: str
    deliver_at: str


class Health(BaseModel):
    status: str
    redis: str
    fanout: str | None = None
    websocket_auth: str


class WsStatus(BaseModel):
    status: str
    connections: dict[str, Any]


class NotificationRow(BaseModel):
    """A row of the seed's ``notifications`` table; ids are strings (63-bit)."""

    id: str
    notification_type: str | None
    delivery_method: str | None
    recipient: str | None
    subject: str | None
    message: str | None
    status: str | None
    delivery_attempts: int | None
    error_message: str | None
    related_entity_type: str | None
    related_entity_id: int | None
    notification_metadata: dict[str, Any] | None
    is_rate_limited: bool
    created_at: str | None
    delivered_at: str | None


class NotificationPage(BaseModel):
    notifications: list[NotificationRow]
    next_cursor: str | None


class Attempt(BaseModel):
    outcome_id: str
    event_id: str
    at_ms: int
    attempt: int
    status: str
    final: bool
    status_code: int | None
    duration_ms: float | int | None
    error: str | None


class Attempts(BaseModel):
    attempts: list[Attempt]


class Changes(BaseModel):
    changes: list[dict[str, Any]]


class RecoverRequest(BaseModel):
    since: str = Field(description="an ISO 8601 time; UTC unless it says otherwise")


class RecoverResult(BaseModel):
    redriven: int
    poison_skipped: int


class Status(BaseModel):
    """``bookgen-events status --json``: streams with their groups, dead letters, retries."""

    events: dict[str, Any]
    deliveries: dict[str, Any]
    dead_letters: dict[str, int]
    scheduled: dict[str, int]
    redis: dict[str, Any]


_EVENT = TypeAdapter(
    Annotated[
        ProgressEvent | CompletionEvent | ErrorEvent | StatusChangeEvent | AdminEvent,
        Discriminator("type"),
    ]
)


class _Document:
    """Collects component schemas while the paths are written."""

    def __init__(self) -> None:
        self.schemas: dict[str, Any] = {}

    def add(self, name: str, schema: dict[str, Any]) -> dict[str, str]:
        schema = dict(schema)
        self.schemas.update(schema.pop("$defs", {}))
        self.schemas[name] = schema
        return {"$ref": REF.format(model=name)}

    def model(self, model: type[BaseModel], mode: str = "serialization") -> dict[str, str]:
        return self.add(model.__name__, model.model_json_schema(ref_template=REF, mode=mode))  # type: ignore[arg-type]

    def endpoint_schemas(self) -> tuple[dict[str, str], ...]:
        """The endpoint as shown, as shown with its secret, as created, as patched."""
        full = Endpoint.model_json_schema(ref_template=REF, mode="serialization")
        self.schemas.update(full.pop("$defs", {}))
        shown = copy.deepcopy(full)
        for name in ("secret", "previous_secret"):
            shown["properties"].pop(name)
        shown["required"] = [r for r in shown["required"] if r not in ("secret",)]
        with_secret = copy.deepcopy(shown)
        with_secret["properties"]["secret"] = full["properties"]["secret"]
        with_secret["required"] = [*shown["required"], "secret"]
        created = copy.deepcopy(full)
        created["properties"] = {
            k: v for k, v in full["properties"].items() if k not in _STORED_ONLY
        }
        created["required"] = ["url"]
        patch = copy.deepcopy(created)
        patch["properties"].pop("secret")
        patch["required"] = []
        return (
            self.add("Endpoint", shown),
            self.add("EndpointWithSecret", with_secret),
            self.add("EndpointCreate", created),
            self.add("EndpointPatch", patch),
        )


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _text(media: str, description: str) -> dict[str, Any]:
    return {"description": description, "content": {media: {"schema": {"type": "string"}}}}


def _query(name: str, description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": schema or {"type": "string"},
    }


def _path(name: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": schema or {"type": "string"}}


def build() -> dict[str, Any]:
    """The OpenAPI document of every HTTP route of the gateway."""
    doc = _Document()
    err = doc.model(Error)
    ok = {"description": "done, no body"}

    def refusals(*codes: int) -> dict[str, Any]:
        words = {
            400: "a query parameter is invalid (named)",
            401: "missing or wrong key",
            403: "ADMIN_API_KEY is not set: operator routes are closed",
            404: "not found",
            413: "body too large",
            422: "invalid body (each field named)",
            503: "not configured, or the event store is unavailable",
        }
        return {str(c): _json(err, words[c]) for c in codes}

    admin: list[dict[str, list[str]]] = [{"adminKey": []}]
    keyed = refusals(401, 403)
    endpoint, endpoint_secret, endpoint_create, endpoint_patch = doc.endpoint_schemas()
    endpoint_id = _path("endpoint_id")
    channel = _path("channel", {"type": "string", "enum": list(DEAD_LETTER_GROUPS)})

    def request(schema: dict[str, str], required: bool = True) -> dict[str, Any]:
        return {"required": required, "content": {"application/json": {"schema": schema}}}

    limit = _query("limit", "1-500", {"type": "integer", "minimum": 1, "maximum": 500})
    paths: dict[str, Any] = {
        "/events": {
            "post": {
                "summary": "Append one event (producers in other languages)",
                "security": [{"producerKey": []}],
                "parameters": [
                    {
                        "name": "Idempotency-Key",
                        "in": "header",
                        "required": False,
                        "description": "the event's id: a retry with the same key within "
                        "IDEMPOTENCY_WINDOW appends nothing and answers the first stream id",
                        "schema": {"type": "string"},
                    }
                ],
                "requestBody": request(doc.add("EventIn", _EVENT.json_schema(ref_template=REF))),
                "responses": {
                    "201": _json(doc.model(EventAccepted), "appended"),
                    "202": _json(doc.model(EventHeld), "held until its deliver_at"),
                    **refusals(401, 413, 422, 503),
                },
            }
        },
        "/events/{event_id}": {
            "parameters": [_path("event_id")],
            "delete": {
                "summary": "Cancel an event held for its deliver_at",
                "security": [{"producerKey": []}],
                "responses": {
                    "204": ok,
                    **refusals(401, 404),
                    "409": _json(err, "already sent: too late to cancel"),
                    **refusals(503),
                },
            },
        },
        "/health": {
            "get": {
                "summary": "Redis answers and the fan-out runs",
                "security": [],
                "responses": {
                    "200": _json(doc.model(Health), "healthy"),
                    "503": _json(doc.model(Health), "unhealthy"),
                },
            }
        },
        "/ws/status": {
            "get": {
                "summary": "WebSocket connection counts (the seed's shape)",
                "security": [],
                "responses": {"200": _json(doc.model(WsStatus), "counts")},
            }
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics",
                "security": [],
                "responses": {"200": _text("text/plain", "the exposition format")},
            }
        },
        "/notifications": {
            "get": {
                "summary": "The notification log, newest first, keyset-paginated",
                "security": admin,
                "parameters": [
                    _query("job_id", "the job's id"),
                    _query("user_id", "the user's id"),
                    _query("status", "row status", {"type": "string", "enum": list(STATUSES)}),
                    _query(
                        "channel", "delivery method", {"type": "string", "enum": list(CHANNELS)}
                    ),
                    limit,
                    _query("cursor", "next_cursor of the previous page"),
                ],
                "responses": {
                    "200": _json(doc.model(NotificationPage), "a page"),
                    "400": _json(doc.model(LogQueryError), "a parameter is invalid (named)"),
                    **keyed,
                },
            }
        },
        "/endpoints": {
            "get": {
                "summary": "Every endpoint (without secrets)",
                "security": admin,
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "properties": {"endpoints": {"type": "array", "items": endpoint}},
                            "required": ["endpoints"],
                        },
                        "the endpoints",
                    ),
                    **keyed,
                },
            },
            "post": {
                "summary": "Register an endpoint; its secret is shown once",
                "security": admin,
                "requestBody": request(endpoint_create),
                "responses": {
                    "201": _json(endpoint_secret, "created"),
                    **keyed,
                    **refusals(413, 422),
                },
            },
        },
        "/endpoints/changes": {
            "get": {
                "summary": "The registry's audit trail, newest first",
                "security": admin,
                "responses": {"200": _json(doc.model(Changes), "changes"), **keyed},
            }
        },
        "/endpoints/{endpoint_id}": {
            "parameters": [endpoint_id],
            "get": {
                "summary": "One endpoint",
                "security": admin,
                "responses": {"200": _json(endpoint, "the endpoint"), **keyed, **refusals(404)},
            },
            "patch": {
                "summary": "Change an endpoint's fields (disable, enable, filters...)",
                "security": admin,
                "requestBody": request(endpoint_patch),
                "responses": {
                    "200": _json(endpoint, "changed"),
                    **keyed,
                    **refusals(404, 413, 422),
                },
            },
            "delete": {
                "summary": "Remove an endpoint",
                "security": admin,
                "responses": {"204": ok, **keyed, **refusals(404)},
            },
        },
        "/endpoints/{endpoint_id}/rotate-secret": {
            "parameters": [endpoint_id],
            "post": {
                "summary": "A new secret signs now; the old one beside it for the grace",
                "security": admin,
                "responses": {"200": _json(endpoint_secret, "rotated"), **keyed, **refusals(404)},
            },
        },
        "/endpoints/{endpoint_id}/attempts": {
            "parameters": [endpoint_id],
            "get": {
                "summary": "Recent delivery attempts, newest first",
                "security": admin,
                "parameters": [limit],
                "responses": {
                    "200": _json(doc.model(Attempts), "attempts"),
                    **keyed,
                    **refusals(400, 404),
                },
            },
        },
        "/endpoints/{endpoint_id}/recover": {
            "parameters": [endpoint_id],
            "post": {
                "summary": "Redeliver its dead letters since a time",
                "security": admin,
                "requestBody": request(doc.model(RecoverRequest, "validation")),
                "responses": {
                    "200": _json(doc.model(RecoverResult), "redriven"),
                    **keyed,
                    **refusals(404, 413, 422),
                },
            },
        },
        "/subscribers/{user_id}": {
            "parameters": [_path("user_id")],
            "get": {
                "summary": "A subscriber's profile",
                "security": admin,
                "responses": {
                    "200": _json(doc.model(Subscriber), "the profile"),
                    **keyed,
                    **refusals(404),
                },
            },
            "put": {
                "summary": "Create or replace a subscriber's profile",
                "security": admin,
                "requestBody": request(doc.model(SubscriberFields, "validation")),
                "responses": {
                    "200": _json(doc.model(Subscriber), "stored"),
                    **keyed,
                    **refusals(404, 413, 422),
                },
            },
            "delete": {
                "summary": "Remove a subscriber's profile",
                "security": admin,
                "responses": {"204": ok, **keyed, **refusals(404)},
            },
        },
        "/status": {
            "get": {
                "summary": "Streams, groups (lag, pending, consumers), dead letters, retries",
                "security": admin,
                "responses": {"200": _json(doc.model(Status), "status"), **keyed},
            }
        },
        "/dead-letters/{channel}": {
            "parameters": [channel],
            "get": {
                "summary": "A channel's dead letters, newest first, with reason and payload",
                "security": admin,
                "parameters": [limit],
                "responses": {
                    "200": _json(doc.model(operations.DeadLetterPage), "dead letters"),
                    **keyed,
                    **refusals(400, 404),
                },
            },
        },
        "/dead-letters/{channel}/redrive": {
            "parameters": [channel],
            "post": {
                "summary": "Send dead letters (some or all) back through the channel",
                "security": admin,
                "requestBody": request(
                    doc.model(operations.RedriveRequest, "validation"), required=False
                ),
                "responses": {
                    "200": _json(doc.model(operations.RedriveResult), "redriven"),
                    **keyed,
                    **refusals(404, 413, 422),
                },
            },
        },
        "/dead-letters/{channel}/purge": {
            "parameters": [channel],
            "post": {
                "summary": 'Delete dead letters: {"ids": [...]} or {"all": true}',
                "security": admin,
                "requestBody": request(doc.model(operations.PurgeRequest, "validation")),
                "responses": {
                    "200": _json(doc.model(operations.PurgeResult), "purged"),
                    **keyed,
                    **refusals(404, 413, 422),
                },
            },
        },
        "/replay": {
            "post": {
                "summary": "Redeliver a range of events to one channel (dry_run only counts)",
                "security": admin,
                "requestBody": request(doc.model(operations.ReplayRequest, "validation")),
                "responses": {
                    "200": _json(doc.model(operations.ReplayResult), "scheduled or counted"),
                    **keyed,
                    **refusals(413, 422),
                },
            }
        },
        "/unsubscribe": {
            "parameters": [
                {"name": "token", "in": "query", "required": True, "schema": {"type": "string"}}
            ],
            **{
                method: {
                    "summary": "One-click unsubscribe (RFC 8058); the signed token is the key",
                    "security": [],
                    "responses": {
                        "200": _text("text/html", "the page"),
                        "400": _text("text/html", "the link is not valid"),
                        "503": _text("text/html", "UNSUBSCRIBE_SECRET is not set"),
                    },
                }
                for method in ("get", "post")
            },
        },
        "/openapi.json": {
            "get": {
                "summary": "This document",
                "security": [],
                "responses": {"200": _json({"type": "object"}, "OpenAPI 3.1")},
            }
        },
    }
    for path, (media, what) in PAGES.items():
        paths[path] = {
            "get": {"summary": what, "security": [], "responses": {"200": _text(media, what)}}
        }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "bookgen-events gateway",
            "version": "1",
            "description": (
                "Events in (POST /events), the operator API, and the pages. WebSocket "
                "notifications are at ws://HOST/ws/notifications?job_id=&user_id=&"
                "last_event_id=&token= (an HS256 JWT), outside this document."
            ),
        },
        "paths": paths,
        "components": {
            "schemas": doc.schemas,
            "securitySchemes": {
                "producerKey": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "PRODUCER_API_KEY",
                },
                "adminKey": {"type": "http", "scheme": "bearer", "description": "ADMIN_API_KEY"},
            },
        },
    }


#: The pages and their assets, open (no per-user data; the console asks for the key).
PAGES = {
    "/": ("text/html", "the live page"),
    "/app.js": ("text/javascript", "the live page's script"),
    "/console": ("text/html", "the operator console"),
    "/console/console.js": ("text/javascript", "the console's script"),
    "/console/console.css": ("text/css", "the console's styles"),
}


@cache
def document() -> dict[str, Any]:
    return build()


async def openapi(request: Request) -> Response:
    return JSONResponse(document())


ROUTES: list[BaseRoute] = [Route("/openapi.json", openapi, methods=["GET"])]
