"""The email dispatcher end to end: real Redis, the real Consumer, a real aiosmtpd server."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from bookgen_events import EventBus, Settings
from bookgen_events.consumer import Consumer
from bookgen_events.service import EventFactory
from consumers import emails
from consumers.email_messages import Renderer
from consumers.emails import EmailChannel
from consumers.mailer import SMTPMailer
from tests.support.outcomes import dead_letters, outcomes
from tests.support.ports import free_port
from tests.support.smtp import SmtpServer
from tests.support.waits import eventually

FACTORY = EventFactory(admin_emails=["ops@bookgen.com"])


def email_settings(settings: Settings, port: int, **update: object) -> Settings:
    return settings.model_copy(
        update={
            "smtp_host": "127.0.0.1",
            "smtp_port": port,
            "smtp_use_tls": False,
            "smtp_timeout": 5.0,
            "from_email": "BookGen <noreply@bookgen.com>",
            **update,
        }
    )


@contextlib.asynccontextmanager
async def running(bus: EventBus, settings: Settings) -> AsyncIterator[SMTPMailer]:
    """The dispatcher's consumer loop in a task, stopped and its pool closed on exit."""
    mailer = SMTPMailer.from_settings(settings)
    channel = EmailChannel(mailer, Renderer(settings.from_email))
    consumer = Consumer.from_settings(bus, channel, settings)
    task = asyncio.create_task(consumer.run())
    try:
        yield mailer
    finally:
        consumer.stop()
        await task
        await mailer.aclose()


async def test_events_become_mail_to_every_recipient(
    bus: EventBus, settings: Settings, smtp_server: SmtpServer
) -> None:
    """A completion goes to the user; a critical error also to ADMIN_EMAILS; outcomes say 250."""
    settings = email_settings(settings, smtp_server.port)
    done = FACTORY.completion("123", 456, "Marie Curie", user_email="reader@example.com")
    failed = FACTORY.error_alert("124", "GPU on fire", "critical", user_email="reader@example.com")
    await bus.emit_many([done, failed])
    mailer = SMTPMailer.from_settings(settings)
    consumer = Consumer.from_settings(
        bus, EmailChannel(mailer, Renderer(settings.from_email)), settings
    )
    await consumer.run(burst=True)
    await mailer.aclose()

    got = {(r.rcpt_tos[0], r.message()["Subject"]) for r in smtp_server.handler.received}
    assert got == {
        ("reader@example.com", "Biography ready: Marie Curie"),
        ("reader@example.com", "[critical] Job 124 failed"),
        ("ops@bookgen.com", "[critical] Job 124 failed"),
    }
    assert all(r.message()["To"] == r.rcpt_tos[0] for r in smtp_server.handler.received)
    assert sorted(
        (o.event_id, o.recipient, o.status, o.status_code) for o in await outcomes(bus)
    ) == sorted(
        [
            (done.id, "reader@example.com", "delivered", 250),
            (failed.id, "reader@example.com", "delivered", 250),
            (failed.id, "ops@bookgen.com", "delivered", 250),
        ]
    )
    assert mailer.connections_opened <= settings.smtp_pool_size


async def test_serve_runs_the_dispatcher_until_stopped(
    bus: EventBus, settings: Settings, smtp_server: SmtpServer
) -> None:
    """``serve`` (what ``up`` and ``consume email`` run) delivers and returns once ``stop`` is set."""
    settings = email_settings(settings, smtp_server.port)
    stop = asyncio.Event()
    task = asyncio.create_task(emails.serve(bus, settings, stop))
    event = FACTORY.status_change("7", "queued", "running", user_email="reader@example.com")
    await bus.emit(event)
    await eventually(lambda: smtp_server.handler.received)
    stop.set()
    await asyncio.wait_for(task, 10)
    [got] = smtp_server.handler.received
    assert got.message()["Subject"] == "Job 7 status: queued → running"


