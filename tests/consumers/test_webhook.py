"""The webhook dispatcher end to end: real consumer loop, real Redis, real uvicorn receiver."""

from __future__ import annotations

import email.utils
import time

from pydantic import SecretStr
from standardwebhooks.webhooks import Webhook

from bookgen_events.bus import EventBus
from bookgen_events.events import Event
from bookgen_events.settings import Settings
from consumers.signing import new_secret
from tests.support.outcomes import dead_letters, final_outcomes, outcomes
from tests.support.waits import eventually
from tests.support.webhooks import SECRET, Receiver, Reply, running


def _progress(url: str, job_id: str = "1") -> Event:
    return Event(
        type="progress_update", job_id=job_id, data={"progress": 10, "phase": "p"}, webhook_url=url
    )


async def test_every_type_arrives_signed_and_verifies(
    bus: EventBus, webhook_settings: Settings, receiver: Receiver
) -> None:
    """Each notification type arrives once, in the seed's shape, verified by standardwebhooks."""
    url = receiver.url("a")
    events = [
        _progress(url),
        Event(type="completion", job_id="123", data={"biography_id": 456}, webhook_url=url),
        Event(type="error_alert", job_id="1", data={"error": "boom"}, webhook_url=url),
        Event(type="status_change", job_id="1", data={"new_status": "done"}, webhook_url=url),
        Event(type="admin_alert", data={"alert_type": "x", "message": "m"}, webhook_url=url),
    ]
    await bus.emit_many(events)
    async with running(bus, webhook_settings):
        settled = await final_outcomes(bus, len(events))

    assert {o.status for o in settled} == {"delivered"}
    assert {o.status_code for o in settled} == {200}
    verifier = Webhook(SECRET)
    got = {r.webhook_id: verifier.verify(r.body, r.headers) for r in receiver.at("a")}
    assert got.keys() == {e.id for e in events}
    assert {p["event"] for p in got.values()} == {
        "job.progress",
        "job.completed",
        "job.error",
        "job.status_changed",
        "admin.alert",
    }
    completed = next(p for p in got.values() if p["event"] == "job.completed")
    assert completed["biography_id"] == 456 and completed["status"] == "completed"
    assert receiver.at("a")[0].headers["content-type"] == "application/json"


async def test_rotated_secrets_both_verify(
    bus: EventBus, webhook_settings: Settings, receiver: Receiver
) -> None:
    """WEBHOOK_SECRET with old and new secrets: a receiver holding either one verifies."""
    old, new = SECRET, new_secret()
    settings = webhook_settings.model_copy(update={"webhook_secret": SecretStr(f"{old} {new}")})
    await bus.emit(_progress(receiver.url("a")))
    async with running(bus, settings):
        await final_outcomes(bus, 1)
    (request,) = receiver.at("a")
    assert len(request.headers["webhook-signature"].split(" ")) == 2
    for secret in (old, new):
        assert Webhook(secret).verify(request.body, request.headers)["event"] == "job.progress"


async def test_retries_then_success(
    bus: EventBus, webhook_settings: Settings, receiver: Receiver
) -> None:
    """Two 5xx answers, then 200: three attempts with the same webhook-id, then delivered."""
    receiver.script("flaky", [Reply(500), Reply(503)])
    event = _progress(receiver.url("flaky"))
    await bus.emit(event)
    async with running(bus, webhook_settings):
        await final_outcomes(bus, 1)

    assert [r.webhook_id for r in receiver.at("flaky")] == [event.id] * 3
    for request in receiver.at("flaky"):
        Webhook(SECRET).verify(request.body, request.headers)
    attempts = [(o.attempt, o.status, o.status_code, o.final) for o in await outcomes(bus)]
    assert attempts == [
        (1, "failed", 500, False),
        (2, "failed", 503, False),
        (3, "delivered", 200, True),
    ]
    assert await dead_letters(bus) == []


async def test_retries_exhausted_go_to_the_dead_letter_stream(
    bus: EventBus, webhook_settings: Settings, receiver: Receiver
) -> None:
    """Always 500: 1 + WEBHOOK_MAX_RETRIES attempts, then a dead letter naming the status."""
    receiver.script("down", [], then=Reply(500))
    event = _progress(receiver.url("down"))
    await bus.emit(event)
    async with running(bus, webhook_settings):
        (final,) = await final_outcomes(bus, 1)

    assert len(receiver.at("down")) == 4
    assert (final.status, final.attempt, final.status_code) == ("failed", 4, 500)
    (letter,) = await dead_letters(bus)
    assert letter.event_id == event.id and letter.attempts == 4
    assert "HTTP 500" in letter.reason and letter.recipient == receiver.url("down")


