"""Bearer keys of the HTTP surface (SPEC 8): who may post events, who may operate.

Two keys, two audiences. ``PRODUCER_API_KEY`` lets other languages' producers ``POST
/events``; ``ADMIN_API_KEY`` guards every operator and registry route (the notification log,
and later endpoints, subscribers, the console, dead letters and replays). Keys are compared
in constant time. A route whose key is not configured is closed, and says which variable
opens it: 403 for operator routes (nobody is allowed), 503 for the producer route (the
service is not set up to take events).
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from functools import wraps

from pydantic import SecretStr
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

Endpoint = Callable[[Request], Awaitable[Response]]


def error(status: int, detail: str, **extra: object) -> JSONResponse:
    """The gateway's error body, ``{"detail": ...}``; 401s carry ``WWW-Authenticate``."""
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse({"detail": detail, **extra}, status_code=status, headers=headers)


def bearer(request: Request) -> str | None:
    """The token of an ``Authorization: Bearer ...`` header, if one was sent."""
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        return None
    return given.strip()


def refusal(
    request: Request, key: SecretStr | None, *, variable: str, unset_status: int
) -> JSONResponse | None:
    """None when the request carries ``key``; else the response that refuses it."""
    if key is None:
        return error(unset_status, f"{request.url.path} is disabled: set {variable} to use it")
    given = bearer(request)
    if given is None:
        return error(401, f"missing API key: send Authorization: Bearer <{variable}>")
    if not hmac.compare_digest(given.encode(), key.get_secret_value().encode()):
        return error(401, f"wrong API key: send Authorization: Bearer <{variable}>")
    return None


def admin_only(endpoint: Endpoint) -> Endpoint:
    """Guard an operator route with ``ADMIN_API_KEY`` (403 while it is unset)."""

    @wraps(endpoint)
    async def guarded(request: Request) -> Response:
        key = request.app.state.settings.admin_api_key
        refused = refusal(request, key, variable="ADMIN_API_KEY", unset_status=403)
        return refused if refused is not None else await endpoint(request)

    return guarded


def producer_refusal(request: Request) -> JSONResponse | None:
    """``POST /events``'s check: ``PRODUCER_API_KEY`` (503 while it is unset)."""
    key = request.app.state.settings.producer_api_key
    return refusal(request, key, variable="PRODUCER_API_KEY", unset_status=503)