async def test_server_down_then_up_retries_then_delivers(bus: EventBus, settings: Settings) -> None:
    """With no server, attempts fail and are rescheduled; once it is up the mail is delivered once."""
    port = free_port()
    settings = email_settings(settings, port, email_retry_schedule=(0.15,), email_max_retries=50)
    event = FACTORY.progress_update("9", 50, "Chapter 10", user_email="reader@example.com")
    await bus.emit(event)
    server = SmtpServer(port)
    async with running(bus, settings):
        await eventually(lambda: _count(bus, "failed", 2))
        await server.start()
        await eventually(lambda: _count(bus, "delivered", 1))
    await server.stop()

    results = await outcomes(bus)
    failed = [o for o in results if o.status == "failed"]
    assert len(failed) >= 2
    assert all(not o.final and o.retry_at_ms and "Connect" in o.error for o in failed)
    assert [o.attempt for o in failed] == list(range(1, len(failed) + 1))
    [delivered] = [o for o in results if o.status == "delivered"]
    assert (delivered.attempt, delivered.final) == (len(failed) + 1, True)
    assert [r.message()["Subject"] for r in server.handler.received] == ["Job 9: 50% — Chapter 10"]
    assert await dead_letters(bus, "email") == []


async def test_a_4yz_reply_is_retried(
    bus: EventBus, settings: Settings, smtp_server: SmtpServer
) -> None:
    """A 451 at DATA is a failed, non-final attempt with the reply; the retry is delivered."""
    smtp_server.handler.data_replies.append("451 4.3.0 mailbox busy")
    settings = email_settings(settings, smtp_server.port)
    await bus.emit(FACTORY.completion("5", 1, "Ada Lovelace", user_email="reader@example.com"))
    async with running(bus, settings):
        await eventually(lambda: _count(bus, "delivered", 1))
    first, second = await outcomes(bus)
    assert (first.status, first.final, first.status_code, first.error) == (
        "failed",
        False,
        451,
        "451 4.3.0 mailbox busy",
    )
    assert (second.status, second.attempt) == ("delivered", 2)
    assert len(smtp_server.handler.received) == 1


async def test_a_5yz_reply_fails_at_once_and_is_dead_lettered(
    bus: EventBus, settings: Settings, smtp_server: SmtpServer
) -> None:
    """A 550 is final on the first attempt: reply recorded, dead-lettered, nothing rescheduled."""
    smtp_server.handler.rcpt_replies["gone@example.com"] = (
        "550 5.1.1 <gone@example.com>: no such user"
    )
    settings = email_settings(settings, smtp_server.port)
    event = FACTORY.completion("6", 2, "Alan Turing", user_email="gone@example.com")
    await bus.emit(event)
    mailer = SMTPMailer.from_settings(settings)
    consumer = Consumer.from_settings(
        bus, EmailChannel(mailer, Renderer(settings.from_email)), settings
    )
    await consumer.run(burst=True)
    await mailer.aclose()

    [outcome] = await outcomes(bus)
    assert (outcome.status, outcome.final, outcome.attempt, outcome.status_code) == (
        "failed",
        True,
        1,
        550,
    )
    assert "no such user" in outcome.error
    [letter] = await dead_letters(bus, "email")
    assert (letter.event_id, letter.recipient, letter.attempts) == (event.id, "gone@example.com", 1)
    assert "550 5.1.1" in letter.reason
    assert await bus.redis.zcard(bus.names.scheduled("email")) == 0
    assert smtp_server.handler.received == []


async def test_rate_limit_counts_exactly_and_sends_nothing_over_it(
    bus: EventBus, settings: Settings, smtp_server: SmtpServer
) -> None:
    """EMAIL_RATE_LIMIT_PER_MINUTE=3 and five events to one address: 3 mails, 2 rate_limited."""
    settings = email_settings(settings, smtp_server.port, email_rate_limit_per_minute=3)
    await bus.emit_many(
        [
            FACTORY.progress_update("8", p, user_email="reader@example.com")
            for p in (10, 20, 30, 40, 50)
        ]
    )
    mailer = SMTPMailer.from_settings(settings)
    consumer = Consumer.from_settings(
        bus, EmailChannel(mailer, Renderer(settings.from_email)), settings
    )
    await consumer.run(burst=True)
    await mailer.aclose()

    statuses = sorted(o.status for o in await outcomes(bus))
    assert statuses == ["delivered"] * 3 + ["rate_limited"] * 2
    assert len(smtp_server.handler.received) == 3
    assert smtp_server.handler.mail_commands == 3  # no SMTP transaction for the limited two


async def _count(bus: EventBus, status: str, at_least: int) -> bool:
    return sum(o.status == status for o in await outcomes(bus)) >= at_least
