"""The outbound HTTP sender: every HTTP delivery (webhook, Slack, Discord, Twilio) goes here.

One :class:`Sender` per process, one ``aiohttp.ClientSession`` inside it: a keep-alive pool,
no redirects followed, no cookies kept (``DummyCookieJar``), no proxy taken from the
environment (``trust_env=False``: an ``HTTPS_PROXY`` would bypass the SSRF guard), a bounded
response read (:data:`MAX_RESPONSE_BYTES`) and one total timeout per request. The SSRF guard
sits here once: the URL's shape and literal hosts are checked before sending
(:func:`consumers.ssrf.url_problem`), resolved names at connect time, in the resolver
(:class:`consumers.ssrf.GuardedResolver`).

The interface other channels build on::

    async with open_sender(settings, max_connections=50) as sender:
        response = await sender.post(url, body, headers)   # an OutboundResponse on 2xx
        response = await sender.post(url, body, headers, refine=twilio_errors)

and one mapping of what came back, shared by every HTTP channel (:func:`failure_for`):

- 2xx: delivered (``post`` returns the :class:`OutboundResponse`);
- 3xx: retried (redirects are not followed: a moved endpoint must be reconfigured);
- 408, 425, 429, 5xx, timeouts and transport errors: :class:`RetryLater`, honouring
  ``Retry-After`` (delta-seconds or an HTTP date) when the answer carries one;
- 410 Gone and every other 4xx: :class:`Reject`;
- an SSRF refusal, a non-http(s) or malformed URL: :class:`Reject`.

``refine(response, failure)`` lets a caller look at a non-2xx answer and return a better
exception than the default ``failure`` (Discord's JSON ``retry_after``, Twilio's error
codes), or ``failure`` itself.
"""

from __future__ import annotations

import contextlib
import email.utils
import ssl
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC

import aiohttp
import certifi
from aiohttp.abc import AbstractResolver
from multidict import CIMultiDictProxy

from bookgen_events import tracing
from bookgen_events.errors import Reject, RetryLater
from bookgen_events.logs import get_logger
from bookgen_events.settings import Settings

from .ssrf import GuardedResolver, find_blocked, url_problem

log = get_logger("consumers.outbound")

USER_AGENT = "bookgen-events/0.1"
#: How much of a response body is read; a longer one is cut and its connection not reused.
MAX_RESPONSE_BYTES = 64 * 1024
_RETRYABLE_4XX = frozenset({408, 425, 429})


@dataclass(frozen=True, slots=True)
class OutboundResponse:
    """What came back: the status, the headers, and at most ``MAX_RESPONSE_BYTES`` of body."""

    status: int
    headers: CIMultiDictProxy[str]
    body: bytes


