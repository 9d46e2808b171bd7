"""Subscribers on the email channel, end to end: the real dispatcher (``emails.serve``, which
keeps the subscriber view current), a real aiosmtpd server, a real gateway for the one-click
unsubscribe (RFC 8058) that a mail client would POST."""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from email.message import EmailMessage
from zoneinfo import ZoneInfo

import httpx
from pydantic import SecretStr

from bookgen_events import EventBus, Settings
from bookgen_events.digests import DigestWindows
from bookgen_events.events import WIRE_FIELD, Event, EventType, decode
from bookgen_events.schedule import Scheduled
from bookgen_events.service import EventFactory
from bookgen_events.subscribers import SubscriberRegistry
from consumers import emails
from tests.support.gateway import StartGateway
from tests.support.outcomes import outcomes
from tests.support.smtp import SmtpServer
from tests.support.waits import eventually

from .test_email_dispatch import email_settings

FACTORY = EventFactory()
SECRET = "unsubscribe-secret-0123456789abcdef"
_LINK = re.compile(r"https?://[^\s\"<>]+/unsubscribe\?token=[A-Za-z0-9._-]+")


@contextlib.asynccontextmanager
async def dispatching(bus: EventBus, settings: Settings) -> AsyncIterator[None]:
    stop = asyncio.Event()
    task = asyncio.create_task(emails.serve(bus, settings, stop))
    try:
        yield
    finally:
        stop.set()
        await task


def parts(message: EmailMessage) -> tuple[str, str]:
    text = message.get_body(("plain",))
    html = message.get_body(("html",))
    assert text is not None and html is not None
    return text.get_content(), html.get_content()


async def test_subscriber_routing_one_click_unsubscribe_and_suppression(
    bus: EventBus,
    settings: Settings,
    gateway_settings: Settings,
    smtp_server: SmtpServer,
    start_gateway: StartGateway,
) -> None:
    """Ada's profile routes a completion to her address (no address in the event); the mail
    carries List-Unsubscribe(-Post) and the same link in both parts; the mail client's POST
    turns completions off; from then on her address is suppressed (logged, with the reason)
    even when an event names it, while a colleague on the same event still gets it."""
    gateway = await start_gateway(
        gateway_settings.model_copy(update={"unsubscribe_secret": SecretStr(SECRET)})
    )
    settings = email_settings(
        settings, smtp_server.port,
        unsubscribe_secret=SecretStr(SECRET), public_url=gateway.http,
    )  # fmt: skip
    registry = SubscriberRegistry.for_prefix(bus.redis, bus.names.prefix)
    await registry.put("ada", {"email": "ada@example.com"})
    received = smtp_server.handler.received

    async with dispatching(bus, settings):
        first = FACTORY.completion("j1", 1, "Marie Curie", user_id="ada")
        await bus.emit(first)
        await eventually(lambda: len(received) == 1)
        message = received[0].message()
        assert received[0].rcpt_tos == ["ada@example.com"]
        header = message["List-Unsubscribe"]
        assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        url = header.strip("<>")
        assert _LINK.fullmatch(url) and url.startswith(gateway.http)
        text, html = parts(message)
        assert url in text and url in html

        async with httpx.AsyncClient() as client:  # what a mail client sends (RFC 8058)
            answer = await client.post(
                url, content=b"List-Unsubscribe=One-Click",
                headers={"Content-Type": "application/x-www-form-urlencoded"},
            )  # fmt: skip
        assert answer.status_code == 200
        assert not (await registry.get("ada")).wants("email", EventType.COMPLETION)

        # Changes reach every dispatcher within 2 s (SPEC 9); then her address is suppressed
        # however an event names it.
        await asyncio.sleep(2.0)
        second = FACTORY.completion("j2", 2, "Ada Lovelace", user_id="ada").model_copy(
            update={"emails": ["ADA@example.com", "colleague@example.com"]}
        )
        await bus.emit(second)

        async def second_accounted() -> bool:
            return len([o for o in await outcomes(bus) if o.event_id == second.id]) == 2

        await eventually(second_accounted)
        await eventually(lambda: len(received) == 2)

    assert received[1].rcpt_tos == ["colleague@example.com"]
    by_recipient = {o.recipient: o for o in await outcomes(bus) if o.event_id == second.id}
    suppressed = by_recipient["ADA@example.com"]
    assert suppressed.status == "suppressed" and suppressed.final
    assert "ada opted out of completion by email" in suppressed.error
    assert by_recipient["colleague@example.com"].status == "delivered"
    # A progress update still reaches her: only completions were turned off.
    assert (await registry.get("ada")).wants("email", EventType.PROGRESS_UPDATE)


