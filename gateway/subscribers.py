"""``/subscribers/{user_id}``: subscriber profiles over HTTP (SPEC 9), for operators.

``PUT`` creates or replaces the profile (200 with it), ``GET`` reads it, ``DELETE`` removes
it (204); an invalid field is a 422 naming it, an unknown user a 404. ``ADMIN_API_KEY``.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from bookgen_events.subscribers import InvalidSubscriber, SubscriberNotFound, SubscriberRegistry

from .access import admin_only, error
from .endpoints import json_object


def _registry(request: Request) -> SubscriberRegistry:
    bus = request.app.state.bus
    return SubscriberRegistry.for_prefix(bus.redis, bus.names.prefix)


async def subscriber(request: Request) -> Response:
    registry, user_id = _registry(request), request.path_params["user_id"]
    try:
        if request.method == "GET":
            return JSONResponse((await registry.get(user_id)).model_dump(mode="json"))
        if request.method == "DELETE":
            await registry.delete(user_id)
            return Response(status_code=204)
        fields = await json_object(request)
        if isinstance(fields, JSONResponse):
            return fields
        return JSONResponse((await registry.put(user_id, fields)).model_dump(mode="json"))
    except SubscriberNotFound as exc:
        return error(404, str(exc))
    except InvalidSubscriber as exc:
        errors = [{"field": field, "message": message} for field, message in exc.errors]
        return error(422, str(exc), errors=errors)


ROUTES: list[BaseRoute] = [
    Route("/subscribers/{user_id}", admin_only(subscriber), methods=["GET", "PUT", "DELETE"]),
]