async def test_retry_after_is_honoured(
    bus: EventBus, webhook_settings: Settings, receiver: Receiver
) -> None:
    """429 with Retry-After seconds and 503 with an HTTP date delay the retry past the schedule."""
    receiver.script("busy", [Reply(429, {"retry-after": "1"})])
    date = email.utils.formatdate(time.time() + 2, usegmt=True)
    receiver.script("maint", [Reply(503, {"retry-after": date})])
    await bus.emit_many([_progress(receiver.url("busy")), _progress(receiver.url("maint"))])
    async with running(bus, webhook_settings):
        settled = await final_outcomes(bus, 2)

    assert {o.status for o in settled} == {"delivered"}
    for endpoint in ("busy", "maint"):
        first, second = receiver.at(endpoint)
        # The schedule alone would retry after 100 ms +- 20 %.
        assert second.at - first.at >= 0.9, endpoint


async def test_gone_and_other_4xx_are_final(
    bus: EventBus, webhook_settings: Settings, receiver: Receiver
) -> None:
    """410 Gone and 400 are dead-lettered after one attempt, with the status in the reason."""
    receiver.script("gone", [], then=Reply(410))
    receiver.script("bad", [], then=Reply(400))
    await bus.emit_many([_progress(receiver.url("gone")), _progress(receiver.url("bad"))])
    async with running(bus, webhook_settings):
        settled = await final_outcomes(bus, 2)

    assert sorted((o.attempt, o.status_code) for o in settled) == [(1, 400), (1, 410)]
    assert len(receiver.at("gone")) == len(receiver.at("bad")) == 1
    reasons = sorted(letter.reason for letter in await dead_letters(bus))
    assert reasons[0].startswith("HTTP 400") and reasons[1].startswith("HTTP 410 Gone")


async def test_redirects_are_failures_and_not_followed(
    bus: EventBus, webhook_settings: Settings, receiver: Receiver
) -> None:
    """A 302 is retried like a failure and dead-lettered; its Location is never requested."""
    receiver.script("moved", [], then=Reply(302, {"location": receiver.url("elsewhere")}))
    await bus.emit(_progress(receiver.url("moved")))
    async with running(bus, webhook_settings):
        (final,) = await final_outcomes(bus, 1)

    assert (final.status, final.status_code, final.attempt) == ("failed", 302, 4)
    assert len(receiver.at("moved")) == 4 and receiver.at("elsewhere") == []
    (letter,) = await dead_letters(bus)
    assert "redirects are not followed" in letter.reason


async def test_slow_endpoint_does_not_block_healthy_ones(
    bus: EventBus, webhook_settings: Settings, receiver: Receiver
) -> None:
    """An endpoint hanging past WEBHOOK_TIMEOUT keeps retrying while 50 events reach a healthy one.

    The slow events are first in the stream and the consumer has only 8 slots: all 50 healthy
    deliveries still land before the slow ones' first attempts have even timed out.
    """
    settings = webhook_settings.model_copy(
        update={
            "webhook_timeout": 2.0,
            "webhook_retry_schedule": (1.0, 30.0),
            # A leased retry must outlive one attempt, or it is leased (and sent) twice.
            "claim_idle_ms": 5000,
        }
    )
    receiver.script("slow", [], then=Reply(delay=10))
    slow = [_progress(receiver.url("slow"), f"s{i}") for i in range(3)]
    healthy = [_progress(receiver.url("ok"), f"h{i}") for i in range(50)]
    await bus.emit_many(slow + healthy)
    started = time.monotonic()
    async with running(bus, settings, concurrency=8):
        await eventually(lambda: len(receiver.at("ok")) == 50, 10, "50 healthy deliveries")
        healthy_done = time.monotonic()

        async def slow_retried_twice() -> bool:
            return len([o for o in await outcomes(bus) if o.attempt == 2]) == len(slow)

        # Stop between retries: the next one is due 30 s later, so nothing is in flight.
        await eventually(slow_retried_twice, 15, "second attempts of the slow deliveries")

    assert healthy_done - started < settings.webhook_timeout
    assert {r.webhook_id for r in receiver.at("ok")} == {e.id for e in healthy}
    assert len(receiver.at("slow")) == 2 * len(slow)
    slow_ids = {e.id for e in slow}
    slow_outcomes = [o for o in await outcomes(bus) if o.event_id in slow_ids]
    assert len(slow_outcomes) == 2 * len(slow)
    assert all(o.status == "failed" and not o.final for o in slow_outcomes)
    assert all("timed out" in o.error for o in slow_outcomes)


async def test_rate_limit_per_url_skips_the_request(
    bus: EventBus, webhook_settings: Settings, receiver: Receiver
) -> None:
    """Over the per-URL limit: rate_limited outcomes and no HTTP request; other URLs unaffected."""
    settings = webhook_settings.model_copy(update={"webhook_rate_limit_per_minute": 3})
    busy = [_progress(receiver.url("busy"), str(i)) for i in range(6)]
    other = [_progress(receiver.url("other"), str(i)) for i in range(2)]
    await bus.emit_many(busy + other)
    async with running(bus, settings):
        settled = await final_outcomes(bus, 8)

    assert len(receiver.at("busy")) == 3 and len(receiver.at("other")) == 2
    limited = [o for o in settled if o.status == "rate_limited"]
    assert len(limited) == 3
    assert {o.recipient for o in limited} == {receiver.url("busy")}
    sent = {r.webhook_id for r in receiver.at("busy")}
    assert sent.isdisjoint(o.event_id for o in limited)
