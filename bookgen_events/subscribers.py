"""Subscribers: a user's contact points and notification preferences (SPEC 9).

A subscriber is keyed by the events' ``user_id``: an event with ``user_id`` U reaches U's
stored email and phone on each channel U has enabled for that event type. The preferences
say, per channel (``email``, ``sms``, ``websocket``), whether it is on and for which event
types; a channel not mentioned is on, for every type on email and the WebSocket, and for
completions and error alerts on SMS (texts cost money and attention). Quiet hours and
digests are kept here too; the delivery side applies them.

Stored like endpoints: one hash field per subscriber, every change on an audit stream
(:class:`~bookgen_events.registry.AuditedHash`).
"""

from __future__ import annotations

import re
import time
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from redis.asyncio import Redis

from .errors import BookgenEventsError, EventValidationError
from .events import EmailAddress, EventType, PhoneNumber
from .registry import AuditedHash, field_errors
from .settings import parse_duration

SubscriberChannel = Literal["email", "sms", "websocket"]
#: What SMS carries when a subscriber has not said (critical error alerts only, at routing).
SMS_DEFAULT_TYPES = (EventType.COMPLETION, EventType.ERROR_ALERT)
_CLOCK = re.compile(r"^([01][0-9]|2[0-3]):[0-5][0-9]$")
UserId = Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f\x7f]+$")]


class SubscriberNotFound(BookgenEventsError, LookupError):
    """No subscriber has that user id."""


