"""The email channel: one templated multipart message per event, sent over pooled SMTP.

Rendering is the expensive part of an email (the stdlib's ``EmailMessage`` costs ~1.3 ms here,
more than sending it), so each event is rendered once, by Jinja2 and a fixed-shape MIME
writer, into bytes with a gap where the ``To`` address goes; each recipient costs one bytes
join. Subjects are stripped of every control character and RFC 2047-encoded by the stdlib, and
recipients are re-validated here, so no value from an event can start a header of its own —
even one that bypassed validation at ``emit``.
"""

from __future__ import annotations

import asyncio
import base64
import re
from collections import OrderedDict
from dataclasses import dataclass
from email.header import Header
from email.utils import formataddr, formatdate, parseaddr
from pathlib import Path
from typing import Any

import jinja2
from pydantic import TypeAdapter, ValidationError

from bookgen_events.bus import EventBus
from bookgen_events.errors import ConfigError, Reject
from bookgen_events.events import EmailAddress, Event, EventType
from bookgen_events.logs import get_logger
from bookgen_events.serving import run_channel
from bookgen_events.settings import Settings

from .mailer import Mailer, SMTPMailer

__all__ = ["EmailChannel", "PreparedMessage", "Renderer", "serve"]

log = get_logger("consumers.emails")

_TEMPLATES = Path(__file__).with_name("templates")
_CONTROL = re.compile(r"[\x00-\x1f\x7f\u0080-\u009f\u2028\u2029]+")
_SPACES = re.compile(r"\s+")
_EVENT_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")  # Event.id's own pattern, re-checked
_MAX_SUBJECT = 200
#: Bytes of rendered messages kept for reuse (an event's other recipients, its retries).
CACHE_BYTES = 16 * 1024 * 1024
_address = TypeAdapter(EmailAddress)


def _pct(value: float) -> str:
    return f"{float(value):.1f}".removesuffix(".0") + "%"


def _title_words(value: str) -> str:
    return " ".join(word.capitalize() for word in re.split(r"[\s_-]+", str(value)) if word)


def header_text(value: str, limit: int = _MAX_SUBJECT) -> str:
    """One line of header text: control characters and line breaks become single spaces."""
    text = _SPACES.sub(" ", _CONTROL.sub(" ", value)).strip()
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _base64_body(text: str) -> bytes:
    # base64 is C-fast and yields 76-char lines: long or odd template output stays legal SMTP.
    return base64.encodebytes(text.encode("utf-8")).replace(b"\n", b"\r\n")


@dataclass(frozen=True, slots=True)
class PreparedMessage:
    """A serialised message missing only its ``To`` address."""

    subject: str
    head: bytes
    tail: bytes

    def to(self, recipient: str) -> bytes:
        return self.head + recipient.encode("ascii") + self.tail

    @property
    def size(self) -> int:
        return len(self.head) + len(self.tail) + len(self.subject)


