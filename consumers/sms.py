"""The SMS channel (consumer group ``sms``): a short text per event through Twilio.

Who gets a text: the event's own ``phones``, and the phone of the subscriber named by its
``user_id`` when their preferences take that type by SMS (:class:`SubscriberIndex`), each
once. ``SMS_TYPES`` bounds what is texted at all (completions and critical error alerts by
default); a subscriber's preferences choose within it. A phone whose owner opted out of that
type by SMS is not texted, wherever the event got it: its outcome is ``suppressed``. In
the owner's quiet hours a text waits (a scheduled delivery due when they end), except a
critical error alert.

Each (event, phone) is one recipient of the consumer runtime: rate limited per phone
(``SMS_RATE_LIMIT_PER_MINUTE``/``_PER_HOUR``), retried on the webhook schedule, dead-lettered,
replayed and redriven like every channel. Sending goes through the process's one outbound
HTTP sender (:mod:`consumers.outbound`: SSRF guard, pooled keep-alive); Twilio's answers are
mapped in :mod:`consumers.sms_twilio`. When Twilio says 21610 (the recipient replied STOP),
the delivery is final and the owner of that phone (else the event's user) has SMS turned off,
recorded on the subscribers' audit trail.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable
from typing import Any

import aiohttp
from multidict import CIMultiDict, CIMultiDictProxy
from redis.exceptions import RedisError

from bookgen_events.bus import EventBus
from bookgen_events.errors import Reject, RetryLater
from bookgen_events.events import Event, EventType
from bookgen_events.logs import get_logger
from bookgen_events.serving import run_channel
from bookgen_events.settings import Settings
from bookgen_events.subscriber_index import SubscriberIndex
from bookgen_events.subscribers import SubscriberRegistry

from .outbound import MAX_RESPONSE_BYTES, OutboundResponse, Sender, failure_for, open_sender
from .sms_text import render
from .sms_twilio import TwilioAccount, Unsubscribed, refine
from .ssrf import find_blocked, url_problem

__all__ = ["SmsChannel", "TextedTypes", "check_account", "serve"]

log = get_logger("consumers.sms")
_CHECK_TIMEOUT_S = 10.0


class TextedTypes:
    """``SMS_TYPES`` as a test on events: ``completion``, ``error_alert`` (any severity) or
    ``error_alert:critical`` (that severity only), ..."""

    def __init__(self, entries: Iterable[str]) -> None:
        self.kinds: set[EventType] = set()
        self.severities: set[str] = set()
        for entry in entries:
            kind, _, severity = entry.partition(":")
            if severity:
                self.severities.add(severity)
            else:
                self.kinds.add(EventType(kind))

    def __contains__(self, event: Event) -> bool:
        if event.type in self.kinds:
            return True
        return event.type is EventType.ERROR_ALERT and event.data.severity in self.severities  # type: ignore[union-attr]


class SmsChannel:
    """Texts an event to each phone it is owed to, through Twilio's Messages API."""

    name = "sms"

    def __init__(
        self,
        sender: Sender,
        account: TwilioAccount,
        *,
        types: TextedTypes,
        subscribers: SubscriberIndex | None = None,
    ) -> None:
        self._sender = sender
        self._account = account
        self._headers = account.headers()
        self._url = account.messages_url
        self.types = types
        self._subscribers = subscribers

    def recipients(self, event: Event) -> list[str]:
        """The event's phones and its subscriber's, for the types ``SMS_TYPES`` texts."""
        if event not in self.types:
            return []
        if self._subscribers is None:
            return list(event.phones)
        return self._subscribers.route(event, "sms", list(event.phones))

    def suppressed(self, event: Event, recipient: str) -> str | None:
        """Why ``recipient`` must not get ``event`` (its owner opted out), or None."""
        if self._subscribers is None:
            return None
        return self._subscribers.opted_out(event, "sms", recipient)

    def held_until(self, event: Event, recipient: str) -> int | None:
        """When (Unix ms) the phone's owner's quiet hours end, if this text must wait for
        that (critical alerts never do); None to send now."""
        if self._subscribers is None:
            return None
        return self._subscribers.quiet_until_ms(event, "sms", recipient)

    def rate_limit_key(self, event: Event, recipient: str) -> str:
        return recipient

    async def deliver(self, event: Event, recipient: str) -> int:
        """Send one message; the status (201), or raise RetryLater / Reject."""
        body = self._account.form(recipient, render(event))
        try:
            response = await self._sender.post(self._url, body, self._headers, refine=refine)
        except Unsubscribed as exc:
            await self._stop(event, recipient, exc.reason)
            raise
        return response.status

    async def _stop(self, event: Event, phone: str, reason: str) -> None:
        """Turn SMS off for the owner of ``phone`` (else the event's user); never at the
        cost of recording the delivery, which is final either way."""
        if self._subscribers is None:
            return
        owner = self._subscribers.owner(phone)
        user_id = owner.user_id if owner is not None else event.user_id
        if user_id is None:
            log.info("recipient unsubscribed; no subscriber to record it on", event_id=event.id)
            return
        try:
            await self._subscribers.registry.stop_channel(user_id, "sms", address=phone)
        except (RedisError, OSError) as exc:
            log.warning("SMS opt-out not recorded", user_id=user_id, error=str(exc))
            return
        log.info("SMS turned off for the subscriber", user_id=user_id, reason=reason)