class InvalidSubscriber(EventValidationError):
    """A subscriber's fields are invalid; ``errors`` names each field (nothing was written)."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ChannelPreference(_Strict):
    enabled: bool = True
    #: Event types this channel carries; None means the channel's default.
    types: list[EventType] | None = None


class QuietHours(_Strict):
    """Local times (``HH:MM``) in an IANA time zone; ``start`` after ``end`` spans midnight."""

    start: str
    end: str
    tz: str = "UTC"

    @field_validator("start", "end")
    @classmethod
    def _clock(cls, value: str) -> str:
        if not _CLOCK.match(value):
            raise ValueError("must be a 24-hour time HH:MM, e.g. 22:00")
        return value

    @field_validator("tz")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"{value!r} is not an IANA time zone, e.g. Europe/Paris") from None
        return value


class SubscriberFields(_Strict):
    """What ``PUT /subscribers/{user_id}`` takes."""

    email: EmailAddress | None = None
    phone: PhoneNumber | None = None
    preferences: dict[SubscriberChannel, ChannelPreference] = Field(default_factory=dict)
    quiet_hours: QuietHours | None = None
    #: Per event type, how long a digest window collects that type's notifications.
    digest: dict[EventType, str] = Field(default_factory=dict)

    @field_validator("digest")
    @classmethod
    def _windows(cls, value: dict[EventType, str]) -> dict[EventType, str]:
        for kind, window in value.items():
            seconds = parse_duration(window)
            if not 60 <= seconds <= 7 * 86400:
                raise ValueError(f"{kind}: a digest window is 1m to 7d, not {window!r}")
        return value


class Subscriber(SubscriberFields):
    user_id: UserId
    updated_at: float

    def wants(self, channel: SubscriberChannel, kind: EventType) -> bool:
        """Whether this subscriber takes ``kind`` events on ``channel``."""
        preference = self.preferences.get(channel, ChannelPreference())
        if not preference.enabled:
            return False
        if preference.types is not None:
            return kind in preference.types
        return channel != "sms" or kind in SMS_DEFAULT_TYPES


def _message(error: Any) -> str:
    if error["type"] == "string_pattern_mismatch" and error["loc"][:1] == ("phone",):
        return "must be an E.164 number: + and the country code, no spaces (+33612345678)"
    return str(error["msg"]).removeprefix("Value error, ")


def _invalid(exc: ValidationError) -> InvalidSubscriber:
    errors = field_errors(exc, _message)
    detail = "; ".join(f"{field}: {msg}" for field, msg in errors)
    return InvalidSubscriber(f"invalid subscriber: {detail}", errors)


class SubscriberRegistry:
    """Set, read and remove subscribers; every change audited."""

    def __init__(self, store: AuditedHash) -> None:
        self.store = store

    @classmethod
    def for_prefix(cls, redis: Redis, prefix: str) -> SubscriberRegistry:
        return cls(AuditedHash.named(redis, prefix, "subscribers"))

    async def put(self, user_id: str, fields: dict[str, Any]) -> Subscriber:
        """Create or replace ``user_id``'s profile."""
        try:
            subscriber = Subscriber(
                **SubscriberFields(**fields).model_dump(), user_id=user_id, updated_at=time.time()
            )
        except ValidationError as exc:
            raise _invalid(exc) from None
        await self.store.put(user_id, subscriber.model_dump_json(), "set", fields)
        return subscriber

    async def get(self, user_id: str) -> Subscriber:
        raw = await self.store.get(user_id)
        if raw is None:
            raise SubscriberNotFound(f"no subscriber {user_id!r}")
        return Subscriber.model_validate_json(raw)

    async def find(self, user_id: str) -> Subscriber | None:
        raw = await self.store.get(user_id)
        return None if raw is None else Subscriber.model_validate_json(raw)

    async def all(self) -> list[Subscriber]:
        return [Subscriber.model_validate_json(v) for v in await self.store.values()]

    async def set_preference(
        self,
        user_id: str,
        channel: SubscriberChannel,
        kind: EventType,
        enabled: bool,
        *,
        address: str | None = None,
    ) -> Subscriber:
        """Turn one type on or off on one channel (an unsubscribe link, a Twilio STOP); a user
        with no profile yet gets one holding just that preference. ``address`` (where the
        link or text went) becomes the user's email or phone on that channel if they have
        none, so the opt-out holds for it however an event names it."""
        current = await self.find(user_id) or Subscriber(user_id=user_id, updated_at=0)
        preference = current.preferences.get(channel, ChannelPreference())
        types = (
            list(preference.types)
            if preference.types is not None
            else [k for k in EventType if current.wants(channel, k)]
        )
        types = [k for k in types if k != kind] + ([kind] if enabled else [])
        changed = ChannelPreference(types=types)
        return await self._store(current, channel, changed, "preferences", address)

    async def stop_channel(
        self, user_id: str, channel: SubscriberChannel, *, address: str | None = None
    ) -> Subscriber:
        """Turn ``channel`` off for ``user_id`` altogether (Twilio's 21610: the recipient
        replied STOP), recorded on the audit trail; a user with no profile yet gets one.
        ``address`` becomes their phone (or email) if they have none, so the opt-out holds
        for it wherever an event names it."""
        current = await self.find(user_id) or Subscriber(user_id=user_id, updated_at=0)
        preference = current.preferences.get(channel, ChannelPreference())
        stopped = preference.model_copy(update={"enabled": False})
        return await self._store(
            current, channel, stopped, f"preferences.{channel}.enabled", address
        )

    async def _store(
        self,
        current: Subscriber,
        channel: SubscriberChannel,
        preference: ChannelPreference,
        field: str,
        address: str | None,
    ) -> Subscriber:
        """Store ``current`` with ``preference`` on ``channel`` (audited as a "preference"
        change of ``field``), ``address`` becoming its contact there if it has none."""
        preferences = {**current.preferences, channel: preference}
        update: dict[str, Any] = {"preferences": preferences, "updated_at": time.time()}
        fields = [field]
        contact = {"email": "email", "sms": "phone"}.get(channel)
        if address and contact and getattr(current, contact) is None:
            try:
                SubscriberFields.model_validate({contact: address})
            except ValidationError:
                pass  # not a valid address for that channel: the preference alone
            else:
                update[contact] = address
                fields.append(contact)
        subscriber = current.model_copy(update=update)
        await self.store.put(current.user_id, subscriber.model_dump_json(), "preference", fields)
        return subscriber

    async def delete(self, user_id: str) -> None:
        if not await self.store.delete(user_id):
            raise SubscriberNotFound(f"no subscriber {user_id!r}")