Failure = RetryLater | Reject
#: ``refine(response, default)`` -> the exception to raise for a non-2xx answer.
Refine = Callable[[OutboundResponse, Failure], Failure]


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """``Retry-After`` as seconds from now: delta-seconds or an HTTP date; None if absent/bad."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)  # RFC 9110 says an integer; some services send "1.5"
    except ValueError:
        pass
    else:
        return seconds if seconds >= 0 else None
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def failure_for(status: int, headers: Mapping[str, str]) -> Failure:
    """The one mapping of a non-2xx status to RetryLater or Reject, for every HTTP channel."""
    if 300 <= status < 400:
        return RetryLater(f"HTTP {status}: redirects are not followed", status_code=status)
    if status == 410:
        return Reject("HTTP 410 Gone: the endpoint was removed", status_code=status)
    if 400 <= status < 500 and status not in _RETRYABLE_4XX:
        return Reject(f"HTTP {status}: refused by the receiver", status_code=status)
    delay = retry_after_seconds(headers.get("retry-after"))
    return RetryLater(f"HTTP {status}", delay=delay, status_code=status)


def _describe(exc: BaseException) -> str:
    text = str(exc) or repr(exc)
    return f"{type(exc).__name__}: {text}"[:500]


class Sender:
    """POSTs bytes through the process's one session; maps every answer and error once."""

    def __init__(self, session: aiohttp.ClientSession, *, allow_private: bool) -> None:
        self._session = session
        self._allow_private = allow_private
        self._timeout = session.timeout.total
        # Decided once, as the consumer decides its traced attempt: asking per POST read the
        # environment through opentelemetry's get_tracer_provider (~3,000 os.environ lookups
        # per 3,000 deliveries in bench/webhook.py's profile).
        self._traced = tracing.ACTIVE and tracing.enabled()

    @property
    def session(self) -> aiohttp.ClientSession:
        return self._session

    async def post(
        self,
        url: str,
        body: bytes,
        headers: Mapping[str, str],
        *,
        refine: Refine | None = None,
    ) -> OutboundResponse:
        """POST once; the response on 2xx, else raise :class:`RetryLater` / :class:`Reject`."""
        problem = url_problem(url, self._allow_private)
        if problem is not None:
            raise Reject(f"refused (SSRF guard): {problem}")
        if self._traced:  # the delivery attempt's span, to the receiver (W3C traceparent)
            headers = dict(headers)
            tracing.inject(headers)
        try:
            async with self._session.post(
                url, data=body, headers=headers, allow_redirects=False
            ) as response:
                status = response.status
                received = await _read_bounded(response)
                answer = OutboundResponse(status, response.headers, received)
        except aiohttp.InvalidURL as exc:
            raise Reject(f"bad target URL: {_describe(exc)}") from None
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise self._transport_failure(exc) from None
        if 200 <= status < 300:
            return answer
        failure = failure_for(status, answer.headers)
        if refine is not None:
            failure = refine(answer, failure)
        raise failure

    def _transport_failure(self, exc: BaseException) -> Failure:
        blocked = find_blocked(exc)
        if blocked is not None:
            return Reject(f"refused (SSRF guard): {blocked.reason}")
        if isinstance(exc, TimeoutError):
            return RetryLater(f"timed out after {self._timeout:g}s")
        return RetryLater(_describe(exc))

    async def aclose(self) -> None:
        await self._session.close()


async def _read_bounded(response: aiohttp.ClientResponse) -> bytes:
    """The body, up to MAX_RESPONSE_BYTES; past that the connection is dropped, not reused."""
    length = response.content_length
    if length is not None and length <= MAX_RESPONSE_BYTES:
        return await response.read()
    chunks: list[bytes] = []
    seen = 0
    content = response.content
    while seen < MAX_RESPONSE_BYTES:
        chunk = await content.readany()
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        seen += len(chunk)
    response.close()  # the rest is never read: this connection cannot carry another request
    return b"".join(chunks)[:MAX_RESPONSE_BYTES]


def create_session(
    *,
    timeout: float,
    max_connections: int,
    allow_private: bool,
    resolver: AbstractResolver | None = None,
) -> aiohttp.ClientSession:
    """The session behind :class:`Sender` (call inside the running loop).

    ``resolver`` replaces aiohttp's ``getaddrinfo`` one (tests inject a fixed table); unless
    ``allow_private`` it is wrapped in the SSRF guard.
    """
    if not allow_private:
        resolver = GuardedResolver(resolver)
    connector = aiohttp.TCPConnector(
        limit=max_connections,  # a consumer never has more requests in flight
        limit_per_host=0,
        keepalive_timeout=30,
        ttl_dns_cache=10,
        ssl=ssl.create_default_context(cafile=certifi.where()),
        resolver=resolver,
    )
    return aiohttp.ClientSession(
        connector=connector,
        cookie_jar=aiohttp.DummyCookieJar(),  # a receiver's cookies never ride along later
        trust_env=False,
        auto_decompress=False,
        timeout=aiohttp.ClientTimeout(total=timeout),
        headers={"user-agent": USER_AGENT},
    )


@contextlib.asynccontextmanager
async def open_sender(
    settings: Settings,
    *,
    max_connections: int | None = None,
    resolver: AbstractResolver | None = None,
    timeout_s: float | None = None,
) -> AsyncIterator[Sender]:
    """The process's sender from ``Settings`` (``WEBHOOK_TIMEOUT``, ``WEBHOOK_ALLOW_PRIVATE``,
    ``CONSUMER_CONCURRENCY``); closed on exit."""
    allow_private = settings.webhook_allow_private
    if allow_private:
        log.warning("WEBHOOK_ALLOW_PRIVATE=true: the SSRF guard is off")
    session = create_session(
        timeout=timeout_s or settings.webhook_timeout,
        max_connections=max_connections or settings.consumer_concurrency,
        allow_private=allow_private,
        resolver=resolver,
    )
    sender = Sender(session, allow_private=allow_private)
    try:
        yield sender
    finally:
        await sender.aclose()
