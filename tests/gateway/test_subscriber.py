"""The subscriber: one connection's bounded queue between the fan-out and its socket.

The socket side is :class:`tests.support.sink.Sink` (the framed transport's contract) or a
recording ``send_text`` (the plain-ASGI path); messages are built from real events.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable

from bookgen_events import Event
from gateway.subscriber import Message, Subscriber, matches, parse_stream_id
from tests.support.sink import Sink
from tests.support.waits import eventually

OVERFLOW = (1013, "client too slow: send queue full")


def message(ms: int, job: str = "j", user: str | None = None) -> Message:
    event = Event(type="progress_update", job_id=job, user_id=user, data={"progress": 1})
    return Message.from_event(f"{ms}-0", event)


def messages(*ms: int) -> dict[int, Message]:
    """One message per stream id ``ms-0``, each built once (a message is built per event)."""
    return {n: message(n) for n in ms}


def frames(*messages: Message) -> bytes:
    return b"".join(m.frame for m in messages)


class Closes(list[tuple[int, str]]):
    """The ``closer`` seam: records each close a subscriber asks for."""

    def __call__(self, sub: Subscriber, code: int, reason: str) -> None:
        self.append((code, reason))


async def no_text(text: str) -> None:
    raise AssertionError("the framed path never sends text")


def subscriber(
    sink: Sink | None,
    closes: Closes,
    *,
    maxsize: int = 10,
    buffering: bool = False,
    send_text: Callable[[str], object] = no_text,
) -> Subscriber:
    return Subscriber(
        jobs=["j"], users=[], maxsize=maxsize, sink=sink, send_text=send_text,  # type: ignore[arg-type]
        closer=closes, buffering=buffering,
    )  # fmt: skip


async def settle() -> None:
    """Let tasks the code under test scheduled run a few steps."""
    for _ in range(5):
        await asyncio.sleep(0)


async def test_a_socket_that_keeps_up_is_written_at_once_with_the_shared_bytes() -> None:
    """When the socket keeps up, the fan-out's joined bytes go straight to it, nothing queued."""
    sink, closes = Sink(), Closes()
    sub = subscriber(sink, closes)
    batch = [message(1), message(2)]
    joined = frames(*batch)
    sub.deliver(batch, joined)
    assert sink.writes[0] is joined  # the very bytes shared with other subscribers
    assert sub.pending == [] and closes == []
    assert sink.ids() == ["1-0", "2-0"]


async def test_overflow_closes_with_1013_without_awaiting() -> None:
    """A full queue closes the connection with 1013 inside ``deliver``, which never awaits,
    and drops everything after it, queued messages included."""
    assert not inspect.iscoroutinefunction(Subscriber.deliver)
    sink, closes = Sink(writable=False), Closes()
    sub = subscriber(sink, closes, maxsize=3)
    sub.deliver([message(1), message(2)], frames(message(1), message(2)))
    sub.deliver([message(3)], message(3).frame)
    assert len(sub.pending) == 3 and closes == []  # at the bound: still open
    sub.deliver([message(4)], message(4).frame)
    assert closes == [OVERFLOW] and sub.closed  # no await happened in between
    sub.deliver([message(5)], message(5).frame)
    assert closes == [OVERFLOW] and len(sub.pending) == 3
    sink.drain()
    await settle()
    assert sink.writes == []  # the drain was cancelled with the connection


async def test_a_stalled_socket_gets_its_queue_in_one_write_once_it_drains() -> None:
    """Messages queued while the socket is stalled go out as one write, in order, when it
    drains; after that, deliveries are written directly again."""
    sink, closes = Sink(writable=False), Closes()
    sub = subscriber(sink, closes)
    m = messages(1, 2, 3, 4)
    sub.deliver([m[1]], m[1].frame)
    sub.deliver([m[2], m[3]], frames(m[2], m[3]))
    await settle()
    assert sink.writes == [] and len(sub.pending) == 3
    sink.drain()
    await eventually(lambda: sink.writes, 2, "the queue to be flushed")
    assert sink.writes == [frames(m[1], m[2], m[3])]
    assert sub.pending == []
    sub.deliver([m[4]], m[4].frame)
    assert sink.writes[-1] is m[4].frame and sub.pending == []
    assert closes == []