async def check_account(settings: Settings) -> str:
    """``verify``: fetch the Twilio account with the configured credentials, through the
    SSRF guard; what it said in one line, or :class:`RetryLater` / :class:`Reject` (or
    :class:`~bookgen_events.errors.ConfigError`) saying what is wrong. Sends no message."""
    account = TwilioAccount.from_settings(settings)
    url = account.account_url
    problem = url_problem(url, settings.webhook_allow_private)
    if problem is not None:
        raise Reject(f"TWILIO_API_BASE refused (SSRF guard): {problem}")
    async with open_sender(settings, max_connections=1, timeout_s=_CHECK_TIMEOUT_S) as sender:
        try:
            async with sender.session.get(
                url, headers=account.headers(), allow_redirects=False
            ) as response:
                status, body = response.status, await response.content.read(MAX_RESPONSE_BYTES)
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            blocked = find_blocked(exc)
            if blocked is not None:
                raise Reject(f"TWILIO_API_BASE refused (SSRF guard): {blocked.reason}") from None
            raise RetryLater(f"{type(exc).__name__}: {exc}"[:300] or "timed out") from None
    if status == 200:
        try:
            state = json.loads(body).get("status", "?")
        except (ValueError, AttributeError):
            state = "?"
        return f"account {account.sid} answered (status {state}); no message sent"
    default = failure_for(status, {})
    raise refine(OutboundResponse(status, CIMultiDictProxy(CIMultiDict()), body), default)


def describe(account: TwilioAccount) -> dict[str, Any]:
    """What the start-up log line says of the account: never the token."""
    return {
        "api_base": account.api_base,
        "account_sid": account.sid,
        "sender": account.sender or account.messaging_service_sid,
    }


async def serve(bus: EventBus, settings: Settings, stop: asyncio.Event, **overrides: Any) -> None:
    """Run the SMS consumer group until ``stop`` (``bookgen-events consume sms``)."""
    account = TwilioAccount.from_settings(settings)
    concurrency = overrides.get("concurrency") or settings.consumer_concurrency
    subscribers = SubscriberIndex(SubscriberRegistry.for_prefix(bus.redis, settings.stream_prefix))
    log.info("sms dispatcher starting", types=json.dumps(settings.sms_types), **describe(account))
    async with (
        subscribers.kept_current(),
        open_sender(settings, max_connections=concurrency) as sender,
    ):
        channel = SmsChannel(
            sender, account, types=TextedTypes(settings.sms_types), subscribers=subscribers
        )
        await run_channel(bus, settings, channel, stop, **overrides)
