"""Junk written straight into the event stream while a real webhook consumer keeps running.

Every junk entry must be dead-lettered as poison with a reason, every valid event around it
delivered to a real loopback receiver, and the consumer must never die.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from redis.asyncio import Redis

from bookgen_events import EventBus, Settings
from bookgen_events.consumer import Consumer
from bookgen_events.outcomes import DeadLetter
from consumers.webhook import open_channel
from tests.support.waits import eventually
from tests.support.webhooks import Receiver

from .profiles import FUZZ, FUZZ_SLOW
from .strategies import has_lone_surrogate, json_values, nasty_text


def _without_type(value: Any) -> Any:
    # An object without "type" can never be a valid event: junk by construction.
    return {k: v for k, v in value.items() if k != "type"} if isinstance(value, dict) else value


def _in_progress_range(text: str) -> bool:
    try:
        return 0 <= float(text) <= 100
    except ValueError:
        return False


# Redis stores bytes: junk here is any UTF-8 (raw non-UTF-8 bytes have their own test).
_text = nasty_text.filter(lambda t: not has_lone_surrogate(t))
_not_event_json = st.text(max_size=60).filter(lambda t: "type" not in t)
junk_entries = st.one_of(
    # random field maps without the "event" field
    st.dictionaries(_text.filter(lambda k: k != "event"), _text, min_size=1, max_size=5),
    # invalid JSON
    st.builds(lambda t: {"event": "{" + t}, _not_event_json),
    st.builds(lambda t: {"event": t}, st.sampled_from(["", "nul", "[", "{'a': 1}", "\x00"])),
    # valid JSON, wrong shapes
    st.builds(lambda v: {"event": json.dumps(_without_type(v))}, json_values),
    st.builds(
        lambda p, extra: {
            "event": json.dumps({"type": "progress_update", "data": {"progress": p}}),
            **extra,
        },
        st.one_of(
            st.floats(min_value=100.001),
            st.floats(max_value=-0.001),
            _text.filter(lambda t: not _in_progress_range(t)),
        ),
        st.dictionaries(st.sampled_from(["x", "event_id", "type"]), _text, max_size=2),
    ),
    st.builds(
        lambda kind: {"event": json.dumps({"type": kind, "data": {"not": "a field"}})},
        st.sampled_from(["completion", "error_alert", "admin_alert", "status_change"]),
    ),
    # huge values
    st.sampled_from(
        [
            {"event": "x" * 1_000_000},
            {"event": "[" * 100_000},
            {"event": '{"type": "completion", "data": ' + "[" * 50_000},
            {f"f{i}": "v" * 100 for i in range(2000)},
        ]
    ),
)


@pytest.fixture
async def consumer(
    bus: EventBus, webhook_settings: Settings
) -> AsyncIterator[tuple[Consumer, asyncio.Task[None]]]:
    """The real consumer loop with the real webhook channel, shared by every example."""
    async with open_channel(webhook_settings) as channel:
        worker = Consumer.from_settings(bus, channel, webhook_settings)
        task = asyncio.create_task(worker.run())
        try:
            yield worker, task
        finally:
            worker.stop()
            await asyncio.wait_for(task, 15)


def _event(receiver: Receiver) -> dict[str, Any]:
    return {
        "id": uuid.uuid4().hex,
        "type": "progress_update",
        "job_id": "7",
        "data": {"progress": 5.0},
        "webhook_url": receiver.url("fuzz"),
    }


async def _settled(
    bus: EventBus, receiver: Receiver, valid_ids: list[str], junk_ids: list[str]
) -> list[DeadLetter]:
    dlq = bus.names.dlq("webhook")

    async def done() -> bool:
        seen = {r.webhook_id for r in receiver.at("fuzz")}
        dead = {f.get("entry_id") for _, f in await bus.redis.xrange(dlq)}
        return set(valid_ids) <= seen and set(junk_ids) <= dead

    await eventually(done, within=10, what="valid events delivered and junk dead-lettered")
    return [DeadLetter.from_fields(f) for _, f in await bus.redis.xrange(dlq)]


@FUZZ
@given(junk=st.lists(junk_entries, min_size=1, max_size=4))
async def test_junk_entries_are_dead_lettered_and_valid_ones_delivered(
    bus: EventBus,
    receiver: Receiver,
    consumer: tuple[Consumer, asyncio.Task[None]],
    junk: list[dict[str, str]],
) -> None:
    """Each junk entry becomes a poison dead letter with a reason; the events around it arrive; the consumer lives."""
    await _check_junk(bus, receiver, consumer, junk)


@pytest.mark.slow
@pytest.mark.timeout(900)
@FUZZ_SLOW
@given(junk=st.lists(junk_entries, min_size=1, max_size=4))
async def test_junk_entries_fuzz_long(
    bus: EventBus,
    receiver: Receiver,
    consumer: tuple[Consumer, asyncio.Task[None]],
    junk: list[dict[str, str]],
) -> None:
    """The same property as the default run, with many more examples."""
    await _check_junk(bus, receiver, consumer, junk)


async def _check_junk(
    bus: EventBus,
    receiver: Receiver,
    consumer: tuple[Consumer, asyncio.Task[None]],
    junk: list[dict[str, str]],
) -> None:
    _, task = consumer
    first, last = _event(receiver), _event(receiver)
    await bus.emit(first)
    junk_ids = [await bus.redis.xadd(bus.names.events, fields) for fields in junk]  # type: ignore[arg-type]
    await bus.emit(last)
    letters = await _settled(bus, receiver, [first["id"], last["id"]], junk_ids)
    for letter in (d for d in letters if d.entry_id in junk_ids):
        assert letter.poison and letter.reason.strip()
        assert letter.channel == "webhook"
    assert not any(d.entry_id not in junk_ids and not d.poison for d in letters)
    assert not task.done(), "the consumer died"


async def test_non_utf8_entry_is_dead_lettered_and_the_consumer_lives(
    bus: EventBus, redis_url: str, receiver: Receiver, webhook_settings: Settings
) -> None:
    """An entry of raw non-UTF-8 bytes (a foreign producer) is dead-lettered like any other junk."""
    raw = Redis.from_url(redis_url)  # a bytes client, as a producer in another language
    async with open_channel(webhook_settings) as channel:
        worker = Consumer.from_settings(bus, channel, webhook_settings)
        task = asyncio.create_task(worker.run())
        try:
            await _non_utf8_round(bus, raw, receiver, task)
        finally:
            worker.stop()
            await asyncio.gather(task, return_exceptions=True)
            await raw.aclose()


async def _non_utf8_round(
    bus: EventBus, raw: Redis, receiver: Receiver, task: asyncio.Task[None]
) -> None:
    first, last = _event(receiver), _event(receiver)
    await bus.emit(first)
    junk_id = (await raw.xadd(bus.names.events, {b"event": b"\xff\xfe{junk"})).decode()
    await bus.emit(last)
    try:
        await _settled(bus, receiver, [first["id"], last["id"]], [junk_id])
    finally:
        assert not task.done(), f"the consumer died: {task.exception()!r}"