async def test_buffering_holds_live_messages_and_go_live_drops_what_the_backfill_sent() -> None:
    """While a resume backfills, live messages wait; ``go_live(position)`` drops those the
    backfill already sent (ids compared as numbers, 9 < 10) and flushes the rest after it."""
    sink, closes = Sink(), Closes()
    sub = subscriber(sink, closes, buffering=True)
    for ms in (8, 9, 10, 11):  # live while buffering; 8 and 9 overlap the backfill
        sub.deliver([message(ms)], message(ms).frame)
    await settle()
    assert sink.writes == []
    for ms in (7, 8, 9):  # the backfill, up to the position the subscription started at
        await sub.send_now(message(ms))
    sub.go_live([parse_stream_id("9-0")])
    await eventually(lambda: len(sink.ids()) == 5, 2, "the live queue to be released")
    assert sink.ids() == ["7-0", "8-0", "9-0", "10-0", "11-0"]
    assert closes == []


async def test_the_plain_asgi_path_sends_each_message_as_text_in_order() -> None:
    """Without a framed sink, queued messages are sent one by one with ``send_text``, in order."""
    sent: list[str] = []

    async def send_text(text: str) -> None:
        await asyncio.sleep(0)
        sent.append(text)

    sub = subscriber(None, Closes(), send_text=send_text)
    m = messages(1, 2, 3)
    sub.deliver([m[1], m[2]], frames(m[1], m[2]))
    sub.deliver([m[3]], m[3].frame)
    await eventually(lambda: len(sent) == 3, 2, "three texts")
    assert sent == [m[1].text, m[2].text, m[3].text]


async def test_send_now_waits_for_a_writable_socket_and_skips_a_closed_one() -> None:
    """A backfill or control message waits for the socket to drain, and is not written once
    the socket has closed."""
    sink = Sink(writable=False)
    sub = subscriber(sink, Closes())
    sending = asyncio.create_task(sub.send_now(message(1)))
    await settle()
    assert not sending.done() and sink.writes == []
    sink.drain()
    await sending
    assert sink.ids() == ["1-0"]
    sink.open = False
    await sub.send_now(message(2))
    assert sink.ids() == ["1-0"]


async def test_shut_closes_once_and_stop_closes_nothing() -> None:
    """``shut`` asks the closer once however often it is called; ``stop`` (the handler's own
    cleanup) only stops delivering."""
    sink, closes = Sink(), Closes()
    sub = subscriber(sink, closes)
    sub.shut(1001, "going away")
    sub.shut(1013, "late")
    assert closes == [(1001, "going away")]
    quiet, quiet_closes = subscriber(Sink(), Closes()), Closes()
    quiet.closer = quiet_closes
    quiet.stop()
    quiet.deliver([message(1)], message(1).frame)
    assert quiet.closed and quiet_closes == [] and quiet.sink.writes == []


def test_a_backfilled_event_matches_by_job_or_by_user() -> None:
    """``matches`` keeps a backfilled event when its job or its user is subscribed."""
    sub = Subscriber(
        jobs=["j1"], users=["u1"], maxsize=1, sink=None, send_text=no_text,
        closer=Closes(),
    )  # fmt: skip

    def event(job: str | None, user: str | None) -> Event:
        return Event(type="progress_update", job_id=job, user_id=user, data={"progress": 1})

    assert matches(sub, event("j1", None)) and matches(sub, event("j9", "u1"))
    assert not matches(sub, event("j9", "u9")) and not matches(sub, event(None, None))


def test_stream_ids_parse_to_comparable_pairs() -> None:
    """Stream ids become (ms, seq) pairs, a bare ms meaning seq 0, so they order numerically."""
    assert parse_stream_id("1700000000000-3") == (1700000000000, 3)
    assert parse_stream_id("5") == (5, 0)
    assert parse_stream_id("10-0") > parse_stream_id("9-9")
