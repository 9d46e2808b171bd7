"""The webhook dispatcher: each event to its ``webhook_url`` and to its registered endpoints.

A ``webhook`` endpoint (and an event's own URL) gets the seed's JSON, signed per Standard
Webhooks; a ``slack`` or ``discord`` endpoint gets a readable message in that service's
shape (:mod:`consumers.slack`, :mod:`consumers.discord`), unsigned (neither verifies those
headers), with the endpoint's extra headers all the same, under that service's default rate
limit unless the endpoint sets ``rate_limit_per_minute``.

Only the delivery of one event to one URL lives here; the consumer runtime does the reading,
retries (``WEBHOOK_RETRY_SCHEDULE``), dead letters, rate limits per recipient and outcomes.
Every POST goes through the process's one :class:`~consumers.outbound.Sender` (aiohttp, the
SSRF guard, and the one mapping of HTTP answers to delivered / RetryLater / Reject).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import pydantic_core
from aiohttp.abc import AbstractResolver
from redis.exceptions import RedisError

from bookgen_events.bus import EventBus
from bookgen_events.endpoint_health import EndpointHealth
from bookgen_events.endpoint_index import EndpointIndex
from bookgen_events.endpoints import Endpoint, EndpointRegistry, split_recipient
from bookgen_events.errors import Reject, RetryLater
from bookgen_events.events import WEBHOOK_EVENT_NAMES, Event
from bookgen_events.logs import get_logger
from bookgen_events.ratelimit import HOUR_MS, MINUTE_MS, Window
from bookgen_events.serving import run_channel
from bookgen_events.settings import Settings

from . import discord, slack
from .outbound import Refine, Sender, open_sender, retry_after_seconds
from .signing import Signer, parse_secrets

__all__ = ["WebhookChannel", "encode_payload", "open_channel", "payload", "retry_after_seconds"]

log = get_logger("consumers.webhook")


def payload(event: Event) -> dict[str, Any]:
    """The seed's webhook body: event name, job id, timestamp and the data's fields, flattened."""
    body: dict[str, Any] = {
        "event": WEBHOOK_EVENT_NAMES[event.type],
        "event_id": event.id,
        "job_id": event.job_id,
        "timestamp": event.timestamp,
    }
    if event.user_id is not None:
        body["user_id"] = event.user_id
    body.update(event.data.model_dump(mode="json"))
    return body


def encode_payload(event: Event) -> bytes:
    """:func:`payload` as JSON bytes, serialised once: these exact bytes are signed and sent.

    Written out rather than ``to_json(payload(event))``: the data is serialised by its own
    model's serializer and spliced after the envelope, the time by pydantic-core (the same
    ``...Z`` text), byte for byte the same JSON in 4.4 us instead of 8.7 (timeit, this box);
    encoding and signing had been ~40 % of the dispatcher's own CPU per delivery beside the
    consumer runtime (bench/webhook.py).
    """
    head: dict[str, Any] = {
        "event": WEBHOOK_EVENT_NAMES[event.type],
        "event_id": event.id,
        "job_id": event.job_id,
        "timestamp": event.occurred_at,
    }
    if event.user_id is not None:
        head["user_id"] = event.user_id
    data = event.data
    body = data.__pydantic_serializer__.to_json(data)
    envelope = pydantic_core.to_json(head)
    return envelope if body == b"{}" else envelope[:-1] + b"," + body[1:]


#: Per endpoint type: how an event is encoded, how the service's answers are read, and its
#: default rate limit (per minute, and any shorter window).
_ENCODERS: dict[str, Callable[[Event], bytes]] = {
    "webhook": encode_payload,
    "slack": slack.encode,
    "discord": discord.encode,
}
_REFINERS: dict[str, Refine] = {"slack": slack.refine, "discord": discord.refine}
_DEFAULT_LIMITS: dict[str, tuple[int, tuple[Window, ...]]] = {
    "slack": (slack.DEFAULT_PER_MINUTE, ()),
    "discord": (discord.DEFAULT_PER_MINUTE, (discord.BURST_WINDOW,)),
}
_ENDPOINT_TYPES = ("webhook", "slack", "discord")


class WebhookChannel:
    """Delivers an event to its ``webhook_url`` and to each matching endpoint, one POST each."""

    name = "webhook"

    def __init__(
        self,
        sender: Sender,
        signer: Signer,
        *,
        endpoints: EndpointIndex | None = None,
        health: EndpointHealth | None = None,
    ) -> None:
        self.sender = sender
        self._health = health
        self._signer = signer
        self._endpoints = endpoints
        # Per endpoint secret set, its Signer, built once: decoding and keying the secrets
        # cost 7 us of every endpoint delivery (timeit, this box; bench/webhook.py, 1 endpoint).
        self._signers: dict[tuple[str, ...], Signer] = {}
        # The body of the events being delivered, encoded once per endpoint type for all
        # their recipients: 4.7 us an encoding, paid once rather than 100 times per event
        # (timeit, this box; bench/webhook.py, 100 endpoints per event).
        self._bodies: dict[tuple[str, str], bytes] = {}
        # Per endpoint recipient: the endpoint its windows were made for, and the windows.
        self._windows: dict[str, tuple[Endpoint, Sequence[Window], Sequence[Window]]] = {}

    def recipients(self, event: Event) -> list[str]:
        """The event's own ``webhook_url``, and every enabled endpoint it matches."""
        own = [event.webhook_url] if event.webhook_url else []
        if self._endpoints is None:
            return own
        for kind in _ENDPOINT_TYPES:
            own += self._endpoints.recipients(event, kind)
        return own

    def rate_limit_key(self, event: Event, recipient: str) -> str:
        return recipient

    def rate_limit_windows(self, recipient: str, default: Sequence[Window]) -> Sequence[Window]:
        """An endpoint's own limit: its ``rate_limit_per_minute``, else its type's default
        (Slack 60/min; Discord 120/min and 5 per 2 s), beside the channel's per-hour limit."""
        if self._endpoints is None or not recipient.startswith("ep_"):
            return default
        endpoint_id, _ = split_recipient(recipient)
        endpoint = self._endpoints.get(endpoint_id) if endpoint_id else None
        if endpoint is None:
            return default
        cached = self._windows.get(recipient)
        if cached is not None and cached[0] is endpoint and cached[1] is default:
            return cached[2]
        per_minute, extra = _DEFAULT_LIMITS.get(endpoint.type, (0, ()))
        if endpoint.rate_limit_per_minute is not None:
            per_minute = endpoint.rate_limit_per_minute
        if not per_minute:  # a webhook endpoint without a limit of its own: the channel's
            per_minute = next((limit for length, limit in default if length == MINUTE_MS), 0)
        hourly = [w for w in default if w[0] == HOUR_MS]
        windows = ((MINUTE_MS, per_minute), *hourly, *extra)
        if len(self._windows) >= 65536:
            self._windows.clear()
        self._windows[recipient] = (endpoint, default, windows)
        return windows

    async def deliver(self, event: Event, recipient: str) -> int:
        """POST once; return the 2xx status, or raise RetryLater / Reject."""
        endpoint_id, url = split_recipient(recipient)
        if endpoint_id is None:
            return await self._post(event, url, self._signer, None)
        endpoint = self._endpoint(endpoint_id)
        try:
            if endpoint.type == "webhook":
                status = await self._post(
                    event, endpoint.url, self._signer_for(endpoint), endpoint.headers
                )
            else:
                status = await self._post_chat(event, endpoint)
        except (RetryLater, Reject) as exc:
            await self._health_says(endpoint, exc.reason)
            raise
        await self._health_says(endpoint, None)
        return status

    def _body(self, event: Event, kind: str = "webhook") -> bytes:
        key = (event.id, kind)
        body = self._bodies.get(key)
        if body is None:
            if len(self._bodies) >= 256:  # the events in flight, not a history
                del self._bodies[next(iter(self._bodies))]
            body = self._bodies[key] = _ENCODERS[kind](event)
        return body

    async def _post_chat(self, event: Event, endpoint: Endpoint) -> int:
        """A Slack or Discord message: not signed (neither verifies Standard Webhooks)."""
        headers = {"content-type": "application/json", **endpoint.headers}
        body = self._body(event, endpoint.type)
        response = await self.sender.post(
            endpoint.url, body, headers, refine=_REFINERS[endpoint.type]
        )
        return response.status

    def _signer_for(self, endpoint: Endpoint) -> Signer:
        """The endpoint's own secret; during a rotation's grace the previous one beside it."""
        secrets = tuple(endpoint.secrets_at(time.time()))
        signer = self._signers.get(secrets)
        if signer is None:
            if len(self._signers) >= 4096:
                self._signers.clear()
            signer = self._signers[secrets] = Signer(parse_secrets(" ".join(secrets)))
        return signer

    async def _post(
        self, event: Event, url: str, signer: Signer, extra: dict[str, str] | None
    ) -> int:
        body = self._body(event)
        headers = signer.headers(event.id, body)
        headers["content-type"] = "application/json"
        if extra:
            headers.update(extra)  # validated: never a webhook-* or content-type header
        response = await self.sender.post(url, body, headers)
        return response.status

    def _endpoint(self, endpoint_id: str) -> Endpoint:
        """The endpoint as the index knows it now; a retry to one deleted or disabled since
        is not sent (dead-lettered with why: ``recover`` sends it once it is back)."""
        endpoint = self._endpoints.get(endpoint_id) if self._endpoints is not None else None
        if endpoint is None:
            raise Reject(f"endpoint {endpoint_id} was deleted")
        if endpoint.disabled:
            raise Reject(f"endpoint {endpoint_id} is disabled: {endpoint.disabled_reason or ''}")
        return endpoint

    async def _health_says(self, endpoint: Endpoint, failure: str | None) -> None:
        """Count the attempt towards auto-disable; never at the cost of the delivery."""
        if self._health is None:
            return
        try:
            if failure is None:
                await self._health.succeeded(endpoint)
            else:
                await self._health.failed(endpoint, failure)
        except (RedisError, OSError) as exc:
            log.warning("endpoint health not recorded", endpoint_id=endpoint.id, error=str(exc))


