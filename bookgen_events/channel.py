"""The seam a delivery channel implements; the consumer runtime does everything else.

A channel says who should get an event (``recipients``), how to deliver it to one of them
(``deliver``, raising :class:`~bookgen_events.errors.RetryLater` or
:class:`~bookgen_events.errors.Reject`), and what its rate-limit key is. A channel that
knows of opt-outs also has ``suppressed(event, recipient) -> str | None``: the reason that
recipient must not get the event (recorded as a final ``suppressed`` outcome, never
attempted), or None; one that knows of quiet hours has ``held_until(event, recipient) ->
int | None``: when (Unix ms) that delivery may be made, or None for now. A channel whose recipients carry limits of their own also has
``rate_limit_windows(recipient, default) -> windows``: that recipient's
:data:`~bookgen_events.ratelimit.Window` list (an endpoint's ``rate_limit_per_minute``, or
Slack's and Discord's defaults), else ``default``. Reading, acking,
reclaiming, retry scheduling, dead-lettering and outcomes belong to
:class:`~bookgen_events.consumer.Consumer`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from .errors import Reject, RetryLater
from .events import Event

__all__ = ["CHANNELS", "DEAD_LETTER_GROUPS", "GROUP_CHANNELS", "Channel", "Reject", "RetryLater"]

#: Every delivery channel, as the log's ``delivery_method`` names it. The gateway delivers
#: ``websocket`` itself; each of the others is a consumer group of the same name.
CHANNELS = ("websocket", "webhook", "email", "sms")
#: The channels delivered by a consumer group: each retries, dead-letters and replays alone.
GROUP_CHANNELS = ("webhook", "email", "sms")
#: Every consumer group that can dead-letter: the channels', and the logger's poison entries.
DEAD_LETTER_GROUPS = (*GROUP_CHANNELS, "logger")


@runtime_checkable
class Channel(Protocol):
    """One delivery channel (webhook, email, ...); ``name`` is also its consumer group."""

    name: str

    def recipients(self, event: Event) -> Sequence[str]:
        """Who this channel delivers ``event`` to; empty means nothing to do."""
        ...

    def rate_limit_key(self, event: Event, recipient: str) -> str | None:
        """The key limits are counted under (usually the recipient), or None for no limit."""
        ...

    async def deliver(self, event: Event, recipient: str) -> int | None:
        """Deliver once; return a status code if there is one. Raise RetryLater or Reject."""
        ...
