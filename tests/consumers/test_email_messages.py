"""What the email channel puts on the wire: MIME structure, subjects, escaping, no header injection."""

from __future__ import annotations

import json

import pytest

from bookgen_events import EventBus, Reject, Settings
from bookgen_events.consumer import Consumer
from bookgen_events.events import CompletionData, Event, EventType, ProgressData
from bookgen_events.outcomes import DeadLetter
from bookgen_events.service import EventFactory
from consumers.email_messages import PreparedMessage, Renderer
from consumers.emails import EmailChannel
from consumers.mailer import SMTPMailer
from tests.support.smtp import SmtpServer

FACTORY = EventFactory(admin_emails=["ops@bookgen.com"])
USER = "reader@example.com"

CASES = [
    (
        FACTORY.completion("123", 456, "Marie Curie", user_email=USER),
        "Biography ready: Marie Curie",
    ),
    (FACTORY.error_alert("123", "OOM", "critical", user_email=USER), "[critical] Job 123 failed"),
    (
        FACTORY.progress_update("123", 50, "Chapter 10", user_email=USER),
        "Job 123: 50% — Chapter 10",
    ),
    (
        FACTORY.status_change("123", "queued", "running", user_email=USER),
        "Job 123 status: queued → running",
    ),
    (FACTORY.admin_alert("system_overload", "CPU at 99%"), "[admin] System Overload"),
]


def mailer_for(server: SmtpServer) -> SMTPMailer:
    return SMTPMailer("127.0.0.1", server.port, use_tls=False, timeout=5.0)


class CountingRenderer(Renderer):
    """The real renderer, counting how often it renders."""

    renders = 0

    def render(self, event: Event) -> PreparedMessage:
        self.renders += 1
        return super().render(event)


@pytest.mark.parametrize(("event", "subject"), CASES, ids=[e.type.value for e, _ in CASES])
async def test_each_type_arrives_as_multipart_alternative(
    smtp_server: SmtpServer, event: Event, subject: str
) -> None:
    """Parsed back by the ``email`` package: headers, subject, both parts, Message-ID from the id."""
    async with mailer_for(smtp_server) as mailer:
        channel = EmailChannel(mailer, Renderer("BookGen <noreply@bookgen.com>"))
        for recipient in channel.recipients(event):
            assert await channel.deliver(event, recipient) == 250

    expected = list(event.emails)
    assert [r.rcpt_tos for r in smtp_server.handler.received] == [[a] for a in expected]
    for got in smtp_server.handler.received:
        message = got.message()
        assert got.mail_from == "noreply@bookgen.com"
        assert message["From"] == "BookGen <noreply@bookgen.com>"
        assert message["To"] == got.rcpt_tos[0]
        assert message["Subject"] == subject
        assert message["Message-ID"] == f"<{event.id}@bookgen.com>"
        assert message["Date"].datetime.timestamp() == int(event.occurred_at.timestamp())
        assert message.get_content_type() == "multipart/alternative"
        assert [p.get_content_type() for p in message.iter_parts()] == ["text/plain", "text/html"]
        assert message.defects == []
        text = message.get_body(("plain",)).get_content()
        html = message.get_body(("html",)).get_content()
        assert event.id in text and event.id in html
        assert html.lstrip().startswith("<!DOCTYPE html>")


def test_html_escapes_user_values_and_text_keeps_them() -> None:
    """Every user-supplied value is escaped in the HTML part, shown verbatim in the plain one."""
    evil = '<script>alert("x")</script>'
    event = FACTORY.error_alert("1", evil, "critical", user_email=USER, metadata={"k": evil})
    message = _parse(Renderer("noreply@bookgen.com").render(event).to(USER))
    html = message.get_body(("html",)).get_content()
    text = message.get_body(("plain",)).get_content()
    assert "<script>" not in html
    assert html.count("&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;") == 2
    assert text.count(evil) == 2


async def test_crlf_in_a_subject_value_cannot_add_a_header(smtp_server: SmtpServer) -> None:
    """A character name carrying CR/LF (an event that bypassed validation) stays inside Subject."""
    data = CompletionData.model_construct(
        biography_id=1,
        character_name="Marie\r\nBcc: victim@evil.example\r\nX-Injected: yes",
        status="completed",
        metadata={},
    )
    event = Event.model_construct(**{**CASES[0][0].__dict__, "data": data, "emails": [USER]})
    async with mailer_for(smtp_server) as mailer:
        await EmailChannel(mailer, Renderer("noreply@bookgen.com")).deliver(event, USER)

    [got] = smtp_server.handler.received
    message = got.message()
    assert got.rcpt_tos == [USER]
    assert message["Subject"] == "Biography ready: Marie Bcc: victim@evil.example X-Injected: yes"
    assert sorted(message.keys()) == sorted(
        [
            "From",
            "To",
            "Subject",
            "Date",
            "Message-ID",
            "MIME-Version",
            "Auto-Submitted",
            "Content-Type",
        ]
    )
    head = got.data.split(b"\r\n\r\n", 1)[0]
    assert b"\r\nBcc" not in head and b"\nX-Injected" not in head


