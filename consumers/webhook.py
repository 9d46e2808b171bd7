"""The webhook dispatcher: signed POSTs of each event to its ``webhook_url``.

Only the delivery of one event to one URL lives here; the consumer runtime does the reading,
retries (``WEBHOOK_RETRY_SCHEDULE``), dead letters, rate limits per URL and outcomes. The
mapping from HTTP to that runtime is:

- 2xx: delivered;
- 3xx: retried (redirects are not followed: a moved endpoint must be reconfigured);
- 408, 429, 5xx, timeouts and transport errors: retried, honouring ``Retry-After`` on 429/503;
- 410 Gone and every other 4xx: dead-lettered at once;
- a non-http(s) URL, or a target that is or resolves to a non-public address: dead-lettered.

One ``httpx.AsyncClient`` per process, on the ``httpx-aiohttp`` transport: measured here with
50 concurrent POSTs to a local receiver it is several times faster than httpx's own transport
(``bench/webhook.py`` prints both), and aiohttp's resolver hook is where the SSRF guard checks
the addresses actually connected to.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import http.cookiejar
import ssl
import time
from collections.abc import AsyncIterator
from datetime import UTC
from typing import Any

import aiohttp
import certifi
import httpx
import pydantic_core
from aiohttp.abc import AbstractResolver
from httpx_aiohttp import AiohttpTransport
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

from .signing import Signer, parse_secrets
from .ssrf import GuardedResolver, SSRFBlocked, check_url, find_blocked

log = get_logger("consumers.webhook")

USER_AGENT = "bookgen-events-webhook/0.1"
#: How much of a response body is read (to keep the connection reusable) before giving up on it.
MAX_RESPONSE_BYTES = 64 * 1024
_RETRYABLE_4XX = frozenset({408, 425, 429})
_RETRY_AFTER_STATUSES = frozenset({429, 503})


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


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """``Retry-After`` as seconds from now: delta-seconds or an HTTP date; None if absent/bad."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def create_client(
    settings: Settings, *, max_connections: int, resolver: AbstractResolver | None = None
) -> httpx.AsyncClient:
    """The process's one webhook HTTP client: pooled keep-alive, no redirects, no cookies.

    ``resolver`` replaces aiohttp's ``getaddrinfo`` resolver (tests inject one); unless
    ``WEBHOOK_ALLOW_PRIVATE`` it is wrapped in the SSRF guard.
    """
    if not settings.webhook_allow_private:
        resolver = GuardedResolver(resolver)
    ssl_context = ssl.create_default_context(cafile=certifi.where())

    def session() -> aiohttp.ClientSession:
        # Built lazily, inside the running loop, on the first request.
        connector = aiohttp.TCPConnector(
            limit=max_connections,  # the consumer never has more requests in flight
            limit_per_host=0,
            keepalive_timeout=30,
            ttl_dns_cache=10,
            ssl=ssl_context,
            resolver=resolver,
        )
        return aiohttp.ClientSession(
            connector=connector, cookie_jar=aiohttp.DummyCookieJar(), auto_decompress=False
        )

    # Receivers' cookies must not ride along on later deliveries: a jar that accepts none.
    no_cookies = http.cookiejar.CookieJar(http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))
    return httpx.AsyncClient(
        transport=AiohttpTransport(client=session),
        timeout=httpx.Timeout(settings.webhook_timeout),
        follow_redirects=False,
        trust_env=False,  # an HTTP(S)_PROXY in the environment would bypass the SSRF guard
        cookies=no_cookies,
        headers={"user-agent": USER_AGENT},
    )


def _describe(exc: BaseException) -> str:
    # httpx-aiohttp maps aiohttp's errors loosely (a refused connection is a ConnectTimeout),
    # so name the underlying error.
    cause = exc.__cause__ or exc
    text = str(cause) or str(exc)
    return f"{type(cause).__name__}: {text}"[:500]


