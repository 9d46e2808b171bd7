"""Resume with last_event_id: exact backfill-to-live switch, and resync_required when trimmed."""

from __future__ import annotations

import asyncio
import contextlib
import json

from websockets.asyncio.client import connect

from bookgen_events import EventBus
from gateway.fanout import Fanout
from gateway.subscriber import Subscriber
from gateway.websocket import resume
from tests.support.events import live_progress
from tests.support.gateway import Gateway, recv_json, recv_until, token
from tests.support.sink import Sink
from tests.support.waits import eventually

from .test_fanout import no_text, refuse_close


async def test_reconnects_under_concurrent_emits_lose_and_repeat_nothing(
    gateway: Gateway, bus: EventBus
) -> None:
    """A client dropping and resuming repeatedly while events pour in sees every one once, in order."""
    total = 400
    url = lambda **p: gateway.ws(job_id="r", token=token(jobs=("r",)), **p)  # noqa: E731
    emitted: list[str] = []

    async def produce() -> None:
        for i in range(total):
            emitted.append(await bus.emit(live_progress("r", i % 100)))
            await bus.emit(live_progress("other"))  # interleaved noise the backfill must skip
            if i % 25 == 0:
                await asyncio.sleep(0)

    seen: list[str] = []
    async with connect(url()) as ws:  # subscribed before the first emit
        producer = asyncio.create_task(produce())
        seen.append((await recv_json(ws))["id"])
    reconnects = 0
    while not producer.done() or not seen or seen[-1] != emitted[-1]:
        async with connect(url(last_event_id=seen[-1])) as ws:
            reconnects += 1
            # Read a few, then drop mid-stream (backfill or live: whichever is under way).
            with contextlib.suppress(TimeoutError):
                for _ in range(15):
                    seen.append((await recv_json(ws, within=1.0 if producer.done() else 5.0))["id"])
                    if producer.done() and seen[-1] == emitted[-1]:
                        break
    await producer
    assert reconnects >= 5
    assert seen == emitted


async def test_resume_backfills_missed_events_then_goes_live(
    gateway: Gateway, bus: EventBus
) -> None:
    """Events emitted while disconnected arrive first, then live ones, in stream order."""
    base = await bus.emit(live_progress("b", 1))
    missed = [await bus.emit(live_progress("b", p)) for p in (2, 3, 4)]
    await bus.emit(live_progress("elsewhere"))
    async with connect(gateway.ws(job_id="b", last_event_id=base, token=token(jobs=("b",)))) as ws:
        live = await bus.emit(live_progress("b", 5))
        got = await recv_until(ws, live)
    assert [m["id"] for m in got] == [*missed, live]
    assert [m["progress"] for m in got] == [2.0, 3.0, 4.0, 5.0]


async def test_trimmed_last_event_id_gets_resync_required_then_live(
    gateway: Gateway, bus: EventBus
) -> None:
    """An id whose successors were trimmed away yields {"type": "resync_required"}, then live."""
    auth = token(jobs=("t",))
    async with connect(gateway.ws(job_id="t", token=auth)) as watcher:
        first = await bus.emit(live_progress("t", 1))
        for p in range(2, 30):
            last = await bus.emit(live_progress("t", p))
        # Trimmed once the gateway's reader has passed them all (a live client has the
        # last), or it would hand the survivors of the trim to the resumed client live.
        await recv_until(watcher, last)
    await bus.redis.xtrim(bus.names.events, maxlen=5, approximate=False)
    async with connect(gateway.ws(job_id="t", last_event_id=first, token=token(jobs=("t",)))) as ws:
        assert json.loads(await ws.recv()) == {"type": "resync_required"}
        live = await bus.emit(live_progress("t", 99))
        assert (await recv_json(ws))["id"] == live


async def test_up_to_date_last_event_id_needs_no_resync(gateway: Gateway, bus: EventBus) -> None:
    """Resuming from the newest id (nothing trimmed after it) sends nothing but live events."""
    for p in range(10):
        await bus.emit(live_progress("u", p))
    await bus.redis.xtrim(bus.names.events, maxlen=3, approximate=False)
    newest = await bus.emit(live_progress("u", 50))
    async with connect(
        gateway.ws(job_id="u", last_event_id=newest, token=token(jobs=("u",)))
    ) as ws:
        live = await bus.emit(live_progress("u", 60))
        assert (await recv_json(ws))["id"] == live


async def test_a_client_ahead_of_this_gateways_reader_gets_nothing_twice(bus: EventBus) -> None:
    """A client resuming with an id this gateway's reader has not dispatched yet (it was on
    another replica, or this one has just started) is held until the reader passes it: what
    it had is not sent again, what follows is. The real fan-out, subscriber and stream."""
    ids = [await bus.emit(live_progress("a", float(i))) for i in range(6)]
    entries = await bus.read("0-0")
    fanout = Fanout(bus)
    fanout.dispatch(entries[:2])  # this gateway's reader is at ids[1]
    sink = Sink()
    sub = Subscriber(
        jobs=("a",), users=(), maxsize=100, sink=sink, send_text=no_text, closer=refuse_close,
        buffering=True,
    )  # fmt: skip
    position = fanout.subscribe(sub)
    resuming = asyncio.create_task(
        resume(sub, ids[3], position, bus, 100, reader_at=fanout.positions.__getitem__)
    )
    await asyncio.sleep(0.1)
    assert not resuming.done()  # held: the reader has not reached ids[3]
    fanout.dispatch(entries[2:])  # the reader reads on
    await asyncio.wait_for(resuming, 5)
    await eventually(lambda: len(sink.ids()) >= 2)
    await asyncio.sleep(0.05)
    assert sink.ids() == ids[4:]
