"""The event envelope stored in the stream, its per-type payloads, and the wire format.

An event is validated once where it enters the system (``emit``, ``POST /events``) and again
where a consumer decodes it, so a hand-written stream entry cannot crash a consumer: it is
dead-lettered as poison instead.
"""

from __future__ import annotations

import os
import re
import threading
import time
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic_core import PydanticSerializationError

from .errors import DecodeError, EventTooLargeError, EventValidationError

#: The stream entry holds the event as JSON under this single field.
WIRE_FIELD = "event"


class EventType(StrEnum):
    """The five notification types of the seed."""

    PROGRESS_UPDATE = "progress_update"
    COMPLETION = "completion"
    ERROR_ALERT = "error_alert"
    STATUS_CHANGE = "status_change"
    ADMIN_ALERT = "admin_alert"


_NO_CRLF = re.compile(r"[\r\n\x00]")


def _single_line(value: str | None) -> str | None:
    # Values that can end up in mail headers (subjects) must never carry a line break.
    if value is not None and _NO_CRLF.search(value):
        raise ValueError("must not contain line breaks or NUL")
    return value


SingleLine = Annotated[str, AfterValidator(_single_line)]

# The WHATWG HTML "valid e-mail address" syntax: strict, no CR/LF, no display names, and
# about 20x cheaper than a full RFC 5322 parser on the consumer's hot decode path.
_EMAIL = re.compile(
    r"[a-zA-Z0-9.!#$%&'*+/=?^_`{|}~-]+@[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?"
    r"(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)+"
)


def _email(value: str) -> str:
    if len(value) > 254 or not _EMAIL.fullmatch(value):
        raise ValueError(f"{value[:80]!r} is not a valid email address")
    return value


EmailAddress = Annotated[str, AfterValidator(_email)]
Metadata = dict[str, Any]


class _Data(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, coerce_numbers_to_str=True)


class ProgressData(_Data):
    progress: float = Field(ge=0, le=100, allow_inf_nan=False)
    phase: SingleLine | None = None
    message: str | None = None
    metadata: Metadata = Field(default_factory=dict)


class CompletionData(_Data):
    biography_id: int | SingleLine | None = None
    character_name: SingleLine | None = None
    status: SingleLine = "completed"
    metadata: Metadata = Field(default_factory=dict)


class ErrorData(_Data):
    error: str = Field(min_length=1)
    severity: Literal["info", "warning", "error", "critical"] = "error"
    metadata: Metadata = Field(default_factory=dict)


class StatusChangeData(_Data):
    old_status: SingleLine | None = None
    new_status: SingleLine
    metadata: Metadata = Field(default_factory=dict)


class AdminData(_Data):
    alert_type: SingleLine = Field(min_length=1)
    message: str
    metadata: Metadata = Field(default_factory=dict)


EventData = ProgressData | CompletionData | ErrorData | StatusChangeData | AdminData

DATA_MODELS: dict[EventType, type[_Data]] = {
    EventType.PROGRESS_UPDATE: ProgressData,
    EventType.COMPLETION: CompletionData,
    EventType.ERROR_ALERT: ErrorData,
    EventType.STATUS_CHANGE: StatusChangeData,
    EventType.ADMIN_ALERT: AdminData,
}

_uuid_lock = threading.Lock()
_uuid_last = 0
_RAND_B = (1 << 62) - 1


