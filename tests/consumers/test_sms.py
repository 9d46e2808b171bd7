"""The SMS channel end to end: emit -> the real ``sms`` dispatcher -> a Twilio-shaped receiver."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import SecretStr

from bookgen_events.app.verify import check_sms
from bookgen_events.bus import EventBus
from bookgen_events.dlq import DeadLetters
from bookgen_events.events import Event
from bookgen_events.schedule import Scheduled
from bookgen_events.service import NotificationService
from bookgen_events.settings import Settings
from bookgen_events.subscribers import SubscriberRegistry
from consumers.logger import NotificationLogger
from consumers.sms import serve
from tests.support.database import rows
from tests.support.outcomes import dead_letters, outcomes
from tests.support.twilio import FROM, SERVICE_SID, SID, TOKEN, Answer, TwilioReceiver
from tests.support.waits import eventually

P1, P2, P3 = "+33612345678", "+447700900123", "+15551230001"


@pytest.fixture
def sms_settings(settings: Settings, twilio: TwilioReceiver) -> Settings:
    """SMS on, pointed at the local receiver (loopback allowed), no rate limits, fast retries."""
    return settings.model_copy(
        update={
            "sms_enabled": True,
            "twilio_account_sid": SID,
            "twilio_auth_token": SecretStr(TOKEN),
            "twilio_from": FROM,
            "twilio_api_base": twilio.base_url,
            "webhook_allow_private": True,
            "webhook_timeout": 2.0,
            "sms_rate_limit_per_minute": 0,
            "sms_rate_limit_per_hour": 0,
            "shutdown_grace_s": 2.0,
        }
    )


@contextlib.asynccontextmanager
async def dispatching(bus: EventBus, settings: Settings, **overrides: Any) -> AsyncIterator[None]:
    """The real ``sms`` worker (its ``serve``) running until the block ends."""
    await bus.ensure_group("sms")
    stop = asyncio.Event()
    task = asyncio.create_task(serve(bus, settings, stop, **overrides))
    try:
        yield
    finally:
        stop.set()
        await task


async def settled(bus: EventBus, event_ids: set[str], count: int) -> list[Any]:
    """Wait until ``count`` final SMS outcomes of these events are recorded; return them."""

    async def final() -> list[Any]:
        found = [
            o
            for o in await outcomes(bus)
            if o.channel == "sms" and o.final and o.event_id in event_ids
        ]
        return found if len(found) >= count else []

    return await eventually(final, 10, f"{count} settled SMS deliveries")


async def test_event_phones_and_subscriber_phone_each_get_one_text(
    bus: EventBus, sms_settings: Settings, twilio: TwilioReceiver
) -> None:
    """A completion reaches the phone given with it and its user's stored phone, each once,
    with Basic auth, From and a one-segment body; types outside SMS_TYPES send nothing."""
    registry = SubscriberRegistry.for_prefix(bus.redis, sms_settings.stream_prefix)
    await registry.put("u1", {"phone": P2})
    service = NotificationService(bus, settings=sms_settings)
    async with dispatching(bus, sms_settings):
        skipped = [
            await service.send_progress_update("42", 50, user_id="u1", user_phone=P1),
            await service.send_error_alert("42", "disk full", "error", user_phone=P1),
        ]
        await service.send_completion_notification(
            "42", 7, "Ada Lovelace", user_id="u1", user_phone=P1
        )
        await service.send_error_alert("43", "GPU melted", "critical", user_phone=P3)
        await eventually(lambda: len(twilio.messages) >= 3, 10, "three texts")
    texts = {m.to: m for m in twilio.messages}
    assert sorted(twilio.attempts) == sorted([P1, P2, P3]) and twilio.unauthorized == 0
    assert texts[P1].body == "BookGen: Ada Lovelace's biography is ready (job 42)."
    assert texts[P2].body == texts[P1].body and texts[P1].sender == FROM
    assert texts[P3].body == "BookGen CRITICAL: job 43 failed: GPU melted"
    recorded = [o for o in await outcomes(bus) if o.channel == "sms"]
    assert sorted((o.recipient, o.status, o.status_code) for o in recorded) == sorted(
        [(P1, "delivered", 201), (P2, "delivered", 201), (P3, "delivered", 201)]
    )
    assert skipped[0] != skipped[1] and len({o.event_id for o in recorded}) == 2


async def test_preferences_choose_and_an_opt_out_is_suppressed(
    bus: EventBus, sms_settings: Settings, twilio: TwilioReceiver
) -> None:
    """A subscriber who takes only error alerts by SMS gets no completion text, not even at
    the phone the event names: that delivery is recorded as suppressed, with the reason."""
    registry = SubscriberRegistry.for_prefix(bus.redis, sms_settings.stream_prefix)
    await registry.put("u1", {"phone": P1, "preferences": {"sms": {"types": ["error_alert"]}}})
    await registry.put("u2", {"phone": P2, "preferences": {"sms": {"enabled": False}}})
    events = [
        Event(type="completion", user_id="u1", job_id="1", data={}, phones=[P1, P3]),
        Event(type="completion", user_id="u2", job_id="2", data={}),
        Event(type="error_alert", user_id="u1", job_id="3", data={"error": "x", "severity": "critical"}),
    ]  # fmt: skip
    async with dispatching(bus, sms_settings):
        await bus.emit_many(events)
        found = await settled(bus, {e.id for e in events}, 3)
    by = {(o.event_id, o.recipient): o for o in found}
    assert by[(events[0].id, P1)].status == "suppressed"
    assert "opted out" in by[(events[0].id, P1)].error
    assert by[(events[0].id, P3)].status == "delivered"
    assert by[(events[2].id, P1)].status == "delivered"
    assert len(found) == 3  # u2 (SMS off) is owed nothing
    assert sorted(twilio.attempts) == sorted([P3, P1])
    # The notifications log shows each, channel sms, the suppressed one with its reason.
    logger = NotificationLogger.from_settings(bus, sms_settings)
    await logger.start()
    while await logger.poll_once():
        pass
    logged = {
        (r.recipient, r.status) for r in rows(sms_settings.database_url, delivery_method="sms")
    }
    assert logged == {(P1, "suppressed"), (P3, "delivered"), (P1, "delivered")}


async def test_quiet_hours_hold_a_text_but_never_a_critical_alert(
    bus: EventBus, sms_settings: Settings, twilio: TwilioReceiver
) -> None:
    """In the phone owner's quiet hours a completion waits as a scheduled delivery due when
    they end (even at a phone the event names); a critical alert is texted at once."""
    now = datetime.now(UTC)
    quiet = {
        "start": f"{now - timedelta(hours=1):%H:%M}",
        "end": f"{now + timedelta(hours=1):%H:%M}",
    }
    registry = SubscriberRegistry.for_prefix(bus.redis, sms_settings.stream_prefix)
    await registry.put("u1", {"phone": P1, "quiet_hours": quiet})
    done = Event(type="completion", job_id="1", data={}, phones=[P1])
    alert = Event(
        type="error_alert", job_id="1", user_id="u1", data={"error": "x", "severity": "critical"}
    )
    held_key = bus.names.scheduled("sms")
    async with dispatching(bus, sms_settings):
        await bus.emit_many([done, alert])
        await eventually(lambda: twilio.messages, 10, "the critical alert")
        [(member, due_ms)] = await eventually(
            lambda: bus.redis.zrange(held_key, 0, -1, withscores=True), 10, "the held text"
        )
    assert [m.body for m in twilio.messages] == ["BookGen CRITICAL: job 1 failed: x"]
    held = Scheduled.loads(member)
    assert (held.origin, held.recipient) == ("quiet", P1) and due_ms > now.timestamp() * 1000
    assert [o.event_id for o in await outcomes(bus)] == [alert.id]  # the other still scheduled


async def test_invalid_number_is_final_and_redrive_delivers(
    bus: EventBus, sms_settings: Settings, twilio: TwilioReceiver
) -> None:
    """Twilio 21211 dead-letters at the first attempt with Twilio's words; a redrive once the
    number is fixed on Twilio's side delivers it."""
    twilio.refuse(P1, 21211)
    event = Event(type="completion", job_id="9", data={}, phones=[P1])
    async with dispatching(bus, sms_settings):
        await bus.emit(event)
        letters = await eventually(lambda: dead_letters(bus, "sms"), 10, "a dead letter")
        assert letters[0].attempts == 1 and letters[0].recipient == P1
        assert "21211" in letters[0].reason and "invalid 'To' number" in letters[0].reason
        twilio.accept(P1)
        redriven, poison = await DeadLetters(bus.redis, bus.names).redrive("sms")
        assert (redriven, poison) == (1, [])
        await eventually(lambda: twilio.to(P1), 10, "the redriven text")
    assert [a for a in twilio.attempts if a == P1] == [P1, P1]