async def test_crlf_in_a_recipient_or_id_is_rejected(smtp_server: SmtpServer) -> None:
    """A recipient or event id that could break a header is a Reject before any SMTP traffic."""
    base = CASES[0][0]
    async with mailer_for(smtp_server) as mailer:
        channel = EmailChannel(mailer, Renderer("noreply@bookgen.com"))
        with pytest.raises(Reject, match="recipient"):
            await channel.deliver(base, "a@example.com\r\nBcc: victim@evil.example")
        bad_id = Event.model_construct(**{**base.__dict__, "id": "x\r\nBcc: victim@evil.example"})
        with pytest.raises(Reject, match="Message-ID"):
            await channel.deliver(bad_id, USER)
    assert smtp_server.handler.mail_commands == 0


async def test_a_raw_entry_with_crlf_is_dead_lettered_not_mailed(
    bus: EventBus, settings: Settings, smtp_server: SmtpServer
) -> None:
    """Written straight into the stream past emit's validation, it is poison: DLQ, no mail."""
    raw = json.loads(CASES[0][0].model_dump_json())
    raw["data"]["character_name"] = "Marie\r\nBcc: victim@evil.example"
    await bus.redis.xadd(bus.names.events, {"event": json.dumps(raw)})
    mailer = mailer_for(smtp_server)
    consumer = Consumer.from_settings(
        bus, EmailChannel(mailer, Renderer("noreply@bookgen.com")), settings
    )
    await consumer.run(burst=True)
    await mailer.aclose()

    [letter] = [
        DeadLetter.from_fields(f) for _, f in await bus.range(stream=bus.names.dlq("email"))
    ]
    assert letter.poison and "line breaks" in letter.reason
    assert smtp_server.handler.mail_commands == 0


async def test_render_once_per_event_not_per_recipient(
    bus: EventBus, settings: Settings, smtp_server: SmtpServer
) -> None:
    """Three recipients of one event: one render, three messages differing only in To."""
    event = FACTORY.admin_alert(
        "disk_full", "95% used", admin_emails=["a@example.com", "b@example.com"]
    )
    await bus.emit(event)
    renderer = CountingRenderer("noreply@bookgen.com")
    mailer = mailer_for(smtp_server)
    await Consumer.from_settings(bus, EmailChannel(mailer, renderer), settings).run(burst=True)
    await mailer.aclose()

    assert renderer.renders == 1
    received = smtp_server.handler.received
    assert sorted(r.rcpt_tos[0] for r in received) == [
        "a@example.com",
        "b@example.com",
        "ops@bookgen.com",
    ]
    bodies = {r.data.replace(f"To: {r.rcpt_tos[0]}\r\n".encode(), b"") for r in received}
    assert len(bodies) == 1


def test_an_event_that_cannot_render_is_rejected() -> None:
    """A payload missing fields its template needs is a Reject (retrying cannot fix it)."""
    data = ProgressData.model_construct(progress=5.0)  # a completion needs .status
    event = Event.model_construct(
        **{**CASES[0][0].__dict__, "type": EventType.COMPLETION, "data": data}
    )
    with pytest.raises(Reject, match="cannot render"):
        Renderer("noreply@bookgen.com").render(event)


def _parse(raw: bytes):  # type: ignore[no-untyped-def]
    import email
    from email import policy

    return email.message_from_bytes(raw, policy=policy.default)


async def test_the_render_cache_is_bounded_in_bytes(smtp_server: SmtpServer) -> None:
    """Big messages evict older ones: the cache holds at most ``cache_bytes``, not N messages."""
    async with mailer_for(smtp_server) as mailer:
        channel = EmailChannel(mailer, Renderer("noreply@bookgen.com"), cache_bytes=200_000)
        sizes = []
        for i in range(50):
            event = FACTORY.admin_alert("big", "x" * 20_000, metadata={"i": i})
            sizes.append(channel.prepare(event).size)
            assert channel.cached_bytes <= 200_000
        assert min(sizes) > 20_000  # each message is big: a count bound alone would keep 50
        assert channel.cached_bytes > 200_000 - max(sizes)  # and the room is used, not wasted