class WebhookChannel:
    """Delivers an event to its ``webhook_url`` as a Standard Webhooks signed POST."""

    name = "webhook"

    def __init__(
        self,
        client: httpx.AsyncClient,
        signer: Signer,
        *,
        timeout: float,
        allow_private: bool = False,
        endpoints: EndpointIndex | None = None,
        health: EndpointHealth | None = None,
    ) -> None:
        self._client = client
        self._health = health
        self._signer = signer
        self._timeout = timeout
        self._allow_private = allow_private
        self._endpoints = endpoints

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
            return await self._post(event, url, self._signer, {})
        endpoint = self._endpoint(endpoint_id)
        # Its own secret; during a rotation's grace the previous one signs beside it.
        signer = Signer(parse_secrets(" ".join(endpoint.secrets_at(time.time()))))
        try:
            status = await self._post(event, endpoint.url, signer, endpoint.headers)
        except (RetryLater, Reject) as exc:
            await self._health_says(endpoint, exc.reason)
            raise
        await self._health_says(endpoint, None)
        return status

    async def _post(self, event: Event, url: str, signer: Signer, extra: dict[str, str]) -> int:
        try:
            check_url(url, allow_private=self._allow_private)
        except SSRFBlocked as exc:
            raise Reject(f"refused (SSRF guard): {exc.reason}") from None
        body = encode_payload(event)
        headers = {**extra, **signer.headers(event.id, body), "content-type": "application/json"}
        try:
            async with asyncio.timeout(self._timeout):
                async with self._client.stream(
                    "POST", url, content=body, headers=headers
                ) as response:
                    await _drain(response)
        except (httpx.HTTPError, httpx.InvalidURL, aiohttp.ClientError, OSError) as exc:
            raise self._transport_failure(exc) from None
        return self._status(response)

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

    def _transport_failure(self, exc: BaseException) -> RetryLater | Reject:
        blocked = find_blocked(exc)
        if blocked is not None:
            return Reject(f"refused (SSRF guard): {blocked.reason}")
        if isinstance(exc, httpx.UnsupportedProtocol | httpx.InvalidURL):
            return Reject(f"bad webhook URL: {_describe(exc)}")
        if isinstance(exc, TimeoutError | httpx.TimeoutException) and not isinstance(
            exc.__cause__, aiohttp.ClientConnectorError
        ):
            return RetryLater(f"timed out after {self._timeout:g}s")
        return RetryLater(_describe(exc))

    @staticmethod
    def _status(response: httpx.Response) -> int:
        code = response.status_code
        if 200 <= code < 300:
            return code
        if 300 <= code < 400:
            raise RetryLater(f"HTTP {code}: redirects are not followed", status_code=code)
        if code == 410:
            raise Reject("HTTP 410 Gone: the endpoint was removed", status_code=code)
        if 400 <= code < 500 and code not in _RETRYABLE_4XX:
            raise Reject(f"HTTP {code}: refused by the receiver", status_code=code)
        delay = None
        if code in _RETRY_AFTER_STATUSES:
            delay = retry_after_seconds(response.headers.get("retry-after"))
        raise RetryLater(f"HTTP {code}", delay=delay, status_code=code)


async def _drain(response: httpx.Response) -> None:
    """Read (a bounded part of) the body so the keep-alive connection can be reused."""
    seen = 0
    async for chunk in response.aiter_raw():
        seen += len(chunk)
        if seen >= MAX_RESPONSE_BYTES:
            break


@contextlib.asynccontextmanager
async def open_channel(
    settings: Settings,
    *,
    max_connections: int | None = None,
    resolver: AbstractResolver | None = None,
    endpoints: EndpointIndex | None = None,
    health: EndpointHealth | None = None,
) -> AsyncIterator[WebhookChannel]:
    """Open the shared HTTP client and build the channel; the client is closed on exit."""
    signer = Signer.from_setting(settings.webhook_secret)
    client = create_client(
        settings,
        max_connections=max_connections or settings.consumer_concurrency,
        resolver=resolver,
    )
    if settings.webhook_allow_private:
        log.warning("WEBHOOK_ALLOW_PRIVATE=true: the SSRF guard is off")
    log.info(
        "webhook client ready",
        transport="httpx-aiohttp",
        timeout_s=settings.webhook_timeout,
        signing_keys=signer.key_count,
    )
    try:
        yield WebhookChannel(
            client,
            signer,
            timeout=settings.webhook_timeout,
            allow_private=settings.webhook_allow_private,
            endpoints=endpoints,
            health=health,
        )
    finally:
        await client.aclose()


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
