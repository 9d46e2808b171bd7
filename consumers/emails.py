"""The email channel: one templated multipart message per event, sent over pooled SMTP.

Rendering is the expensive part of an email (the stdlib's ``EmailMessage`` costs ~1.3 ms here,
more than sending it), so each event is rendered once, by Jinja2 and a fixed-shape MIME
writer, into bytes with a gap where the ``To`` address goes; each recipient costs one bytes
join. Subjects are stripped of every control character and RFC 2047-encoded by the stdlib, and
recipients are re-validated here, so no value from an event can start a header of its own —
even one that bypassed validation at ``emit``.

Subscribers (SPEC 9): the event's subscriber's own address joins its recipients when they take
that type by email; an address whose owner opted out is not mailed but recorded
``suppressed``. A message to an address with a user behind it (its owner, else the event's
``user_id``) carries RFC 8058 one-click unsubscribe: ``List-Unsubscribe`` with a signed link
bound to that user, channel, type and address, ``List-Unsubscribe-Post``, and the same link
in the footer of both parts. Such messages are rendered once per event with a placeholder
for the link, then finished per recipient (base64 and headers, microseconds). A subscriber's
quiet hours hold non-critical mail until they end, and their digest windows collect a
type's notifications per job into one mail (``templates/digest/<type>.*.j2``, latest state
first) sent when the window closes (:mod:`bookgen_events.digests`).
"""

from __future__ import annotations

import asyncio
import base64
import re
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from email.header import Header
from email.utils import formataddr, formatdate, parseaddr
from html import escape
from pathlib import Path
from typing import Any

import jinja2
from pydantic import TypeAdapter, ValidationError

from bookgen_events.bus import EventBus
from bookgen_events.digests import DigestWindows
from bookgen_events.errors import ConfigError, Reject
from bookgen_events.events import EmailAddress, Event, EventType
from bookgen_events.logs import get_logger
from bookgen_events.quiet_hours import is_critical
from bookgen_events.serving import run_channel
from bookgen_events.settings import Settings, parse_duration
from bookgen_events.subscriber_index import SubscriberIndex
from bookgen_events.subscribers import SubscriberRegistry
from bookgen_events.unsubscribe import LinkMaker, link_maker

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
#: Where a message's unsubscribe link goes until it is finished for one recipient.
LINK_SLOT = "\x1aunsubscribe-link\x1a"


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


def _list_headers(url: str) -> bytes:
    """RFC 8058 one-click unsubscribe headers for ``url`` (checked plain ASCII)."""
    return (
        b"\r\nList-Unsubscribe: <" + url.encode("ascii") + b">"
        b"\r\nList-Unsubscribe-Post: List-Unsubscribe=One-Click"
    )


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