async def test_unsubscribed_recipient_turns_the_subscribers_sms_off(
    bus: EventBus, sms_settings: Settings, twilio: TwilioReceiver
) -> None:
    """Twilio 21610 (the recipient replied STOP) is final and turns that subscriber's SMS off,
    on the audit trail; their next event is suppressed without asking Twilio."""
    registry = SubscriberRegistry.for_prefix(bus.redis, sms_settings.stream_prefix)
    await registry.put("u1", {"phone": P1, "email": "ada@example.com"})
    twilio.refuse(P1, 21610)
    first = Event(type="completion", user_id="u1", job_id="1", data={})
    async with dispatching(bus, sms_settings):
        await bus.emit(first)
        letters = await eventually(lambda: dead_letters(bus, "sms"), 10, "a dead letter")
        assert "21610" in letters[0].reason and letters[0].attempts == 1

        async def sms_off() -> bool:
            return not (await registry.get("u1")).preferences["sms"].enabled

        await eventually(sms_off, 5, "the subscriber's SMS turned off")
        change = (await registry.store.changes(1))[0]
        assert change["record_id"] == "u1" and "preferences.sms.enabled" in change["fields"]
        # The dispatcher's view follows the change within its poll; from then on, nobody is
        # texted at that phone, even when an event names it.

        async def next_is_suppressed() -> bool:
            event = Event(type="completion", user_id="u1", job_id="2", data={}, phones=[P1])
            await bus.emit(event)
            outcome = (await settled(bus, {event.id}, 1))[0]
            return outcome.status == "suppressed" and "opted out" in outcome.error

        await eventually(next_is_suppressed, 5, "a suppressed outcome", step=0.1)
    assert (await registry.get("u1")).email == "ada@example.com"  # the rest untouched


