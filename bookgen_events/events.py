"""The event envelope stored in the stream, its per-type payloads, and the wire format.

An event is validated once where it enters the system (``emit``, ``POST /events``) and again
where a consumer decodes it, so a hand-written stream entry cannot crash a consumer: it is
dead-lettered as poison instead.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    StringConstraints,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    WrapValidator,
)
from pydantic_core import PydanticSerializationError, core_schema

from .errors import DecodeError, EventTooLargeError, EventValidationError
from .event_ids import new_event_id
from .jsondepth import MAX_JSON_DEPTH, too_deep
from .targets import target_problem

#: The stream entry holds the event as JSON under this single field.
WIRE_FIELD = "event"
# The envelope and ``data`` are the two levels above ``metadata``.
_METADATA_DEPTH = MAX_JSON_DEPTH - 2


class EventType(StrEnum):
    """The five notification types of the seed."""

    PROGRESS_UPDATE = "progress_update"
    COMPLETION = "completion"
    ERROR_ALERT = "error_alert"
    STATUS_CHANGE = "status_change"
    ADMIN_ALERT = "admin_alert"


#: The seed's webhook event names: what a webhook body's ``event`` says, and what endpoint
#: filters name.
WEBHOOK_EVENT_NAMES: dict[EventType, str] = {
    EventType.PROGRESS_UPDATE: "job.progress",
    EventType.COMPLETION: "job.completed",
    EventType.ERROR_ALERT: "job.error",
    EventType.STATUS_CHANGE: "job.status_changed",
    EventType.ADMIN_ALERT: "admin.alert",
}


# Constraints are regular expressions run by pydantic-core rather than Python validators:
# a consumer decodes every event it reads, and a Python callback per field would cost more
# than the whole JSON parse. ``_PATTERN_MESSAGES`` turns their errors back into plain words.
_SINGLE_LINE = r"^[^\r\n\x00]*$"
# The WHATWG HTML "valid e-mail address" syntax: strict, no CR/LF, no display names.
_EMAIL = (
    r"^[a-zA-Z0-9.!#$%&'*+/=?^_`{|}~-]+@[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?"
    r"(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)+$"
)
# An absolute http(s) URL with a host (a name, or an IP literal in brackets), an optional
# numeric port, and no whitespace or control characters anywhere.
_T = r"[^\s\x00-\x1f\x7f"  # a URL character class, to be closed with the exclusions
_URL = (
    rf"^(?i:https?)://(?:{_T}/?#@]*@)?(?:\[{_T}/?#@\[\]]+\]|{_T}/?#@\[\]:]+)(?::[0-9]*)?"
    rf"(?:[/?#]{_T}]*)?$"
)
# E.164: "+", the country code and number, 8 to 15 digits in all, no spaces or punctuation.
_PHONE = r"^\+[1-9][0-9]{7,14}$"
#: How many phone numbers one event may text (each is a paid SMS).
MAX_PHONES = 20
_PATTERN_MESSAGES = {
    # Values that can end up in mail headers (subjects) must never carry a line break.
    _SINGLE_LINE: "must not contain line breaks or NUL",
    _EMAIL: "is not a valid email address",
    _URL: "must be an absolute http(s) URL with a host, on one line",
    _PHONE: "is not an E.164 phone number: + and the country code, no spaces (+33612345678)",
}

SingleLine = Annotated[str, StringConstraints(pattern=_SINGLE_LINE)]
EmailAddress = Annotated[str, StringConstraints(max_length=254, pattern=_EMAIL)]
WebhookUrl = Annotated[str, StringConstraints(max_length=2048, pattern=_URL)]
PhoneNumber = Annotated[str, StringConstraints(pattern=_PHONE)]
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
    alert_type: Annotated[SingleLine, Field(min_length=1)]
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


_ZERO = timedelta(0)
#: How far ahead ``deliver_at`` may lie: further is a mistake (ms for s), not a schedule.
MAX_DELIVER_AHEAD = timedelta(days=366)


def _utc(value: datetime) -> datetime:
    offset = value.utcoffset()
    if offset is None:
        return value.replace(tzinfo=UTC)
    # Already UTC (as every decoded "...Z" is): keep it rather than build a new datetime.
    return value if offset == _ZERO else value.astimezone(UTC)


class _UtcDatetime:
    """A datetime held in UTC; naive input means UTC.

    Decoding a stream entry (JSON) takes the datetime as it is when it is already UTC, as
    every one emit wrote is, without a Python call: a consumer decodes every event it reads.
    """

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: Any) -> Any:
        normalise = core_schema.no_info_after_validator_function(_utc, handler(source))
        in_json = core_schema.union_schema(
            [core_schema.datetime_schema(tz_constraint=0), normalise],
            mode="left_to_right",
            custom_error_type="datetime_invalid",
            custom_error_message="Input should be a valid ISO 8601 datetime",
        )
        return core_schema.json_or_python_schema(
            json_schema=in_json,
            python_schema=normalise,
            serialization=normalise.get("serialization"),
        )


def _data_for_type(value: Any, handler: Any, info: ValidationInfo) -> Any:
    # An Event built directly validates its payload with the model its (already validated)
    # type names; the per-type subclasses below declare that model instead.
    type_ = info.data.get("type")
    if type_ is None:
        return value  # the type field reports its own error
    model = DATA_MODELS[type_]
    if isinstance(value, model):
        return value
    return model.model_validate(value)


def _dedupe(value: list[str]) -> list[str]:
    return list(dict.fromkeys(value)) if len(value) > 1 else value


#: A W3C trace-context header value: printable ASCII, bounded.
TraceHeader = Annotated[str, Field(max_length=512, pattern=r"^[\x20-\x7e]*$")]


class Event(BaseModel):
    """The immutable envelope appended to ``bookgen:events``.

    ``id`` is the idempotency key everywhere (webhook-id, Message-ID, log rows); it is a
    UUIDv7 generated on construction when not given. :func:`make_event` and :func:`decode`
    return the subclass for the event's type (``ProgressEvent``...), validated wholly in
    pydantic-core; it compares equal to an ``Event`` with the same fields.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", coerce_numbers_to_str=True)

    id: Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._:-]+$")] = Field(
        default_factory=new_event_id
    )
    type: EventType
    occurred_at: Annotated[datetime, _UtcDatetime] = Field(
        default_factory=lambda: datetime.now(UTC)
    )
    job_id: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    user_id: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    data: Annotated[EventData, WrapValidator(_data_for_type)]
    webhook_url: WebhookUrl | None = None
    emails: Annotated[list[EmailAddress], AfterValidator(_dedupe)] = Field(default_factory=list)
    phones: Annotated[list[PhoneNumber], Field(max_length=MAX_PHONES), AfterValidator(_dedupe)] = (
        Field(default_factory=list)
    )
    #: Held until then (UTC; naive means UTC), then appended with this id (SPEC 11).
    deliver_at: Annotated[datetime, _UtcDatetime] | None = None
    #: The emitter's W3C trace context (``traceparent``, ``tracestate``), recorded by ``emit``
    #: when tracing is on (SPEC 13, :mod:`~bookgen_events.tracing`).
    trace: dict[Literal["traceparent", "tracestate"], TraceHeader] | None = None

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Event):
            return NotImplemented
        return self.__dict__ == other.__dict__

    __hash__ = None  # type: ignore[assignment]  # data holds dicts: never hashable

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


