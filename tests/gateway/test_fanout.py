"""The fan-out: one broadcast read of the stream, routed to subscribers through the job and
user indexes, on a real Redis.

Subscribers are real :class:`Subscriber` objects writing to :class:`tests.support.sink.Sink`
(the framed transport's contract); entries are real events read back with XREAD. The same
routing through real WebSocket clients is in ``test_routing.py``.
"""

from __future__ import annotations

from collections.abc import Callable

from bookgen_events import EventBus
from gateway.fanout import Fanout
from gateway.subscriber import Subscriber
from tests.support.events import live_progress
from tests.support.sink import Sink
from tests.support.waits import eventually


async def no_text(text: str) -> None:
    raise AssertionError("the framed path never sends text")


def refuse_close(sub: Subscriber, code: int, reason: str) -> None:
    raise AssertionError(f"closed with {code}: {reason}")


def watcher(
    *,
    jobs: tuple[str, ...] = (),
    users: tuple[str, ...] = (),
    maxsize: int = 100,
    closer: Callable[[Subscriber, int, str], None] = refuse_close,
) -> tuple[Subscriber, Sink]:
    """A live subscriber and the sink it writes to."""
    sink = Sink()
    sub = Subscriber(
        jobs=jobs, users=users, maxsize=maxsize, sink=sink, send_text=no_text, closer=closer
    )
    return sub, sink


async def test_routes_by_job_and_by_user(bus: EventBus) -> None:
    """Each subscriber gets the events of its job or of its user, in stream order, and an
    event matching both its job and its user once."""
    fanout = Fanout(bus)
    job, job_sink = watcher(jobs=("j1",))
    user, user_sink = watcher(users=("u1",))
    both, both_sink = watcher(jobs=("j1",), users=("u1",))
    other, other_sink = watcher(jobs=("j2",))
    for sub in (job, user, both, other):
        fanout.subscribe(sub)
    e1 = await bus.emit(live_progress("j1", 10.0, user_id="u1"))  # job and user
    e2 = await bus.emit(live_progress("j9", 20.0, user_id="u1"))  # user only
    e3 = await bus.emit(live_progress("j1", 30.0))  # job only
    await bus.emit(live_progress("j3", 40.0, user_id="u3"))  # nobody's
    entries = await bus.read("0-0")
    assert fanout.dispatch(entries) == 2 + 2 + 3  # job, user, both; nothing for j2
    assert job_sink.ids() == [e1, e3]
    assert user_sink.ids() == [e1, e2]
    assert both_sink.ids() == [e1, e2, e3]
    assert other_sink.ids() == [] and other.pending == []


async def test_one_entry_is_framed_once_for_every_matching_subscriber(bus: EventBus) -> None:
    """One entry read once reaches every subscriber of its job as the very same bytes."""
    fanout = Fanout(bus)
    watchers = [watcher(jobs=("j1",)) for _ in range(3)]
    for sub, _ in watchers:
        fanout.subscribe(sub)
    stream_id = await bus.emit(live_progress("j1"))
    assert fanout.dispatch(await bus.read("0-0")) == 3
    (first,) = watchers[0][1].writes
    for _, sink in watchers:
        assert sink.writes == [first] and sink.writes[0] is first
    assert watchers[0][1].ids() == [stream_id]


async def test_a_batch_is_one_write_per_subscriber_shared_when_the_messages_match(
    bus: EventBus,
) -> None:
    """A batch of entries is one write per subscriber; subscribers that get the same messages
    share the same joined bytes, others get their own."""
    fanout = Fanout(bus)
    a, a_sink = watcher(jobs=("j1",))
    b, b_sink = watcher(jobs=("j1",))
    c, c_sink = watcher(jobs=("j1",), users=("u1",))
    for sub in (a, b, c):
        fanout.subscribe(sub)
    j1_first = await bus.emit(live_progress("j1", 1.0))
    u1_only = await bus.emit(live_progress("j2", user_id="u1"))
    j1_rest = [await bus.emit(live_progress("j1", pct)) for pct in (2.0, 3.0)]
    assert fanout.dispatch(await bus.read("0-0")) == 3 + 3 + 4
    assert len(a_sink.writes) == len(b_sink.writes) == len(c_sink.writes) == 1
    assert a_sink.writes[0] is b_sink.writes[0]
    assert a_sink.ids() == [j1_first, *j1_rest]
    assert c_sink.ids() == [j1_first, u1_only, *j1_rest]