async def test_quiet_hours_hold_mail_in_redis_and_never_a_critical_alert(
    bus: EventBus, settings: Settings, smtp_server: SmtpServer
) -> None:
    """In Ada's quiet hours (her zone, now inside them) a progress update waits in Redis as a
    scheduled delivery due when they end, across a dispatcher restart; a critical alert goes
    at once. When the hold comes due outside quiet hours, it is delivered."""
    settings = email_settings(settings, smtp_server.port)
    zone = ZoneInfo("Asia/Kolkata")
    local = datetime.now(zone)
    start, end = (local - timedelta(hours=1)), (local + timedelta(hours=1))
    registry = SubscriberRegistry.for_prefix(bus.redis, bus.names.prefix)
    await registry.put("ada", {
        "email": "ada@example.com",
        "quiet_hours": {"start": start.strftime("%H:%M"), "end": end.strftime("%H:%M"),
                        "tz": "Asia/Kolkata"},
    })  # fmt: skip
    update = FACTORY.progress_update("j1", 40.0, "writing", user_id="ada")
    alert = FACTORY.error_alert("j1", "GPU on fire", "critical", user_id="ada")
    received = smtp_server.handler.received
    held_key = bus.names.scheduled("email")

    async with dispatching(bus, settings):
        await bus.emit_many([update, alert])
        await eventually(lambda: len(received) == 1)
        held = await eventually(lambda: bus.redis.zrange(held_key, 0, -1, withscores=True))
    assert "critical" in received[0].message()["Subject"]
    [(member, due_ms)] = held
    assert Scheduled.loads(member).origin == "quiet"
    wanted = datetime.combine(end.date(), end.time().replace(second=0, microsecond=0), zone)
    assert due_ms == int(wanted.timestamp() * 1000)
    assert [o.event_id for o in await outcomes(bus)] == [alert.id]  # still scheduled

    # Later: her quiet hours are over (dropped here), the hold comes due; a new dispatcher.
    await registry.put("ada", {"email": "ada@example.com"})
    await bus.redis.zadd(held_key, {member: 0}, xx=True)
    async with dispatching(bus, settings):
        await eventually(lambda: len(received) == 2)
    assert received[1].message()["Subject"].startswith("Job j1")
    assert await bus.redis.zcard(held_key) == 0


async def test_a_digest_window_collects_a_jobs_updates_into_one_mail_across_a_restart(
    bus: EventBus, settings: Settings, smtp_server: SmtpServer
) -> None:
    """Ada digests progress updates: each job's updates wait in Redis until the window closes
    (closed here by moving its due time), then go as one mail, latest state first, every
    update accounted delivered. Her completion is not digested. One window's send was taken
    by a consumer killed right after (its items already inside the lease): it is sent too."""
    settings = email_settings(settings, smtp_server.port)
    registry = SubscriberRegistry.for_prefix(bus.redis, bus.names.prefix)
    await registry.put("ada", {"email": "ada@example.com", "digest": {"progress_update": "1h"}})
    job1 = [
        FACTORY.progress_update("j1", p, phase, user_id="ada")
        for p, phase in ((10.0, "research"), (50.0, "drafting"), (90.0, "editing"))
    ]
    job2 = FACTORY.progress_update("j2", 5.0, "research", user_id="ada")
    done = FACTORY.completion("j3", 7, "Ada Lovelace", user_id="ada")
    received = smtp_server.handler.received
    scheduled = bus.names.scheduled("email")

    async with dispatching(bus, settings):
        await bus.emit_many([*job1, job2, done])
        await eventually(lambda: len(received) == 1)  # the completion, at once
        sends = await eventually(lambda: _digest_sends(bus, scheduled, 2), what="two open windows")
    assert [o.event_id for o in await outcomes(bus)] == [done.id]  # the rest still scheduled
    assert all(abs(due / 1000 - time.time() - 3600) < 60 for _, due in sends)

    # A consumer leased job 2's send and took its items, then died.
    windows = DigestWindows(bus.redis, bus.names, "email")
    member2 = next(m for m, _ in sends if _event_of(m).id == job2.id)
    taken = await windows.take(member2, Scheduled.loads(member2))
    assert taken is not None and len(Scheduled.loads(taken).items) == 1
    assert not await bus.redis.exists(Scheduled.loads(member2).digest)

    # The windows close (time travel: due now); a new dispatcher sends them.
    for member in await bus.redis.zrange(scheduled, 0, -1):
        await bus.redis.zadd(scheduled, {member: 0}, xx=True)
    async with dispatching(bus, settings):
        await eventually(lambda: len(received) == 3)
        await eventually(lambda: _count_outcomes(bus, 5))
    digests = {r.message()["Subject"]: r.message() for r in received[1:]}
    assert set(digests) == {
        "Job j1: 3 progress updates, now 90%",
        "Job j2: 1 progress update, now 5%",
    }
    text, html = parts(digests["Job j1: 3 progress updates, now 90%"])
    assert text.index("90% — editing") < text.index("50% — drafting") < text.index("10%")
    assert "editing" in html
    final = [o for o in await outcomes(bus) if o.event_id != done.id]
    assert sorted(o.event_id for o in final) == sorted(e.id for e in [*job1, job2])
    assert {(o.status, o.recipient) for o in final} == {("delivered", "ada@example.com")}
    assert await bus.redis.zcard(scheduled) == 0


def _event_of(member: str) -> Event:
    return decode({WIRE_FIELD: Scheduled.loads(member).event})


async def _digest_sends(bus: EventBus, key: str, n: int) -> list[tuple[str, float]] | None:
    found = await bus.redis.zrange(key, 0, -1, withscores=True)
    sends = [(m, s) for m, s in found if Scheduled.loads(m).origin == "digest"]
    return sends if len(sends) == n else None


async def _count_outcomes(bus: EventBus, n: int) -> bool:
    return len(await outcomes(bus)) == n