# One subclass per type, its payload model declared rather than chosen by a Python
# validator: a union tagged by ``type`` then validates an event in pydantic-core alone
# (~3 µs against ~6 µs to decode an event, on a consumer's hot path).
class ProgressEvent(Event):
    type: Literal[EventType.PROGRESS_UPDATE]
    data: ProgressData


class CompletionEvent(Event):
    type: Literal[EventType.COMPLETION]
    data: CompletionData


class ErrorEvent(Event):
    type: Literal[EventType.ERROR_ALERT]
    data: ErrorData


class StatusChangeEvent(Event):
    type: Literal[EventType.STATUS_CHANGE]
    data: StatusChangeData


class AdminEvent(Event):
    type: Literal[EventType.ADMIN_ALERT]
    data: AdminData


_TYPED: TypeAdapter[Event] = TypeAdapter(
    Annotated[
        ProgressEvent | CompletionEvent | ErrorEvent | StatusChangeEvent | AdminEvent,
        Discriminator("type"),
    ]
)
_TYPES = tuple(t.value for t in EventType)
# pydantic-core's validator itself: TypeAdapter's wrapper methods cost ~0.3 µs a call in
# keyword handling, a tenth of a consumer's decode.
_VALIDATOR = _TYPED.validator


def _error(err: Any) -> tuple[str, str]:
    """One pydantic error of the tagged union as (field path, message)."""
    loc = err["loc"]
    if loc and loc[0] in _TYPES:
        loc = loc[1:]  # the union's tag, not a field
    kind = err["type"]
    if kind == "union_tag_invalid":
        return "type", f"must be one of {', '.join(_TYPES)}, not {err['ctx']['tag']!r}"
    if kind == "union_tag_not_found":
        return "type", "Field required"
    message = err["msg"]
    if kind == "string_pattern_mismatch":
        message = _PATTERN_MESSAGES.get(err["ctx"]["pattern"], message)
        if isinstance(err["input"], str):
            message = f"{err['input'][:80]!r} {message}"
    return ".".join(str(p) for p in loc) or "event", message


def _wrap_validation(exc: ValidationError) -> EventValidationError:
    errors = [_error(err) for err in exc.errors(include_url=False)]
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
        return _VALIDATOR.validate_python(value)
    except ValidationError as exc:
        raise _wrap_validation(exc) from None


def _check_edge(event: Event) -> None:
    """What only the edge checks (emit): the target's shape and the metadata's depth.

    Not part of the model: a consumer decoding each entry would pay for it on its hot path,
    and an entry that got past it anyway is refused at connect or dead-lettered there.
    """
    url = event.webhook_url
    if url is not None and (problem := target_problem(url)) is not None:
        raise EventValidationError(
            f"invalid event: webhook_url: {url[:80]!r} {problem}", [("webhook_url", problem)]
        )
    if event.deliver_at is not None and event.deliver_at - datetime.now(UTC) > MAX_DELIVER_AHEAD:
        message = f"more than {MAX_DELIVER_AHEAD.days} days ahead"
        raise EventValidationError(
            f"invalid event: deliver_at: {message}", [("deliver_at", message)]
        )
    metadata = event.data.metadata
    if metadata and too_deep(metadata, _METADATA_DEPTH):
        message = f"nested deeper than {MAX_JSON_DEPTH} levels of JSON"
        raise EventValidationError(
            f"invalid event: data.metadata: {message}", [("data.metadata", message)]
        )


def encode(event: Event, max_bytes: int) -> bytes:
    """Check ``event`` as the edge does and serialise it for the stream (``max_bytes`` at most)."""
    _check_edge(event)
    try:
        # pydantic-core's serializer itself: UTF-8 bytes at once, without model_dump_json's
        # keyword handling and a str to encode again (~0.4 µs of an emit).
        payload = type(event).__pydantic_serializer__.to_json(event)
    except PydanticSerializationError as exc:
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
        return _VALIDATOR.validate_json(raw)
    except ValidationError as exc:
        raise DecodeError(str(_wrap_validation(exc)), fields, exc) from None
