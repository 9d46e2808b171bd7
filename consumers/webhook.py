"""The webhook dispatcher: signed POSTs of each event to its ``webhook_url`` and endpoints.

Only the delivery of one event to one URL lives here; the consumer runtime does the reading,
retries (``WEBHOOK_RETRY_SCHEDULE``), dead letters, rate limits per recipient and outcomes.
Every POST goes through the process's one :class:`~consumers.outbound.Sender` (aiohttp, the
SSRF guard, and the one mapping of HTTP answers to delivered / RetryLater / Reject).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
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
from bookgen_events.serving import run_channel
from bookgen_events.settings import Settings

from .outbound import Sender, open_sender, retry_after_seconds
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
    """Serialise once: these exact bytes are signed and sent."""
    return pydantic_core.to_json(payload(event))


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
        # Per endpoint secret set, its Signer, built once (decoding the secrets cost ~4 us of
        # every endpoint delivery: bench/webhook.py, 1 endpoint).
        self._signers: dict[tuple[str, ...], Signer] = {}
        # The body of the events being delivered, encoded once for all their recipients
        # (bench/webhook.py, 100 endpoints per event).
        self._bodies: dict[str, bytes] = {}

    def recipients(self, event: Event) -> list[str]:
        """The event's own ``webhook_url``, and every enabled webhook endpoint it matches."""
        own = [event.webhook_url] if event.webhook_url else []
        if self._endpoints is None:
            return own
        return own + self._endpoints.recipients(event, "webhook")

    def rate_limit_key(self, event: Event, recipient: str) -> str:
        return recipient

    async def deliver(self, event: Event, recipient: str) -> int:
        """POST once; return the 2xx status, or raise RetryLater / Reject."""
        endpoint_id, url = split_recipient(recipient)
        if endpoint_id is None:
            return await self._post(event, url, self._signer, None)
        endpoint = self._endpoint(endpoint_id)
        try:
            status = await self._post(
                event, endpoint.url, self._signer_for(endpoint), endpoint.headers
            )
        except (RetryLater, Reject) as exc:
            await self._health_says(endpoint, exc.reason)
            raise
        await self._health_says(endpoint, None)
        return status

    def _body(self, event: Event) -> bytes:
        body = self._bodies.get(event.id)
        if body is None:
            if len(self._bodies) >= 256:  # the events in flight, not a history
                del self._bodies[next(iter(self._bodies))]
            body = self._bodies[event.id] = encode_payload(event)
        return body

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
    await endpoints.load()
    health = EndpointHealth(
        bus.redis,
        bus.names,
        registry,
        bus.emit,
        disable_after_s=settings.endpoint_disable_after,
        min_failures=settings.endpoint_disable_min_failures,
        admin_emails=settings.admin_emails,
    )
    done = asyncio.Event()  # the follower's own stop: the dispatcher is done, however it ended
    follower = asyncio.create_task(endpoints.follow(done), name="endpoints")
    try:
        async with open_channel(
            settings, max_connections=concurrency, endpoints=endpoints, health=health
        ) as channel:
            await run_channel(bus, settings, channel, stop, **overrides)
    finally:
        done.set()
        await follower
