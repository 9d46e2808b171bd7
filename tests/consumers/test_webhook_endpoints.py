"""Routing to registered endpoints (SPEC 9) through the real dispatcher and a real receiver,
each delivery verified by the Standard Webhooks reference library with that endpoint's secret."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from standardwebhooks.webhooks import Webhook

from bookgen_events import EventBus, Settings
from bookgen_events.endpoints import EndpointRegistry, endpoint_recipient, split_recipient
from bookgen_events.events import decode
from bookgen_events.ops import endpoint_attempts, recover_endpoint
from bookgen_events.replay import replay
from consumers.logrows import outcome_row
from consumers.webhook import serve
from tests.support.outcomes import dead_letters, final_outcomes
from tests.support.waits import eventually
from tests.support.webhooks import SECRET, Receiver, Reply


def completion(job_id: str, url: str | None = None) -> dict:
    return {
        "type": "completion",
        "job_id": job_id,
        "data": {"biography_id": 7, "character_name": "Ada Lovelace", "status": "completed"},
        "webhook_url": url,
    }


@pytest.fixture
def registry(bus: EventBus) -> EndpointRegistry:
    return EndpointRegistry.for_prefix(bus.redis, bus.names.prefix)


Start = Callable[[], Awaitable[None]]
#: A change reaches a running dispatcher through a blocking XREAD on the registry's change
#: stream, within milliseconds; this leaves room for a loaded box.
SEEN = 0.3


@pytest.fixture
async def start_dispatcher(bus: EventBus, webhook_settings: Settings) -> AsyncIterator[Start]:
    """``consume webhook`` as it runs in production: the channel and the endpoint index,
    which loads every endpoint registered before it starts."""
    stop = asyncio.Event()
    tasks: list[asyncio.Task[None]] = []

    async def start() -> None:
        tasks.append(asyncio.create_task(serve(bus, webhook_settings, stop)))

    try:
        yield start
    finally:
        stop.set()
        await asyncio.gather(*tasks)


def verified(secret: str, request) -> dict:  # type: ignore[no-untyped-def]
    return Webhook(secret).verify(request.body, request.headers)  # type: ignore[no-any-return]


async def test_each_matching_endpoint_gets_its_own_signed_delivery(
    bus: EventBus, registry: EndpointRegistry, receiver: Receiver, start_dispatcher: Start
) -> None:
    """One event: its own webhook_url and every enabled, matching endpoint, each signed with
    its own secret; filtered-out and disabled endpoints get nothing."""
    everything = await registry.create({"url": receiver.url("all"), "headers": {"X-Team": "books"}})
    completed = await registry.create(
        {"url": receiver.url("done"), "event_types": ["job.completed"]}
    )
    await registry.create({"url": receiver.url("other"), "job_ids": ["other-job"]})
    await registry.create({"url": receiver.url("off"), "disabled": True})
    await registry.create({"url": receiver.url("progress"), "event_types": ["job.progress"]})
    await start_dispatcher()

    await bus.emit(completion("1", receiver.url("own")))
    finals = await final_outcomes(bus, 3)
    assert {o.status for o in finals} == {"delivered"}

    assert verified(everything.secret, receiver.at("all")[0])["event"] == "job.completed"
    assert receiver.at("all")[0].headers["x-team"] == "books"
    assert verified(completed.secret, receiver.at("done")[0])["biography_id"] == 7
    assert verified(SECRET, receiver.at("own")[0])["job_id"] == "1"
    with pytest.raises(Exception):  # noqa: B017 - the verifier's own error type
        verified(SECRET, receiver.at("all")[0])  # not the global secret: its own
    assert receiver.at("other") == receiver.at("off") == receiver.at("progress") == []

    rows = {split_recipient(o.recipient): outcome_row(o) for o in finals}
    row = rows[(everything.id, receiver.url("all"))]
    assert row["recipient"] == receiver.url("all")
    assert row["notification_metadata"]["endpoint_id"] == everything.id


async def test_a_change_reaches_a_running_dispatcher_and_rotation_signs_with_both(
    bus: EventBus, registry: EndpointRegistry, receiver: Receiver, start_dispatcher: Start
) -> None:
    """An endpoint added after the dispatcher started receives within 2 s, no restart; after a
    rotation, each delivery verifies with the new secret and, in the grace window, the old."""
    await start_dispatcher()
    added = await registry.create({"url": receiver.url("late")})
    started = time.monotonic()

    async def delivered() -> bool:
        await bus.emit(completion(f"j{time.monotonic_ns()}"))
        await asyncio.sleep(0.1)
        return bool(receiver.at("late"))

    await eventually(delivered, 5, "a delivery to the new endpoint")
    assert time.monotonic() - started < 2.5
    rotated = await registry.rotate_secret(added.id, grace_s=60)
    await asyncio.sleep(SEEN)
    before = len(receiver.at("late"))
    await bus.emit(completion("after-rotation"))
    await eventually(lambda: len(receiver.at("late")) > before, 10, "a delivery after rotation")
    (last,) = [r for r in receiver.at("late") if json.loads(r.body)["job_id"] == "after-rotation"]
    assert verified(rotated.secret, last)["job_id"] == "after-rotation"
    assert verified(added.secret, last)["job_id"] == "after-rotation"  # the grace window


async def test_a_retry_due_to_an_endpoint_disabled_meanwhile_is_dead_lettered(
    bus: EventBus, registry: EndpointRegistry, receiver: Receiver, start_dispatcher: Start
) -> None:
    """The retry of an endpoint disabled since its first attempt is not sent: it is
    dead-lettered with the reason (and ``recover`` can send it once re-enabled)."""
    receiver.script("flaky", [Reply(503, {"Retry-After": "2"})])
    endpoint = await registry.create({"url": receiver.url("flaky")})
    await start_dispatcher()
    await bus.emit(completion("x"))
    await eventually(lambda: len(receiver.at("flaky")) == 1, 10, "the first attempt")
    await registry.disable(endpoint.id, "receiver decommissioned")
    (final,) = await final_outcomes(bus, 1, within=15)
    assert (final.status, final.attempt) == ("failed", 2)
    (letter,) = await dead_letters(bus)
    assert "disabled" in letter.reason and "receiver decommissioned" in letter.reason
    assert len(receiver.at("flaky")) == 1  # the retry never went out

    attempts = await endpoint_attempts(bus, endpoint.id)
    assert [(a["attempt"], a["status"], a["status_code"]) for a in attempts] == [
        (2, "failed", None), (1, "failed", 503),
    ]  # fmt: skip
    await registry.update(endpoint.id, {"disabled": False})
    await asyncio.sleep(SEEN)
    assert await recover_endpoint(bus, endpoint.id, since_ms=letter.at_ms + 1) == (0, 0)
    assert await recover_endpoint(bus, endpoint.id, since_ms=letter.at_ms) == (1, 0)
    await eventually(lambda: len(receiver.at("flaky")) == 2, 10, "the recovered delivery")
    assert await dead_letters(bus) == []


async def test_replay_to_one_endpoint_redelivers_only_what_it_wants(
    bus: EventBus, registry: EndpointRegistry, receiver: Receiver, start_dispatcher: Start
) -> None:
    """``replay webhook --endpoint ID``: that endpoint alone, only the events its filters want."""
    target = await registry.create({"url": receiver.url("t"), "job_ids": ["1"]})
    await registry.create({"url": receiver.url("bystander")})
    await start_dispatcher()
    first = await bus.emit(completion("1"))
    await bus.emit(completion("2"))
    await final_outcomes(bus, 3)
    recipient = endpoint_recipient(target)
    result = await replay(
        bus, "webhook", first, recipients=lambda e: [recipient] if target.wants(e) else [],
        only=recipient,
    )  # fmt: skip
    assert (result.matched, result.no_recipient) == (1, 1)
    await eventually(lambda: len(receiver.at("t")) == 2, 10, "the replayed delivery")
    assert len(receiver.at("bystander")) == 2  # its two first deliveries, nothing replayed
    assert {r.webhook_id for r in receiver.at("t")} == {receiver.at("t")[0].webhook_id}


async def test_an_endpoint_that_only_fails_is_disabled_and_operators_are_told(
    bus: EventBus, registry: EndpointRegistry, receiver: Receiver, webhook_settings: Settings
) -> None:
    """Past ENDPOINT_DISABLE_AFTER of nothing but failures (and at least the minimum count),
    the endpoint is disabled with the reason and an admin_alert is emitted; a healthy
    endpoint beside it is untouched; re-enabling starts a new window."""
    settings = webhook_settings.model_copy(
        update={"endpoint_disable_after": 0.3, "endpoint_disable_min_failures": 3,
                "admin_emails": ["ops@example.com"]}
    )  # fmt: skip
    receiver.script("down", [], then=Reply(500))
    failing = await registry.create({"url": receiver.url("down"), "event_types": ["job.completed"]})
    healthy = await registry.create({"url": receiver.url("up"), "event_types": ["job.completed"]})
    stop = asyncio.Event()
    task = asyncio.create_task(serve(bus, settings, stop))
    try:
        await bus.emit(completion("1"))

        async def disabled() -> bool:
            return (await registry.get(failing.id)).disabled

        await eventually(disabled, 15, "the failing endpoint to be disabled")
        reason = (await registry.get(failing.id)).disabled_reason or ""
        assert "every delivery failed" in reason and "HTTP 500" in reason
        assert not (await registry.get(healthy.id)).disabled

        alerts = [decode(f) for _, f in await bus.range() if decode(f).type == "admin_alert"]
        (alert,) = alerts
        assert alert.data.alert_type == "endpoint_disabled"  # type: ignore[union-attr]
        assert alert.data.metadata["endpoint_id"] == failing.id  # type: ignore[union-attr]
        assert alert.data.metadata["url"] == receiver.url("down")  # type: ignore[union-attr]
        assert alert.emails == ["ops@example.com"]
        assert (await registry.changes())[0]["op"] == "disabled"
    finally:
        stop.set()
        await task
    health = await bus.redis.hget(bus.names.endpoint_health, failing.id)
    assert health is None  # the window closed with the disabling: re-enabling starts afresh