@dataclass(frozen=True, slots=True)
class LinkedMessage:
    """A rendered message whose unsubscribe link is still a slot (:data:`LINK_SLOT`)."""

    event: Event
    subject: str
    text: str
    html: str

    @property
    def size(self) -> int:
        return len(self.text) + len(self.html) + len(self.subject)


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
        self._digests = {
            kind: tuple(
                env.get_template(f"digest/{kind.value}.{part}.j2")
                for part in ("subject", "txt", "html")
            )
            for kind in EventType
        }

    def render(self, event: Event) -> PreparedMessage:
        """Render ``event`` once; raises :class:`Reject` when it cannot be rendered at all."""
        subject, text, html = self._render(event, None)
        return self._assemble(event, subject, text, html)

    def render_linked(self, event: Event) -> LinkedMessage:
        """Render ``event`` with a slot for an unsubscribe link (see :meth:`finish`)."""
        return LinkedMessage(event, *self._render(event, LINK_SLOT))

    def finish(self, linked: LinkedMessage, url: str) -> PreparedMessage:
        """``linked`` with ``url`` in its footers and RFC 8058 headers."""
        if not url.isascii() or _CONTROL.search(url):
            raise Reject("unsubscribe link is not a plain ASCII URL")
        headers = _list_headers(url)
        text = linked.text.replace(LINK_SLOT, url)
        html = linked.html.replace(LINK_SLOT, escape(url))
        return self._assemble(linked.event, linked.subject, text, html, headers)

    def render_digest(
        self, events: Sequence[Event], unsubscribe_url: str | None
    ) -> PreparedMessage:
        """One message listing ``events`` (one type, one job; oldest first as given), the
        latest state first; with a link, its footers and RFC 8058 headers."""
        latest = events[-1]
        try:
            subject_t, text_t, html_t = self._digests[EventType(latest.type)]
            items = [
                {"data": e.data, "occurred": e.occurred_at.strftime("%Y-%m-%d %H:%M UTC")}
                for e in reversed(events)
            ]
            context: dict[str, Any] = {
                "job": f"Job {latest.job_id}" if latest.job_id else "Your job",
                "job_id": latest.job_id,
                "count": len(events),
                "latest": latest.data,
                "items": items,
                "event_id": latest.id,
                "metadata": {},
                "occurred": items[0]["occurred"],
                "unsubscribe_url": unsubscribe_url,
            }
            subject = header_text(subject_t.render(context)) or "BookGen digest"
            context["subject"] = context["heading"] = subject
            text, html = text_t.render(context), html_t.render(context)
        except (jinja2.TemplateError, TypeError, ValueError, AttributeError, KeyError) as exc:
            raise Reject(
                f"cannot render {latest.type} digest: {type(exc).__name__}: {exc}"
            ) from None
        headers = b""
        if unsubscribe_url is not None:
            if not unsubscribe_url.isascii() or _CONTROL.search(unsubscribe_url):
                raise Reject("unsubscribe link is not a plain ASCII URL")
            headers = _list_headers(unsubscribe_url)
        return self._assemble(latest, subject, text, html, headers, f"digest.{latest.id}")

    def _render(self, event: Event, unsubscribe_url: str | None) -> tuple[str, str, str]:
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
                "unsubscribe_url": unsubscribe_url,
            }
            subject = header_text(subject_t.render(context)) or "BookGen notification"
            context["subject"] = subject
            return subject, text_t.render(context), html_t.render(context)
        except (jinja2.TemplateError, TypeError, ValueError, AttributeError, KeyError) as exc:
            raise Reject(f"cannot render {event.type} email: {type(exc).__name__}: {exc}") from None

    def _assemble(
        self,
        event: Event,
        subject: str,
        text: str,
        html: str,
        headers: bytes = b"",
        message_id: str | None = None,
    ) -> PreparedMessage:
        charset = "us-ascii" if subject.isascii() else "utf-8"
        encoded_subject = Header(subject, charset, header_name="Subject").encode(linesep="\r\n")
        # "_" is outside the base64 alphabet, so the boundary can never occur in a body.
        boundary = f"=_bookgen_{event.id}".encode("ascii")
        date = formatdate(event.occurred_at.timestamp(), usegmt=True)
        head = b"From: " + self._from + b"\r\nTo: "
        tail = b"".join(
            [
                headers,
                b"\r\nSubject: " + encoded_subject.encode("ascii"),
                f"\r\nDate: {date}\r\nMessage-ID: <{message_id or event.id}@{self.domain}>".encode(
                    "ascii"
                ),
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
    """The ``email`` channel: the event's ``emails`` and its subscriber's, one message each,
    keyed by address."""

    name = "email"

    def __init__(
        self,
        mailer: Mailer,
        renderer: Renderer,
        *,
        subscribers: SubscriberIndex | None = None,
        links: LinkMaker | None = None,
        digests: DigestWindows | None = None,
        cache_size: int = 1024,
        cache_bytes: int = CACHE_BYTES,
    ) -> None:
        self.mailer = mailer
        self.renderer = renderer
        self.subscribers = subscribers
        self.links = links
        self.digests = digests
        # Rendered messages of recent events, for their other recipients and retries; bounded
        # by count and by bytes (a 64 KiB event can render to far more than 64 KiB).
        self._cache: OrderedDict[tuple[str, bool], PreparedMessage | LinkedMessage]
        self._cache = OrderedDict()
        self._cache_size = cache_size
        self._cache_bytes = cache_bytes
        self.cached_bytes = 0

    def recipients(self, event: Event) -> list[str]:
        if self.subscribers is None:
            return list(event.emails)
        return self.subscribers.route(event, "email", list(event.emails))

    def suppressed(self, event: Event, recipient: str) -> str | None:
        if self.subscribers is None:
            return None
        return self.subscribers.opted_out(event, "email", recipient)

    def digest_window(self, event: Event, recipient: str) -> int | None:
        """How long (ms) ``recipient``'s owner collects this type into a digest, if they do;
        a critical error alert is never collected."""
        if self.digests is None or self.subscribers is None or is_critical(event):
            return None
        owner = self.subscribers.owner(recipient)
        window = owner.digest.get(event.type) if owner is not None else None
        return None if window is None else int(parse_duration(window) * 1000)

    async def deliver_digest(self, events: Sequence[Event], recipient: str) -> int | None:
        try:
            address = _address.validate_python(recipient)
        except ValidationError:
            raise Reject("invalid recipient address") from None
        url = self.unsubscribe_url(events[-1], address)
        prepared = self.renderer.render_digest(events, url)
        return await self.mailer.send(prepared.to(address), self.renderer.sender, address)

    def held_until(self, event: Event, recipient: str) -> int | None:
        if self.subscribers is None:
            return None
        return self.subscribers.quiet_until_ms(event, "email", recipient)

    def rate_limit_key(self, event: Event, recipient: str) -> str | None:
        return recipient

    def prepare(self, event: Event) -> PreparedMessage:
        """The event's message, rendered on first use and shared by all its recipients."""
        prepared = self._cached(event, linked=False)
        assert isinstance(prepared, PreparedMessage)
        return prepared

    def _cached(self, event: Event, *, linked: bool) -> PreparedMessage | LinkedMessage:
        key = (event.id, linked)
        found = self._cache.get(key)
        if found is None:
            found = self.renderer.render_linked(event) if linked else self.renderer.render(event)
            self._cache[key] = found
            self.cached_bytes += found.size
            while self._cache and (
                len(self._cache) > self._cache_size or self.cached_bytes > self._cache_bytes
            ):
                self.cached_bytes -= self._cache.popitem(last=False)[1].size
        return found

    def unsubscribe_url(self, event: Event, address: str) -> str | None:
        """The one-click link for ``address``: bound to its owner, else to the event's user;
        None when no user stands behind it (or links are off)."""
        if self.links is None:
            return None
        owner = self.subscribers.owner(address) if self.subscribers is not None else None
        user_id = owner.user_id if owner is not None else event.user_id
        if user_id is None:
            return None
        return self.links.url(user_id, "email", event.type, address)

    async def deliver(self, event: Event, recipient: str) -> int | None:
        try:
            address = _address.validate_python(recipient)
        except ValidationError:
            raise Reject("invalid recipient address") from None
        url = self.unsubscribe_url(event, address)
        if url is None:
            prepared = self.prepare(event)
        else:
            linked = self._cached(event, linked=True)
            assert isinstance(linked, LinkedMessage)
            prepared = self.renderer.finish(linked, url)
        return await self.mailer.send(prepared.to(address), self.renderer.sender, address)


async def serve(
    bus: EventBus,
    settings: Settings,
    stop: asyncio.Event,
    *,
    mailer: Mailer | None = None,
    **overrides: Any,
) -> None:
    """Run the email dispatcher until ``stop``: opens the SMTP pool, closes it on exit; the
    subscribers are kept current meanwhile."""
    renderer = Renderer(settings.from_email)
    subscribers = SubscriberIndex(SubscriberRegistry.for_prefix(bus.redis, settings.stream_prefix))
    links = link_maker(settings)
    if links is None:
        log.warning("UNSUBSCRIBE_SECRET is not set: emails go without unsubscribe links")
    own = mailer is None
    active: Mailer = mailer if mailer is not None else SMTPMailer.from_settings(settings)
    log.info(
        "email dispatcher starting",
        smtp_host=settings.smtp_host,
        smtp_port=settings.smtp_port,
        pool=settings.smtp_pool_size,
    )
    channel = EmailChannel(
        active, renderer, subscribers=subscribers, links=links,
        digests=DigestWindows(bus.redis, bus.names, "email"),
    )  # fmt: skip
    try:
        async with subscribers.kept_current():
            await run_channel(bus, settings, channel, stop, **overrides)
    finally:
        if own and isinstance(active, SMTPMailer):
            await active.aclose()
