"""The outbound sender against a real local receiver: the one mapping of answers, and what the
session refuses to do (follow redirects, keep cookies, read unbounded bodies)."""

from __future__ import annotations

import email.utils
import time
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from bookgen_events.errors import Reject, RetryLater
from bookgen_events.settings import Settings
from consumers.outbound import (
    MAX_RESPONSE_BYTES,
    OutboundResponse,
    Sender,
    failure_for,
    open_sender,
    retry_after_seconds,
)
from tests.support.webhooks import Receiver, Reply

BODY = b'{"event":"job.completed"}'


@pytest.fixture
async def sender(webhook_settings: Settings) -> AsyncIterator[Sender]:
    async with open_sender(webhook_settings, max_connections=4) as opened:
        yield opened


@pytest.mark.parametrize(
    ("status", "kind"),
    [(301, RetryLater), (408, RetryLater), (425, RetryLater), (429, RetryLater),
     (500, RetryLater), (503, RetryLater), (400, Reject), (404, Reject), (410, Reject)],
)  # fmt: skip
async def test_each_status_maps_once(
    sender: Sender, receiver: Receiver, status: int, kind: type[Exception]
) -> None:
    """Non-2xx answers become RetryLater or Reject carrying the status; 2xx returns the body."""
    receiver.script("a", [Reply(status, {"location": "http://127.0.0.1:1/x"})])
    with pytest.raises(kind) as info:
        await sender.post(receiver.url("a"), BODY, {"content-type": "application/json"})
    assert info.value.status_code == status  # type: ignore[attr-defined]
    answer = await sender.post(receiver.url("a"), BODY, {})
    assert (answer.status, answer.body) == (200, b"ok")
    assert len(receiver.at("a")) == 2  # the redirect was not followed
    assert receiver.at("a")[0].body == BODY


async def test_retry_after_is_honoured_in_seconds_and_as_a_date(
    sender: Sender, receiver: Receiver
) -> None:
    """Retry-After on 429 and 503 sets the retry's delay, whether seconds or an HTTP date."""
    later = email.utils.formatdate(time.time() + 30, usegmt=True)
    receiver.script("a", [Reply(429, {"retry-after": "7"}), Reply(503, {"retry-after": later})])
    with pytest.raises(RetryLater) as first:
        await sender.post(receiver.url("a"), BODY, {})
    assert first.value.delay == 7.0
    with pytest.raises(RetryLater) as second:
        await sender.post(receiver.url("a"), BODY, {})
    assert second.value.delay is not None and 28 <= second.value.delay <= 30


def test_retry_after_parsing() -> None:
    now = time.time()
    assert retry_after_seconds("120") == 120.0
    assert retry_after_seconds("0.5") == 0.5
    assert retry_after_seconds(email.utils.formatdate(now - 60, usegmt=True), now=now) == 0.0
    assert retry_after_seconds("soon") is None and retry_after_seconds("-3") is None
    assert isinstance(failure_for(502, {}), RetryLater)


async def test_refine_sees_the_answer_and_may_replace_the_failure(
    sender: Sender, receiver: Receiver
) -> None:
    """A caller's hook gets the response and the default failure, and its choice is raised."""
    receiver.script("a", [Reply(400)])
    seen: list[OutboundResponse] = []

    def refine(answer: OutboundResponse, default: RetryLater | Reject) -> RetryLater | Reject:
        seen.append(answer)
        assert isinstance(default, Reject)
        return RetryLater("the hook says later", delay=1.5)

    with pytest.raises(RetryLater, match="the hook says later"):
        await sender.post(receiver.url("a"), BODY, {}, refine=refine)
    assert [a.status for a in seen] == [400] and seen[0].body == b"ok"


async def test_cookies_are_never_sent_back(sender: Sender, receiver: Receiver) -> None:
    """A receiver's Set-Cookie is dropped: the next request carries no cookie."""
    receiver.script("a", [Reply(200, {"set-cookie": "session=abc; Path=/"})])
    await sender.post(receiver.url("a"), BODY, {})
    await sender.post(receiver.url("a"), BODY, {})
    assert "cookie" not in receiver.at("a")[1].headers


async def test_refused_targets_are_rejected_before_any_connection(
    webhook_settings: Settings, receiver: Receiver
) -> None:
    """Loopback (unless allowed), a numeric host form and a non-http scheme are Reject."""
    guarded = webhook_settings.model_copy(update={"webhook_allow_private": False})
    port = receiver.base_url.rsplit(":", 1)[1]
    async with open_sender(guarded) as strict:
        for url in (receiver.url("a"), f"http://2130706433:{port}/hook/a", "file:///etc/passwd"):
            with pytest.raises(Reject, match="SSRF guard"):
                await strict.post(url, BODY, {})
    assert receiver.requests == []


async def test_a_refused_connection_is_retried(sender: Sender) -> None:
    with pytest.raises(RetryLater, match="Connect"):
        await sender.post("http://127.0.0.1:9/hook", BODY, {})


async def test_a_huge_answer_is_read_only_up_to_the_bound(sender: Sender) -> None:
    """A receiver streaming megabytes back costs at most MAX_RESPONSE_BYTES of reading."""

    async def huge(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(status=200)
        await response.prepare(request)
        for _ in range(64):
            await response.write(b"x" * 65536)
        return response

    app = web.Application()
    app.router.add_post("/", huge)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        answer = await sender.post(f"http://127.0.0.1:{port}/", BODY, {})
    finally:
        await runner.cleanup()
    assert len(answer.body) == MAX_RESPONSE_BYTES
