"""Webhook endpoints registered once, with their filters and secrets (SPEC 9): the registry.

An endpoint is a standing recipient: a URL, a type (``webhook``, ``slack``, ``discord``),
filters (event types by their webhook names, job ids, user ids; absent means all), its own
``whsec_`` secret, extra headers, a rate limit, and whether it is disabled.

The registry is event-sourced beside the streams, in Redis: each endpoint's current state in
one hash field, and every change as an entry on the registry stream (what, which endpoint,
when), written together in one transaction. The stream is the audit trail and the change
feed at once: a dispatcher's :class:`EndpointIndex` loads the hash, then follows the stream
and re-reads what changed, so a change reaches every replica within its poll, with no
restart, and survives restarts. Secrets live only in the hash; the stream never holds one.
"""

from __future__ import annotations

import base64
import binascii
import secrets
import time
import uuid
from collections.abc import Iterable
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from redis.asyncio import Redis

from .errors import BookgenEventsError, EventValidationError
from .events import WEBHOOK_EVENT_NAMES, Event
from .registry import AuditedHash, field_errors
from .targets import target_problem

EndpointType = Literal["webhook", "slack", "discord"]
#: Headers an endpoint may not set: the signature's, and what the HTTP client owns.
RESERVED_HEADERS = frozenset(
    {"host", "content-length", "content-type", "transfer-encoding", "connection", "user-agent",
     "traceparent", "tracestate"}
)  # fmt: skip
_MAX_IDS = 1000
_NAME_SET = frozenset(WEBHOOK_EVENT_NAMES.values())


class EndpointNotFound(BookgenEventsError, LookupError):
    """No endpoint has that id."""


class InvalidEndpoint(EventValidationError):
    """An endpoint's fields are invalid; ``errors`` names each field (nothing was written)."""


