"""One-click unsubscribe links (RFC 8058): signed, expiring, bound to a user, channel and type.

A link's token is an HS256 JWT under ``UNSUBSCRIBE_SECRET`` with audience ``unsubscribe``
and the claims ``sub`` (the user id), ``ch`` (the channel), ``t`` (the event type) and
``a`` (the address the message went to, recorded as the user's when they have none). It
cannot be forged, changed to another user or type, or used as a WebSocket token (another
key, another audience); following it again is harmless (the preference is already off).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from urllib.parse import urlencode

import jwt

from .errors import BookgenEventsError
from .events import EventType
from .settings import Settings
from .subscribers import SubscriberChannel

AUDIENCE = "unsubscribe"
_CHANNELS: tuple[SubscriberChannel, ...] = ("email", "sms", "websocket")


class InvalidUnsubscribeToken(BookgenEventsError, ValueError):
    """The link is malformed, forged or expired; the message is safe to show."""


@dataclass(frozen=True, slots=True)
class Unsubscription:
    """What a valid link asks for."""

    user_id: str
    channel: SubscriberChannel
    kind: EventType
    address: str | None = None


def make_token(
    secret: str,
    *,
    user_id: str,
    channel: SubscriberChannel,
    kind: EventType,
    ttl_s: float,
    address: str | None = None,
) -> str:
    now = int(time.time())
    claims = {"aud": AUDIENCE, "sub": user_id, "ch": channel, "t": kind.value, "iat": now,
              "exp": now + int(ttl_s)}  # fmt: skip
    if address is not None:
        claims["a"] = address
    return jwt.encode(claims, secret, algorithm="HS256")


def read_token(secret: str, token: str) -> Unsubscription:
    """What a valid token asks for; else :class:`InvalidUnsubscribeToken`."""
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
    address = claims.get("a")
    return Unsubscription(
        str(claims["sub"]), channel, EventType(kind), address if isinstance(address, str) else None
    )


def link(public_url: str, token: str) -> str:
    """The gateway URL that unsubscribes (GET confirms, POST acts)."""
    return f"{public_url.rstrip('/')}/unsubscribe?{urlencode({'token': token})}"


@dataclass(frozen=True, slots=True)
class LinkMaker:
    """Makes the links a channel puts in its messages (``PUBLIC_URL``, ``UNSUBSCRIBE_SECRET``)."""

    public_url: str
    secret: str
    ttl_s: float

    def url(self, user_id: str, channel: SubscriberChannel, kind: EventType, address: str) -> str:
        token = make_token(
            self.secret, user_id=user_id, channel=channel, kind=kind, ttl_s=self.ttl_s,
            address=address,
        )  # fmt: skip
        return link(self.public_url, token)


def link_maker(settings: Settings) -> LinkMaker | None:
    """The deployment's links, or None without ``UNSUBSCRIBE_SECRET``. ``PUBLIC_URL`` defaults
    to the gateway's usual address (``up`` sets it to the address it serves on)."""
    if settings.unsubscribe_secret is None:
        return None
    return LinkMaker(
        settings.public_url or "http://127.0.0.1:8000",
        settings.unsubscribe_secret.get_secret_value(),
        settings.unsubscribe_link_ttl,
    )