@contextlib.asynccontextmanager
async def open_channel(
    settings: Settings,
    *,
    max_connections: int | None = None,
    resolver: AbstractResolver | None = None,
    endpoints: EndpointIndex | None = None,
    health: EndpointHealth | None = None,
) -> AsyncIterator[WebhookChannel]:
    """Open the process's sender and build the channel; the sender is closed on exit."""
    signer = Signer.from_setting(settings.webhook_secret)
    async with open_sender(settings, max_connections=max_connections, resolver=resolver) as sender:
        log.info(
            "webhook sender ready",
            client="aiohttp",
            timeout_s=settings.webhook_timeout,
            signing_keys=signer.key_count,
        )
        yield WebhookChannel(sender, signer, endpoints=endpoints, health=health)


async def serve(bus: EventBus, settings: Settings, stop: asyncio.Event, **overrides: Any) -> None:
    """Run the webhook consumer group until ``stop`` (``bookgen-events consume webhook``)."""
    concurrency = overrides.get("concurrency") or settings.consumer_concurrency
    # The registered endpoints, kept current while the dispatcher runs (SPEC 9).
    registry = EndpointRegistry.for_prefix(bus.redis, settings.stream_prefix)
    endpoints = EndpointIndex(registry)
    health = EndpointHealth(
        bus.redis,
        bus.names,
        registry,
        bus.emit,
        disable_after_s=settings.endpoint_disable_after,
        min_failures=settings.endpoint_disable_min_failures,
        admin_emails=settings.admin_emails,
    )
    async with (
        endpoints.kept_current(),
        open_channel(
            settings, max_connections=concurrency, endpoints=endpoints, health=health
        ) as channel,
    ):
        await run_channel(bus, settings, channel, stop, **overrides)