def new_secret() -> str:
    """A Standard Webhooks secret: ``whsec_`` and base64 of 32 random bytes."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def _check_secret(value: str) -> str:
    if not value.startswith("whsec_"):
        raise ValueError("must be a Standard Webhooks secret: whsec_ followed by base64")
    try:
        key = base64.b64decode(value[6:], validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("the part after whsec_ is not base64") from None
    if len(key) < 24:
        raise ValueError("the key must be at least 24 bytes")
    return value


Ids = Annotated[
    list[Annotated[str, Field(min_length=1, max_length=200)]], Field(max_length=_MAX_IDS)
]


class _Fields(BaseModel):
    """What a caller may set, on creation and in a patch."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: Annotated[str, Field(max_length=2048)]
    type: EndpointType = "webhook"
    description: Annotated[str, Field(max_length=500)] = ""
    event_types: list[str] | None = None
    job_ids: Ids | None = None
    user_ids: Ids | None = None
    rate_limit_per_minute: Annotated[int, Field(ge=1, le=1_000_000)] | None = None
    headers: dict[str, Annotated[str, Field(max_length=2000)]] = Field(default_factory=dict)
    disabled: bool = False
    metadata: dict[str, Any] = Field(default_factory=dict)

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        problem = target_problem(value)
        if problem is not None:
            raise ValueError(problem)
        return value

    @field_validator("event_types")
    @classmethod
    def _types(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        unknown = sorted(set(value) - _NAME_SET)
        if unknown:
            raise ValueError(
                f"unknown event type(s) {', '.join(unknown)}: use {', '.join(sorted(_NAME_SET))}"
            )
        return sorted(set(value))

    @field_validator("headers")
    @classmethod
    def _headers(cls, value: dict[str, str]) -> dict[str, str]:
        for name, text in value.items():
            lowered = name.lower()
            if lowered in RESERVED_HEADERS or lowered.startswith("webhook-"):
                raise ValueError(f"header {name!r} is reserved")
            if not name.isascii() or not name.replace("-", "").isalnum():
                raise ValueError(f"header name {name!r} is not a token")
            if "\r" in text or "\n" in text:
                raise ValueError(f"header {name!r} holds a line break")
        return value


class Endpoint(_Fields):
    """A registered endpoint as stored: the caller's fields plus identity, secrets and state."""

    id: str
    secret: str
    #: The secret before the last rotation, signing beside the new one until ``..._until``.
    previous_secret: str | None = None
    previous_secret_until: float | None = None
    disabled_reason: str | None = None
    created_at: float
    updated_at: float

    def secrets_at(self, now: float) -> list[str]:
        """The secrets that sign now: the current one, and the previous during its grace."""
        keys = [self.secret]
        if self.previous_secret and (self.previous_secret_until or 0) > now:
            keys.append(self.previous_secret)
        return keys

    def matches(self, event: Event) -> bool:
        """Whether ``event`` passes this endpoint's filters (the type is the index's job)."""
        if self.job_ids is not None and event.job_id not in self.job_ids:
            return False
        return self.user_ids is None or event.user_id in self.user_ids

    def wants(self, event: Event) -> bool:
        """Whether ``event`` passes every filter, its type included (the index routes by type
        itself; a replay to one endpoint asks this)."""
        types = self.event_types
        return (types is None or WEBHOOK_EVENT_NAMES[event.type] in types) and self.matches(event)

    def public(self) -> dict[str, Any]:
        """The endpoint as shown after creation: everything but its secrets."""
        return self.model_dump(exclude={"secret", "previous_secret"})


def endpoint_recipient(endpoint: Endpoint) -> str:
    """An endpoint as the webhook channel's recipient: ``"<id> <url>"``.

    The runtime keys rate limits, retries and dead letters by the recipient, so each
    endpoint is its own even where two share a URL; the log shows the URL, with the id in
    its metadata (:func:`split_recipient`). Neither part can hold a space.
    """
    return f"{endpoint.id} {endpoint.url}"


def split_recipient(recipient: str) -> tuple[str | None, str]:
    """``(endpoint id, url)`` of a webhook recipient; an event's own URL has no id."""
    head, space, url = recipient.partition(" ")
    return (head, url) if space and head.startswith("ep_") else (None, recipient)


def _invalid(exc: ValidationError) -> InvalidEndpoint:
    errors = field_errors(exc)
    detail = "; ".join(f"{field}: {msg}" for field, msg in errors)
    return InvalidEndpoint(f"invalid endpoint: {detail}", errors)


class EndpointRegistry:
    """Create, change and read endpoints; every change is one atomic write and one audit entry.

    Keys: ``<prefix>:endpoints`` (hash: id -> endpoint JSON) and ``<prefix>:endpoints:changes``
    (their audit trail, never trimmed); see :class:`~bookgen_events.registry.AuditedHash`.
    """

    def __init__(self, store: AuditedHash) -> None:
        self.store = store

    @classmethod
    def for_prefix(cls, redis: Redis, prefix: str) -> EndpointRegistry:
        return cls(AuditedHash.named(redis, prefix, "endpoints"))

    async def create(self, fields: dict[str, Any]) -> Endpoint:
        """Register an endpoint; its secret is generated unless ``fields`` carries one."""
        fields = dict(fields)
        secret = fields.pop("secret", None)
        now = time.time()
        try:
            endpoint = Endpoint(
                **_Fields(**fields).model_dump(),
                id=f"ep_{uuid.uuid4().hex[:20]}",
                secret=_check_secret(secret) if secret is not None else new_secret(),
                created_at=now,
                updated_at=now,
            )
        except ValidationError as exc:
            raise _invalid(exc) from None
        except ValueError as exc:
            raise InvalidEndpoint(
                f"invalid endpoint: secret: {exc}", [("secret", str(exc))]
            ) from None
        await self._put(endpoint, "created", fields)
        return endpoint

    async def get(self, endpoint_id: str) -> Endpoint:
        raw = await self.store.get(endpoint_id)
        if raw is None:
            raise EndpointNotFound(f"no endpoint {endpoint_id!r}")
        return Endpoint.model_validate_json(raw)

    async def all(self) -> list[Endpoint]:
        """Every endpoint, oldest first."""
        found = [Endpoint.model_validate_json(v) for v in await self.store.values()]
        return sorted(found, key=lambda e: e.created_at)

    async def update(self, endpoint_id: str, changes: dict[str, Any]) -> Endpoint:
        """Apply a patch of caller fields (``secret`` changes only by rotation)."""
        if "secret" in changes:
            message = "change it with rotate-secret"
            raise InvalidEndpoint(f"invalid endpoint: secret: {message}", [("secret", message)])
        current = await self.get(endpoint_id)
        merged = {**current.model_dump(include=set(_Fields.model_fields)), **changes}
        try:
            checked = _Fields(**merged).model_dump()
        except ValidationError as exc:
            raise _invalid(exc) from None
        extra: dict[str, Any] = {"updated_at": time.time()}
        if checked["disabled"] != current.disabled:
            extra["disabled_reason"] = None  # re-enabled, or disabled by hand
        endpoint = current.model_copy(update={**checked, **extra})
        op = "updated"
        if set(changes) == {"disabled"}:
            op = "disabled" if endpoint.disabled else "enabled"
        await self._put(endpoint, op, changes)
        return endpoint

    async def disable(self, endpoint_id: str, reason: str) -> Endpoint:
        """Disable with a reason (auto-disable, or an operator's)."""
        current = await self.get(endpoint_id)
        endpoint = current.model_copy(
            update={"disabled": True, "disabled_reason": reason, "updated_at": time.time()}
        )
        await self._put(endpoint, "disabled", ["disabled", "disabled_reason"])
        return endpoint

    async def rotate_secret(self, endpoint_id: str, grace_s: float) -> Endpoint:
        """A new secret signs at once; the old one signs beside it for ``grace_s`` seconds."""
        current = await self.get(endpoint_id)
        now = time.time()
        endpoint = current.model_copy(
            update={
                "secret": new_secret(),
                "previous_secret": current.secret,
                "previous_secret_until": now + grace_s,
                "updated_at": now,
            }
        )
        await self._put(endpoint, "rotated", ["secret"])
        return endpoint

    async def delete(self, endpoint_id: str) -> None:
        if not await self.store.delete(endpoint_id):
            raise EndpointNotFound(f"no endpoint {endpoint_id!r}")

    async def changes(self, count: int = 100) -> list[dict[str, Any]]:
        """The audit trail, newest first: what changed, on which endpoint, when."""
        return await self.store.changes(count)

    async def _put(self, endpoint: Endpoint, op: str, fields: Iterable[str]) -> None:
        await self.store.put(endpoint.id, endpoint.model_dump_json(), op, fields)
