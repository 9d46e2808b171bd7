"""What a connection receives and holds: :class:`Message` (framed once) and :class:`Subscriber`.

A subscriber's queue is bounded; delivery never awaits, so the fan-out never waits for a
slow socket: it writes when the socket keeps up, queues when it does not, and closes the
connection with 1013 when the queue is full.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from bookgen_events.events import Event
from bookgen_events.logs import get_logger

from .cursor import StreamId, parse_stream_id
from .protocol import encode_text_frame

__all__ = ["Message", "StreamId", "Subscriber", "matches", "parse_stream_id"]

log = get_logger("gateway.subscriber")


@dataclass(frozen=True, slots=True, eq=False)  # identity hash: cheap batch grouping
class Message:
    """One event as every client receives it: JSON text and its ready-made WebSocket frame;
    ``id`` is its entry's position in partition ``partition``'s stream."""

    id: StreamId
    text: str
    frame: bytes
    partition: int = 0

    @classmethod
    def of(cls, stream_id: str, payload: dict[str, Any], partition: int = 0) -> Message:
        text = json.dumps(payload, separators=(",", ":"), ensure_ascii=False)
        return cls(
            parse_stream_id(stream_id) if stream_id else (0, 0),
            text,
            encode_text_frame(text),
            partition,
        )

    @classmethod
    def from_event(
        cls, stream_id: str, event: Event, *, cursor: str | None = None, partition: int = 0
    ) -> Message:
        """``cursor``: the resume id the client sees (:mod:`gateway.cursor`); by default
        the stream id (one partition)."""
        return cls.of(stream_id, {"id": cursor or stream_id, **event.flat()}, partition)


class Subscriber:
    """A connection's subscriptions and its bounded outgoing queue.

    ``deliver`` is called by the fan-out and never awaits: it writes straight to the socket
    when it keeps up, else queues (joined into one write later) and closes on overflow.
    While ``buffering`` (a resume is backfilling), live messages wait in the queue.
    """

    __slots__ = (
        "_drain",
        "buffering",
        "closed",
        "closer",
        "jobs",
        "maxsize",
        "pending",
        "send_text",
        "sink",
        "users",
    )

    def __init__(
        self,
        *,
        jobs: Iterable[str],
        users: Iterable[str],
        maxsize: int,
        sink: Any | None,
        send_text: Callable[[str], Awaitable[None]],
        closer: Callable[[Subscriber, int, str], None],
        buffering: bool = False,
    ) -> None:
        self.jobs = frozenset(jobs)
        self.users = frozenset(users)
        self.maxsize = maxsize
        self.sink = sink  # FramedWebSocketProtocol, or None for plain ASGI sends
        self.send_text = send_text
        self.closer = closer  # closes the socket without awaiting
        self.buffering = buffering
        self.pending: list[Message] = []
        self.closed = False
        self._drain: asyncio.Task[None] | None = None

    def deliver(self, messages: list[Message], frames: bytes) -> None:
        """Hand over ``messages`` (``frames`` = their frames joined, shared between clients)."""
        if self.closed:
            return
        if not self.pending and not self.buffering and self.sink is not None:
            if self.sink.try_write(frames):
                return
        if len(self.pending) + len(messages) > self.maxsize:
            self.shut(1013, "client too slow: send queue full")
            return
        self.pending += messages
        self._kick()

    def _kick(self) -> None:
        if not self.buffering and self.pending and (self._drain is None or self._drain.done()):
            self._drain = asyncio.get_running_loop().create_task(self._drain_pending())

    async def _drain_pending(self) -> None:
        try:
            while self.pending and not self.closed:
                if self.sink is not None:
                    if not await self.sink.wait_writable():
                        return
                    batch, self.pending = self.pending, []
                    self.sink.try_write(b"".join(m.frame for m in batch))
                else:
                    message = self.pending.pop(0)
                    await self.send_text(message.text)
        except Exception as exc:  # the client went away mid-send; its handler cleans up
            log.debug("drain stopped", error=repr(exc))

    async def send_now(self, message: Message) -> None:
        """Send one message directly (backfill, control messages), in order."""
        if self.sink is not None:
            if await self.sink.wait_writable():
                self.sink.try_write(message.frame)
        else:
            await self.send_text(message.text)

    def go_live(self, after: Sequence[StreamId]) -> None:
        """End buffering: drop queued messages already sent by the backfill (at or before
        ``after``, one position per partition), flush the rest."""
        self.pending = [m for m in self.pending if m.id > after[m.partition]]
        self.buffering = False
        self._kick()

    def shut(self, code: int, reason: str) -> None:
        """Stop delivering and close the socket with ``code`` (1013 overflow, 1001 shutdown)."""
        if not self.closed:
            self.stop()
            self.closer(self, code, reason)

    def stop(self) -> None:
        self.closed = True
        if self._drain is not None:
            self._drain.cancel()


def matches(sub: Subscriber, event: Event) -> bool:
    """Whether a backfilled event belongs to ``sub``'s subscriptions."""
    return (event.job_id is not None and event.job_id in sub.jobs) or (
        event.user_id is not None and event.user_id in sub.users
    )
