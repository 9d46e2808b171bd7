"""``/endpoints``: the endpoint registry over HTTP (SPEC 9), for operators (``ADMIN_API_KEY``).

``POST /endpoints`` (201, the endpoint with its ``secret``: shown on creation and on rotation
only), ``GET /endpoints``, ``GET|PATCH|DELETE /endpoints/{id}``, ``POST
/endpoints/{id}/rotate-secret``, ``GET /endpoints/{id}/attempts``, ``POST
/endpoints/{id}/recover`` and ``GET /endpoints/changes`` (the audit trail). Invalid
fields are a 422 naming each; an unknown id is a 404; nothing is half-written.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from bookgen_events.endpoints import (
    Endpoint,
    EndpointNotFound,
    EndpointRegistry,
    InvalidEndpoint,
)
from bookgen_events.errors import OffsetError
from bookgen_events.jsondepth import too_deep
from bookgen_events.ops import endpoint_attempts, recover_endpoint
from bookgen_events.replay import parse_time_ms

from .access import admin_only, error

_MAX_BODY = 64 * 1024


def _registry(request: Request) -> EndpointRegistry:
    bus = request.app.state.bus
    return EndpointRegistry.for_prefix(bus.redis, bus.names.prefix)


async def json_object(request: Request) -> dict[str, Any] | JSONResponse:
    """The body as a JSON object, or the 413/422 response that refuses it."""
    body = await request.body()
    if len(body) > _MAX_BODY:
        return error(413, f"body is over {_MAX_BODY} bytes")
    try:
        value = json.loads(body or b"{}")
    except (ValueError, RecursionError) as exc:
        return error(422, f"body is not valid JSON: {exc}")
    if not isinstance(value, dict) or too_deep(value):
        return error(422, "body must be a JSON object nested at most 32 levels")
    return value


def _invalid(exc: InvalidEndpoint) -> JSONResponse:
    errors = [{"field": field, "message": message} for field, message in exc.errors]
    return error(422, str(exc), errors=errors)


def _with_secret(endpoint: Endpoint) -> dict[str, Any]:
    return {**endpoint.public(), "secret": endpoint.secret}


async def create(request: Request) -> Response:
    fields = await json_object(request)
    if isinstance(fields, JSONResponse):
        return fields
    try:
        endpoint = await _registry(request).create(fields)
    except InvalidEndpoint as exc:
        return _invalid(exc)
    return JSONResponse(_with_secret(endpoint), status_code=201)


async def list_all(request: Request) -> Response:
    endpoints = await _registry(request).all()
    return JSONResponse({"endpoints": [e.public() for e in endpoints]})


async def changes(request: Request) -> Response:
    return JSONResponse({"changes": await _registry(request).changes()})


async def one(request: Request) -> Response:
    registry, endpoint_id = _registry(request), request.path_params["endpoint_id"]
    try:
        if request.method == "GET":
            return JSONResponse((await registry.get(endpoint_id)).public())
        if request.method == "DELETE":
            await registry.delete(endpoint_id)
            return Response(status_code=204)
        fields = await json_object(request)
        if isinstance(fields, JSONResponse):
            return fields
        return JSONResponse((await registry.update(endpoint_id, fields)).public())
    except EndpointNotFound as exc:
        return error(404, str(exc))
    except InvalidEndpoint as exc:
        return _invalid(exc)


async def rotate_secret(request: Request) -> Response:
    grace = request.app.state.settings.endpoint_secret_grace
    try:
        endpoint = await _registry(request).rotate_secret(
            request.path_params["endpoint_id"], grace_s=grace
        )
    except EndpointNotFound as exc:
        return error(404, str(exc))
    return JSONResponse(_with_secret(endpoint))


async def attempts(request: Request) -> Response:
    """The endpoint's recent attempts, newest first (``?limit=``, 1-500, default 50)."""
    endpoint_id = request.path_params["endpoint_id"]
    try:
        limit = int(request.query_params.get("limit", "50"))
    except ValueError:
        return error(400, "limit: must be an integer")
    if not 1 <= limit <= 500:
        return error(400, "limit: must be between 1 and 500")
    try:
        await _registry(request).get(endpoint_id)
    except EndpointNotFound as exc:
        return error(404, str(exc))
    found = await endpoint_attempts(request.app.state.bus, endpoint_id, limit=limit)
    return JSONResponse({"attempts": found})


async def recover(request: Request) -> Response:
    """``{"since": ISO time}``: redeliver what was dead-lettered for it since then."""
    endpoint_id = request.path_params["endpoint_id"]
    body = await json_object(request)
    if isinstance(body, JSONResponse):
        return body
    try:
        since_ms = parse_time_ms(str(body.get("since", "")))
    except OffsetError as exc:
        return error(422, f"since: {exc}", errors=[{"field": "since", "message": str(exc)}])
    try:
        await _registry(request).get(endpoint_id)
    except EndpointNotFound as exc:
        return error(404, str(exc))
    count, poison = await recover_endpoint(request.app.state.bus, endpoint_id, since_ms)
    return JSONResponse({"redriven": count, "poison_skipped": poison})


ROUTES: list[BaseRoute] = [
    Route("/endpoints", admin_only(create), methods=["POST"]),
    Route("/endpoints", admin_only(list_all), methods=["GET"]),
    Route("/endpoints/changes", admin_only(changes), methods=["GET"]),
    Route("/endpoints/{endpoint_id}", admin_only(one), methods=["GET", "PATCH", "DELETE"]),
    Route("/endpoints/{endpoint_id}/rotate-secret", admin_only(rotate_secret), methods=["POST"]),
    Route("/endpoints/{endpoint_id}/attempts", admin_only(attempts), methods=["GET"]),
    Route("/endpoints/{endpoint_id}/recover", admin_only(recover), methods=["POST"]),
]
