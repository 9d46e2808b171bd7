"""A subscriber's WebSocket preference (SPEC 9) on a real gateway: their own connections
skip the types they turned off, live and on resume; an operator watching the job does not."""

from __future__ import annotations

import asyncio

from websockets.asyncio.client import connect

from bookgen_events import EventBus
from bookgen_events.subscribers import SubscriberRegistry
from tests.support.events import live_progress
from tests.support.gateway import Gateway, recv_until, token


async def test_a_websocket_opt_out_mutes_only_the_users_own_connections(
    gateway: Gateway, bus: EventBus
) -> None:
    registry = SubscriberRegistry.for_prefix(bus.redis, bus.names.prefix)
    await registry.put("u1", {"preferences": {"websocket": {"types": ["completion"]}}})
    await asyncio.sleep(2.0)  # changes reach every gateway within 2 s (SPEC 9)
    mine = gateway.ws(user_id="u1", token=token(user_id="u1"))
    operator = gateway.ws(job_id="j1", token=token(jobs=("j1",)))
    done_event = {"type": "completion", "job_id": "j1", "user_id": "u1", "data": {}}
    async with connect(mine) as own, connect(operator) as ops:
        progress = await bus.emit(live_progress("j1", 50.0, user_id="u1"))
        done = await bus.emit(done_event)
        assert [m["id"] for m in await recv_until(ops, done)] == [progress, done]
        got = await recv_until(own, done)
        assert [m["id"] for m in got] == [done]
        last = got[-1]["id"]

    # Reconnecting with last_event_id: the backfill skips the muted type too.
    later_progress = await bus.emit(live_progress("j1", 80.0, user_id="u1"))
    later_done = await bus.emit({**done_event, "data": {"status": "failed"}})
    async with connect(
        gateway.ws(user_id="u1", token=token(user_id="u1"), last_event_id=last)
    ) as own:
        assert [m["id"] for m in await recv_until(own, later_done)] == [later_done]
    assert later_progress