async def test_unsubscribe_stops_delivery_and_empties_the_indexes(bus: EventBus) -> None:
    """An unsubscribed connection gets nothing more, its index entries go, and the fan-out is
    idle again once nobody is left."""
    fanout = Fanout(bus)
    leaving, leaving_sink = watcher(jobs=("j1",), users=("u1",))
    staying, staying_sink = watcher(jobs=("j1",))
    fanout.subscribe(leaving)
    fanout.subscribe(staying)
    assert not fanout.idle.is_set()
    assert fanout.stats() == {
        "total_users": 1, "total_user_connections": 1,
        "total_jobs": 1, "total_job_connections": 2,
    }  # fmt: skip
    fanout.unsubscribe(leaving)
    stream_id = await bus.emit(live_progress("j1", user_id="u1"))
    fanout.dispatch(await bus.read("0-0"))
    assert leaving_sink.writes == [] and staying_sink.ids() == [stream_id]
    assert "u1" not in fanout.by_user and fanout.by_job["j1"] == {staying}
    fanout.unsubscribe(staying)
    assert fanout.by_job == {} and fanout.by_user == {} and fanout.idle.is_set()
    fanout.unsubscribe(staying)  # twice (a close racing the handler's cleanup) is harmless


async def test_dispatch_moves_the_position_even_when_nobody_listens(bus: EventBus) -> None:
    """Every batch moves the position a new subscriber starts after, matched or not."""
    fanout = Fanout(bus)
    await bus.emit(live_progress("j1"))
    last = await bus.emit(live_progress("j2"))
    assert fanout.dispatch(await bus.read("0-0")) == 0
    assert fanout.position == last
    sub, _ = watcher(jobs=("j1",))
    assert fanout.subscribe(sub) == last


async def test_an_undecodable_entry_is_skipped_and_the_rest_delivered(bus: EventBus) -> None:
    """A junk entry in the stream is skipped; the events around it still reach their subscriber."""
    fanout = Fanout(bus)
    sub, sink = watcher(jobs=("j1",))
    fanout.subscribe(sub)
    before = await bus.emit(live_progress("j1", 1.0))
    await bus.redis.xadd(bus.names.events, {"event": "{not json"})
    after = await bus.emit(live_progress("j1", 2.0))
    assert fanout.dispatch(await bus.read("0-0")) == 2
    assert sink.ids() == [before, after]


async def test_a_subscriber_closed_mid_dispatch_does_not_disturb_the_others(
    bus: EventBus,
) -> None:
    """Subscribers that overflow are closed with 1013 and unindexed during the dispatch itself;
    the others of the same job still get every event."""
    fanout = Fanout(bus)
    closes: list[tuple[Subscriber, int]] = []

    def close(sub: Subscriber, code: int, reason: str) -> None:
        closes.append((sub, code))
        fanout.unsubscribe(sub)  # at once, as a connection's cleanup might

    slow = [watcher(jobs=("j1",), maxsize=1, closer=close) for _ in range(2)]
    healthy, healthy_sink = watcher(jobs=("j1",))
    for sub, sink in slow:
        sink.stall()
        fanout.subscribe(sub)
    fanout.subscribe(healthy)
    ids = [await bus.emit(live_progress("j1", float(i))) for i in range(2)]
    for entry in await bus.read("0-0"):  # one entry per dispatch: the direct path
        fanout.dispatch([entry])
    assert sorted(code for _, code in closes) == [1013, 1013]
    assert {s for s, _ in closes} == {s for s, _ in slow}
    assert fanout.by_job["j1"] == {healthy}
    assert healthy_sink.ids() == ids


async def test_the_reader_starts_at_the_end_and_delivers_live(bus: EventBus) -> None:
    """The running reader skips what was in the stream before it started and delivers what
    comes after to the subscribers of the moment; stop() ends it."""
    await bus.emit(live_progress("j1", 1.0))  # history: not the reader's to send
    fanout = Fanout(bus, block_ms=50)
    await fanout.start()
    try:
        assert fanout.running
        sub, sink = watcher(jobs=("j1",))
        fanout.subscribe(sub)
        live = [await bus.emit(live_progress("j1", float(i))) for i in range(2, 5)]
        await eventually(lambda: sink.ids() == live, 5, "the live events")
    finally:
        await fanout.stop()
    assert not fanout.running
