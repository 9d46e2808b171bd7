"""A scheduled event seen by a WebSocket client and a webhook receiver, not before it is due
(SPEC 11): real gateway, real webhook dispatcher, real receiver, a mover in this process."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

from pydantic import SecretStr
from websockets.asyncio.client import connect

from bookgen_events import EventBus, Settings
from bookgen_events.idempotency import HELD
from bookgen_events.scheduled_events import keep_moving
from tests.support.events import progress
from tests.support.gateway import JWT_SECRET, StartGateway, recv_json, token
from tests.support.waits import eventually
from tests.support.webhooks import Receiver, running


async def test_scheduled_event_reaches_websocket_and_webhook_when_due_in_stream_order(
    bus: EventBus,
    start_gateway: StartGateway,
    receiver: Receiver,
    webhook_settings: Settings,
) -> None:
    """Emitted 1.5 s ahead between two immediate events: both channels see it no earlier
    than deliver_at (wall clocks read on arrival), and the WebSocket sees it after the
    second immediate event, as its place in the stream says."""
    settings = webhook_settings.model_copy(
        update={"websocket_jwt_secret": SecretStr(JWT_SECRET), "websocket_auth": "jwt"}
    )
    gateway = await start_gateway(settings)
    stop = asyncio.Event()
    mover = asyncio.create_task(keep_moving(bus.scheduled_events, stop))
    url = receiver.url("sched")
    try:
        async with (
            running(bus, settings),
            connect(gateway.ws(job_id="sched", token=token(jobs=("sched",)))) as ws,
        ):
            deliver_at = datetime.now(UTC) + timedelta(seconds=1.5)
            due = deliver_at.timestamp()
            # The receiver stamps arrivals with the monotonic clock: the same instant there.
            due_monotonic = time.monotonic() + (due - time.time())
            first = await bus.emit(progress("sched", url, data={"progress": 1}))
            held = await bus.emit(
                progress("sched", url, data={"progress": 2}, deliver_at=deliver_at)
            )
            second = await bus.emit(progress("sched", url, data={"progress": 3}))
            assert held == HELD and first and second
            seen = []
            for _ in range(3):
                message = await recv_json(ws, within=10)
                seen.append((message["progress"], time.time()))
            assert [p for p, _ in seen] == [1.0, 3.0, 2.0]
            assert seen[2][1] >= due, f"WebSocket got it {due - seen[2][1]:.3f} s early"
            assert seen[2][1] - due < 1.0

            async def delivered() -> bool:
                return len(receiver.at("sched")) == 3

            await eventually(delivered, 10, "three webhook deliveries")
            late = [r for r in receiver.at("sched") if b'"progress":2.0' in r.body]
            assert len(late) == 1 and late[0].at >= due_monotonic
    finally:
        stop.set()
        await mover
