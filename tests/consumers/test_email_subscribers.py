"""Subscribers on the email channel, end to end: the real dispatcher (``emails.serve``, which
keeps the subscriber view current), a real aiosmtpd server, a real gateway for the one-click
unsubscribe (RFC 8058) that a mail client would POST."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from email.message import EmailMessage
from zoneinfo import ZoneInfo

import httpx
from pydantic import SecretStr

from bookgen_events import EventBus, Settings
from bookgen_events.events import EventType
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