def new_event_id() -> str:
    """A UUIDv7 (RFC 9562): unique and time-ordered, monotonic within this process."""
    global _uuid_last
    rand = int.from_bytes(os.urandom(10))  # 12 bits to seed rand_a, 62 for rand_b
    with _uuid_lock:
        # 48-bit ms timestamp + 12-bit rand_a used as a sub-ms counter: bump on collision.
        candidate = ((time.time_ns() // 1_000_000) << 12) | (rand >> 68)
        if candidate <= _uuid_last:
            candidate = _uuid_last + 1
        _uuid_last = candidate
    value = (
        ((candidate >> 12) << 80)  # unix_ts_ms
        | (0x7 << 76)  # version
        | ((candidate & 0x0FFF) << 64)  # rand_a
        | (0b10 << 62)  # variant
        | (rand & _RAND_B)
    )
    h = value.to_bytes(16).hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


_URL_JUNK = re.compile(r"[\s\x00-\x1f\x7f]")


class Event(BaseModel):
    """The immutable envelope appended to ``bookgen:events``.

    ``id`` is the idempotency key everywhere (webhook-id, Message-ID, log rows); it is a
    UUIDv7 generated on construction when not given.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", coerce_numbers_to_str=True)

    id: Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._:-]+$")] = Field(
        default_factory=new_event_id
    )
    type: EventType
    occurred_at: Annotated[datetime, AfterValidator(_utc)] = Field(
        default_factory=lambda: datetime.now(UTC)
    )
    job_id: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    user_id: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    data: EventData
    webhook_url: str | None = None
    emails: list[EmailAddress] = Field(default_factory=list)

    @field_validator("data", mode="wrap")
    @classmethod
    def _data_for_type(cls, value: Any, handler: Any, info: ValidationInfo) -> Any:
        # Validate the payload with the model its envelope's (already validated) type names.
        # A field validator, not a model one: the latter would make pydantic materialise the
        # whole JSON as Python objects first, doubling the consumer's decode cost.
        type_ = info.data.get("type")
        if type_ is None:
            return value  # the type field reports its own error
        model = DATA_MODELS[type_]
        if isinstance(value, model):
            return value
        return model.model_validate(value)

    @field_validator("webhook_url")
    @classmethod
    def _check_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if len(value) > 2048 or _URL_JUNK.search(value):
            raise ValueError("webhook_url must be a single-line URL of at most 2048 characters")
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("webhook_url must be an absolute http(s) URL with a host")
        return value

    @field_validator("emails")
    @classmethod
    def _dedupe(cls, value: list[str]) -> list[str]:
        return list(dict.fromkeys(value)) if len(value) > 1 else value

    @property
    def timestamp(self) -> str:
        """``occurred_at`` in ISO 8601 with ``Z``, as every channel shows it."""
        return self.occurred_at.isoformat().replace("+00:00", "Z")

    def flat(self) -> dict[str, Any]:
        """The seed's flattened message shape: envelope keys plus the data's keys."""
        message: dict[str, Any] = {
            "event_id": self.id,
            "type": self.type.value,
            "job_id": self.job_id,
            "user_id": self.user_id,
            "timestamp": self.timestamp,
        }
        message.update(self.data.model_dump(mode="json"))
        return message


def _wrap_validation(exc: ValidationError, prefix: str = "") -> EventValidationError:
    errors = [
        (prefix + ".".join(str(p) for p in err["loc"]) or "event", err["msg"])
        for err in exc.errors(include_url=False)
    ]
    detail = "; ".join(f"{field}: {msg}" for field, msg in errors)
    return EventValidationError(f"invalid event: {detail}", errors)


def make_event(value: Event | dict[str, Any]) -> Event:
    """Return ``value`` as a validated :class:`Event`, raising :class:`EventValidationError`."""
    if isinstance(value, Event):
        return value
    if not isinstance(value, dict):
        raise EventValidationError(
            f"an event must be an Event or a dict, not {type(value).__name__}",
            [("event", "wrong type")],
        )
    try:
        return Event.model_validate(value)
    except ValidationError as exc:
        raise _wrap_validation(exc) from None


def encode(event: Event, max_bytes: int) -> bytes:
    """Serialise ``event`` for the stream, refusing it when over ``max_bytes``."""
    try:
        payload = event.model_dump_json().encode()
    except (PydanticSerializationError, UnicodeEncodeError) as exc:
        # A lone surrogate ("\ud800", e.g. from a JSON escape) validates as str but is not
        # text that UTF-8 can carry.
        raise EventValidationError(
            f"invalid event: text that cannot be encoded as UTF-8 ({exc})",
            [("event", "contains a lone surrogate or other unencodable text")],
        ) from None
    if len(payload) > max_bytes:
        raise EventTooLargeError(len(payload), max_bytes)
    return payload


def decode(fields: dict[str, Any], max_bytes: int | None = None) -> Event:
    """Turn a stream entry's fields back into an :class:`Event`, or raise :class:`DecodeError`.

    With ``max_bytes``, an entry larger than emit would have accepted is refused too.
    """
    raw = fields.get(WIRE_FIELD)
    if raw is None:
        raise DecodeError(f"entry has no {WIRE_FIELD!r} field", fields)
    if max_bytes is not None and len(raw) > max_bytes:
        raise DecodeError(f"event is {len(raw)} bytes, over MAX_EVENT_BYTES={max_bytes}", fields)
    try:
        return Event.model_validate_json(raw)
    except ValidationError as exc:
        raise DecodeError(str(_wrap_validation(exc)), fields, exc) from None
