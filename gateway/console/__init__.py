"""``GET /console``: the operator console, one page of plain HTML, CSS and JS (SPEC 13).

The page itself holds no data and loads without a key; it asks for ``ADMIN_API_KEY``, keeps
it in the tab's ``sessionStorage`` (gone when the tab closes) and sends it as a bearer key on
every call, each an ordinary operator route guarded like any other (a browser cannot send a
bearer header when it navigates, and a cookie would make every operator route open to
cross-site requests). A strict Content-Security-Policy allows only these files: no inline
script or style, no other origin.
"""

from __future__ import annotations

from functools import cache
from importlib.resources import files

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}
_MEDIA = {
    "index.html": "text/html; charset=utf-8",
    "console.js": "text/javascript; charset=utf-8",
    "console.css": "text/css; charset=utf-8",
}


@cache
def _asset(name: str) -> str:
    return files(__name__).joinpath(name).read_text("utf-8")


def _serve(name: str) -> Response:
    return Response(_asset(name), media_type=_MEDIA[name], headers=HEADERS)


async def page(request: Request) -> Response:
    return _serve("index.html")


async def script(request: Request) -> Response:
    return _serve("console.js")


async def styles(request: Request) -> Response:
    return _serve("console.css")


ROUTES: list[BaseRoute] = [
    Route("/console", page, methods=["GET"]),
    Route("/console/console.js", script, methods=["GET"]),
    Route("/console/console.css", styles, methods=["GET"]),
]
