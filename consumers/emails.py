"""The email channel: one templated multipart message per event, sent over pooled SMTP.

Messages are rendered once per event (:mod:`consumers.email_messages`) and kept for the
event's other recipients and retries; recipients are re-validated here, so no value from an
event can start a header of its own, even one that bypassed validation at ``emit``.

Subscribers (SPEC 9): the event's subscriber's own address joins its recipients when they take
that type by email; an address whose owner opted out is not mailed but recorded
``suppressed``. A message to an address with a user behind it (its owner, else the event's
``user_id``) carries RFC 8058 one-click unsubscribe: ``List-Unsubscribe`` with a signed link
bound to that user, channel, type and address, ``List-Unsubscribe-Post``, and the same link
in the footer of both parts. Such messages are rendered once per event with a placeholder
for the link, then finished per recipient. A subscriber's quiet hours hold non-critical mail
until they end, and their digest windows collect a type's notifications per job into one
mail sent when the window closes (:mod:`bookgen_events.digests`).
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

from pydantic import TypeAdapter, ValidationError

from bookgen_events.bus import EventBus
from bookgen_events.digests import DigestWindows
from bookgen_events.errors import Reject
from bookgen_events.events import EmailAddress, Event
from bookgen_events.logs import get_logger
from bookgen_events.quiet_hours import is_critical
from bookgen_events.serving import run_channel
from bookgen_events.settings import Settings, parse_duration
from bookgen_events.subscriber_index import SubscriberIndex
from bookgen_events.subscribers import SubscriberRegistry
from bookgen_events.unsubscribe import LinkMaker, link_maker

from .email_messages import LinkedMessage, PreparedMessage, Renderer
from .mailer import Mailer, SMTPMailer

__all__ = ["EmailChannel", "serve"]

log = get_logger("consumers.emails")

_address = TypeAdapter(EmailAddress)


def _valid_address(recipient: str) -> str:
    """``recipient`` checked again here, at the last moment before it becomes a header."""
    try:
        return _address.validate_python(recipient)
    except ValidationError:
        raise Reject("invalid recipient address") from None


#: Bytes of rendered messages kept for reuse (an event's other recipients, its retries).
CACHE_BYTES = 16 * 1024 * 1024


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
        address = _valid_address(recipient)
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
        address = _valid_address(recipient)
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