async def test_throttled_then_delivered_and_rate_limited_per_phone(
    bus: EventBus, sms_settings: Settings, twilio: TwilioReceiver
) -> None:
    """429 is retried (Retry-After honoured) and then delivered; past SMS_RATE_LIMIT_PER_MINUTE
    a phone's texts are rate_limited, not sent."""
    twilio.script(P1, Answer(status=429, retry_after="0"), Answer(code=20429, status=503))
    limited = sms_settings.model_copy(update={"sms_rate_limit_per_minute": 2})
    events = [Event(type="completion", job_id=str(i), data={}, phones=[P1]) for i in range(3)]
    async with dispatching(bus, limited, concurrency=1):
        for event in events:
            await bus.emit(event)
        found = await settled(bus, {e.id for e in events}, 3)
    statuses = sorted(o.status for o in found)
    assert statuses == ["delivered", "delivered", "rate_limited"]
    failed = [o for o in await outcomes(bus) if o.status == "failed"]
    assert [o.status_code for o in failed] == [429, 503] and not any(o.final for o in failed)
    assert "20429" in failed[1].error
    assert len(twilio.messages) == 2


async def test_ssrf_guard_refuses_a_private_api_base(
    bus: EventBus, sms_settings: Settings, twilio: TwilioReceiver
) -> None:
    """Without WEBHOOK_ALLOW_PRIVATE, a TWILIO_API_BASE on loopback is refused, as an address
    and as a name resolving there: dead-lettered, nothing sent."""
    port = twilio.base_url.rsplit(":", 1)[1]
    events = []
    for base in (twilio.base_url, f"http://localhost:{port}"):
        guarded = sms_settings.model_copy(
            update={"webhook_allow_private": False, "twilio_api_base": base}
        )
        event = Event(type="completion", job_id="1", data={}, phones=[P1])
        events.append(event)
        async with dispatching(bus, guarded):
            await bus.emit(event)
            await settled(bus, {event.id}, 1)
    letters = await dead_letters(bus, "sms")
    assert len(letters) == 2 and all("SSRF guard" in letter.reason for letter in letters)
    assert twilio.attempts == [] and twilio.unauthorized == 0


async def test_wrong_token_is_refused_and_never_shown(
    bus: EventBus, sms_settings: Settings, twilio: TwilioReceiver
) -> None:
    """Bad credentials: Twilio's 401 dead-letters naming the variables to check, and the
    token is in no record; a messaging service replaces From when set."""
    wrong = sms_settings.model_copy(update={"twilio_auth_token": SecretStr("wrong-token-xyz")})
    event = Event(type="completion", job_id="1", data={}, phones=[P1])
    async with dispatching(bus, wrong):
        await bus.emit(event)
        await settled(bus, {event.id}, 1)
    letter = (await dead_letters(bus, "sms"))[0]
    assert "20003" in letter.reason and "TWILIO_AUTH_TOKEN" in letter.reason
    assert twilio.unauthorized == 1
    raw = str(await bus.redis.xrange(bus.names.deliveries)) + str(letter)
    assert "wrong-token-xyz" not in raw and TOKEN not in raw

    service = sms_settings.model_copy(
        update={"twilio_from": None, "twilio_messaging_service_sid": SERVICE_SID}
    )
    async with dispatching(bus, service):
        await bus.emit(Event(type="completion", job_id="2", data={}, phones=[P2]))
        await eventually(lambda: twilio.messages, 10, "a text")
    assert twilio.messages[0].service == SERVICE_SID and twilio.messages[0].sender is None


async def test_verify_checks_the_twilio_credentials(
    sms_settings: Settings, twilio: TwilioReceiver
) -> None:
    """verify fetches the account with the credentials: ok, one clear line when refused,
    skipped when SMS is off; no message is sent."""
    ok = await check_sms(sms_settings)
    assert ok.ok and SID in ok.detail
    bad = await check_sms(
        sms_settings.model_copy(update={"twilio_auth_token": SecretStr("nope-nope")})
    )
    assert not bad.ok and "20003" in bad.detail and "\n" not in bad.detail
    assert "nope-nope" not in bad.detail
    missing = await check_sms(sms_settings.model_copy(update={"twilio_from": None}))
    assert not missing.ok and "TWILIO_FROM" in missing.detail
    off = await check_sms(sms_settings.model_copy(update={"sms_enabled": False}))
    assert off.skipped
    assert twilio.messages == [] and twilio.unauthorized == 1