class Renderer:
    """Renders an event into a ``multipart/alternative`` message (text + HTML).

    Templates live in ``consumers/templates``: ``<type>.subject.j2``, ``<type>.txt.j2`` and
    ``<type>.html.j2``; HTML output is autoescaped, so user-supplied values cannot add markup.
    """

    def __init__(self, from_email: str, template_dir: Path = _TEMPLATES) -> None:
        name, address = parseaddr(from_email)
        if _CONTROL.search(from_email) or "@" not in address or not address.isascii():
            raise ConfigError(f"FROM_EMAIL: {from_email[:80]!r} is not an email address")
        self.sender = address
        self.domain = address.rpartition("@")[2]
        self._from = header_text(formataddr((name, address)), 998).encode("ascii")
        env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(template_dir),
            autoescape=jinja2.select_autoescape(enabled_extensions=("html.j2",)),
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        env.filters.update(pct=_pct, title_words=_title_words)
        self._templates = {
            kind: tuple(
                env.get_template(f"{kind.value}.{part}.j2") for part in ("subject", "txt", "html")
            )
            for kind in EventType
        }

    def render(self, event: Event) -> PreparedMessage:
        """Render ``event`` once; raises :class:`Reject` when it cannot be rendered at all."""
        if not isinstance(event.id, str) or not _EVENT_ID.fullmatch(event.id):
            raise Reject("event id unfit for a Message-ID")
        try:
            subject_t, text_t, html_t = self._templates[EventType(event.type)]
            data = event.data
            operator_facing = event.type in (EventType.ERROR_ALERT, EventType.ADMIN_ALERT)
            context: dict[str, Any] = {
                "event_id": event.id,
                "job_id": event.job_id,
                "job": f"Job {event.job_id}" if event.job_id else "Your job",
                "data": data,
                "metadata": (getattr(data, "metadata", None) or {}) if operator_facing else {},
                "occurred": event.occurred_at.strftime("%Y-%m-%d %H:%M UTC"),
            }
            subject = header_text(subject_t.render(context)) or "BookGen notification"
            context["subject"] = subject
            text, html = text_t.render(context), html_t.render(context)
            return self._assemble(event, subject, text, html)
        except (jinja2.TemplateError, TypeError, ValueError, AttributeError, KeyError) as exc:
            raise Reject(f"cannot render {event.type} email: {type(exc).__name__}: {exc}") from None

    def _assemble(self, event: Event, subject: str, text: str, html: str) -> PreparedMessage:
        charset = "us-ascii" if subject.isascii() else "utf-8"
        encoded_subject = Header(subject, charset, header_name="Subject").encode(linesep="\r\n")
        # "_" is outside the base64 alphabet, so the boundary can never occur in a body.
        boundary = f"=_bookgen_{event.id}".encode("ascii")
        date = formatdate(event.occurred_at.timestamp(), usegmt=True)
        head = b"From: " + self._from + b"\r\nTo: "
        tail = b"".join(
            [
                b"\r\nSubject: " + encoded_subject.encode("ascii"),
                f"\r\nDate: {date}\r\nMessage-ID: <{event.id}@{self.domain}>".encode("ascii"),
                b"\r\nMIME-Version: 1.0\r\nAuto-Submitted: auto-generated",
                b'\r\nContent-Type: multipart/alternative; boundary="' + boundary + b'"\r\n',
                b"\r\n--" + boundary,
                b'\r\nContent-Type: text/plain; charset="utf-8"',
                b"\r\nContent-Transfer-Encoding: base64\r\n\r\n",
                _base64_body(text),
                b"\r\n--" + boundary,
                b'\r\nContent-Type: text/html; charset="utf-8"',
                b"\r\nContent-Transfer-Encoding: base64\r\n\r\n",
                _base64_body(html),
                b"\r\n--" + boundary + b"--\r\n",
            ]
        )
        return PreparedMessage(subject, head, tail)


class EmailChannel:
    """The ``email`` channel: the event's ``emails``, one message each, keyed by address."""

    name = "email"

    def __init__(
        self,
        mailer: Mailer,
        renderer: Renderer,
        *,
        cache_size: int = 1024,
        cache_bytes: int = CACHE_BYTES,
    ) -> None:
        self.mailer = mailer
        self.renderer = renderer
        # Rendered messages of recent events, for their other recipients and retries; bounded
        # by count and by bytes (a 64 KiB event can render to far more than 64 KiB).
        self._cache: OrderedDict[str, PreparedMessage] = OrderedDict()
        self._cache_size = cache_size
        self._cache_bytes = cache_bytes
        self.cached_bytes = 0

    def recipients(self, event: Event) -> list[str]:
        return list(event.emails)

    def rate_limit_key(self, event: Event, recipient: str) -> str | None:
        return recipient

    def prepare(self, event: Event) -> PreparedMessage:
        """The event's message, rendered on first use and shared by all its recipients."""
        prepared = self._cache.get(event.id)
        if prepared is None:
            prepared = self.renderer.render(event)
            self._cache[event.id] = prepared
            self.cached_bytes += prepared.size
            while self._cache and (
                len(self._cache) > self._cache_size or self.cached_bytes > self._cache_bytes
            ):
                self.cached_bytes -= self._cache.popitem(last=False)[1].size
        return prepared

    async def deliver(self, event: Event, recipient: str) -> int | None:
        try:
            address = _address.validate_python(recipient)
        except ValidationError:
            raise Reject("invalid recipient address") from None
        message = self.prepare(event).to(address)
        return await self.mailer.send(message, self.renderer.sender, address)


async def serve(
    bus: EventBus,
    settings: Settings,
    stop: asyncio.Event,
    *,
    mailer: Mailer | None = None,
    **overrides: Any,
) -> None:
    """Run the email dispatcher until ``stop``: opens the SMTP pool, closes it on exit."""
    renderer = Renderer(settings.from_email)
    own = mailer is None
    active: Mailer = mailer if mailer is not None else SMTPMailer.from_settings(settings)
    log.info(
        "email dispatcher starting",
        smtp_host=settings.smtp_host,
        smtp_port=settings.smtp_port,
        pool=settings.smtp_pool_size,
    )
    try:
        await run_channel(bus, settings, EmailChannel(active, renderer), stop, **overrides)
    finally:
        if own and isinstance(active, SMTPMailer):
            await active.aclose()
