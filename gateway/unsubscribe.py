"""``/unsubscribe?token=...``: one-click unsubscribe (RFC 8058), open to anyone with a link.

``POST`` (what mail clients send for ``List-Unsubscribe-Post: List-Unsubscribe=One-Click``,
and what the confirmation page's button sends) turns that event type off on that channel
for that user, recorded in the subscriber's audit trail; the address the message went to
becomes the user's own when they had none, so the opt-out holds for it however an event
names it. ``GET`` only shows a page with that
button: mail scanners follow links, and a GET must not unsubscribe anyone.
"""

from __future__ import annotations

from html import escape

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Route

from bookgen_events.subscribers import SubscriberRegistry
from bookgen_events.unsubscribe import InvalidUnsubscribeToken, read_token

_LABELS = {
    "progress_update": "progress updates",
    "completion": "“biography ready” notices",
    "error_alert": "error alerts",
    "status_change": "status changes",
    "admin_alert": "admin alerts",
}
_PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1"><title>{title}</title>
<style>body{{font:16px/1.5 system-ui,sans-serif;max-width:32rem;margin:4rem auto;padding:0 1rem;
color:#1f2933}}button{{font:inherit;padding:.6rem 1.2rem;border:0;border-radius:.4rem;
background:#2f5fd0;color:#fff;cursor:pointer}}button:focus{{outline:3px solid #9db8f5}}</style>
</head><body><main><h1>{title}</h1>{body}</main></body></html>"""


def _page(title: str, body: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(_PAGE.format(title=escape(title), body=body), status_code=status)


async def unsubscribe(request: Request) -> Response:
    settings = request.app.state.settings
    secret = settings.unsubscribe_secret
    if secret is None:
        return _page("Unsubscribe unavailable", "<p>UNSUBSCRIBE_SECRET is not set.</p>", 503)
    try:
        wanted = read_token(secret.get_secret_value(), request.query_params.get("token", ""))
    except InvalidUnsubscribeToken as exc:
        return _page("Link not valid", f"<p>{escape(str(exc))}.</p>", 400)
    what = f"{_LABELS[wanted.kind.value]} by {wanted.channel}"
    if request.method == "GET":
        return _page(
            "Unsubscribe",
            f"<p>Stop receiving {escape(what)}?</p><form method=post>"
            "<button type=submit>Unsubscribe</button></form>",
        )
    bus = request.app.state.bus
    registry = SubscriberRegistry.for_prefix(bus.redis, bus.names.prefix)
    await registry.set_preference(
        wanted.user_id, wanted.channel, wanted.kind, enabled=False, address=wanted.address
    )
    return _page("Unsubscribed", f"<p>You will no longer receive {escape(what)}.</p>")


ROUTES: list[BaseRoute] = [Route("/unsubscribe", unsubscribe, methods=["GET", "POST"])]
