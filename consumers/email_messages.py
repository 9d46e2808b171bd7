"""An email message from an event: templated, multipart, rendered once and finished per
recipient.

Rendering is the expensive part of an email (the stdlib's ``EmailMessage`` costs ~1.3 ms here,
more than sending it), so each event is rendered once, by Jinja2 and a fixed-shape MIME
writer, into bytes with a gap where the ``To`` address goes; each recipient costs one bytes
join. Subjects are stripped of every control character and RFC 2047-encoded by the stdlib, so
no value from an event can start a header of its own. A message carrying an RFC 8058
unsubscribe link is rendered with a slot for it (:data:`LINK_SLOT`) and finished per
recipient (base64 and headers, microseconds). Digests list a window's notifications from
``templates/digest/<type>.*.j2``, latest state first.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Sequence
from dataclasses import dataclass
from email.header import Header
from email.utils import formataddr, formatdate, parseaddr
from html import escape
from pathlib import Path
from typing import Any

import jinja2

from bookgen_events.errors import ConfigError, Reject
from bookgen_events.events import Event, EventType

__all__ = ["LINK_SLOT", "LinkedMessage", "PreparedMessage", "Renderer", "header_text"]

_TEMPLATES = Path(__file__).with_name("templates")
_CONTROL = re.compile(r"[\x00-\x1f\x7f\u0080-\u009f\u2028\u2029]+")
_SPACES = re.compile(r"\s+")
_EVENT_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")  # Event.id's own pattern, re-checked
_MAX_SUBJECT = 200

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
