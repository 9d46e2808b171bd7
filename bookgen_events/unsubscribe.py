"""One-click unsubscribe links (RFC 8058): signed, expiring, bound to a user, channel and type.

A link's token is an HS256 JWT under ``UNSUBSCRIBE_SECRET`` with audience ``unsubscribe``
and the claims ``sub`` (the user id), ``ch`` (the channel) and ``t`` (the event type). It
cannot be forged, changed to another user or type, or used as a WebSocket token (another
key, another audience); following it again is harmless (the preference is already off).
"""

from __future__ import annotations

import time
from urllib.parse import urlencode

import jwt

from .errors import BookgenEventsError
from .events import EventType
from .subscribers import SubscriberChannel

AUDIENCE = "unsubscribe"
_CHANNELS: tuple[SubscriberChannel, ...] = ("email", "sms", "websocket")


class InvalidUnsubscribeToken(BookgenEventsError, ValueError):
    """The link is malformed, forged or expired; the message is safe to show."""


def make_token(
    secret: str, *, user_id: str, channel: SubscriberChannel, kind: EventType, ttl_s: float
) -> str:
    now = int(time.time())
    claims = {"aud": AUDIENCE, "sub": user_id, "ch": channel, "t": kind.value, "iat": now,
              "exp": now + int(ttl_s)}  # fmt: skip
    return jwt.encode(claims, secret, algorithm="HS256")


def read_token(secret: str, token: str) -> tuple[str, SubscriberChannel, EventType]:
    """``(user_id, channel, event type)`` of a valid token; else :class:`InvalidUnsubscribeToken`."""
    try:
        claims = jwt.decode(
            token, secret, algorithms=["HS256"], audience=AUDIENCE,
            options={"require": ["exp", "sub", "aud"]},
        )  # fmt: skip
    except jwt.ExpiredSignatureError:
        raise InvalidUnsubscribeToken("this unsubscribe link has expired") from None
    except jwt.InvalidTokenError:
        raise InvalidUnsubscribeToken("this is not a valid unsubscribe link") from None
    channel, kind = claims.get("ch"), claims.get("t")
    if channel not in _CHANNELS or kind not in {k.value for k in EventType}:
        raise InvalidUnsubscribeToken("this is not a valid unsubscribe link")
    return str(claims["sub"]), channel, EventType(kind)


def link(public_url: str, token: str) -> str:
    """The gateway URL that unsubscribes (GET confirms, POST acts)."""
    return f"{public_url.rstrip('/')}/unsubscribe?{urlencode({'token': token})}"
