"""POST /events with Idempotency-Key and DELETE /events/{id} over real HTTP (SPEC 11)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import httpx

from bookgen_events import EventBus
from bookgen_events.scheduled_events import keep_moving
from tests.support.events import live_progress
from tests.support.gateway import API_KEY, Gateway
from tests.support.waits import eventually

AUTH = {"Authorization": f"Bearer {API_KEY}"}


async def test_the_same_idempotency_key_twice_appends_once(gateway: Gateway, bus: EventBus) -> None:
    """Two POSTs with one Idempotency-Key: both 201 with the first stream id, XLEN 1; the key
    becomes the event id."""
    key = f"order-{uuid.uuid4().hex}"
    headers = {**AUTH, "Idempotency-Key": key}
    async with httpx.AsyncClient(base_url=gateway.http) as http:
        first = await http.post("/events", json=live_progress("k"), headers=headers)
        again = await http.post("/events", json=live_progress("k"), headers=headers)
    assert first.status_code == again.status_code == 201
    assert first.json() == again.json() == {"stream_id": first.json()["stream_id"], "event_id": key}
    assert await bus.redis.xlen(bus.names.events) == 1


async def test_a_key_conflicting_with_the_body_id_is_422_naming_it(
    gateway: Gateway, bus: EventBus
) -> None:
    """A body id other than the key, or a key that is no valid id: 422 naming Idempotency-Key."""
    async with httpx.AsyncClient(base_url=gateway.http) as http:
        other = await http.post(
            "/events",
            json=live_progress("k", id="body-id"),
            headers={**AUTH, "Idempotency-Key": "header-id"},
        )
        bad = await http.post(
            "/events", json=live_progress("k"), headers={**AUTH, "Idempotency-Key": "a b"}
        )
        same = await http.post(
            "/events",
            json=live_progress("k", id="same"),
            headers={**AUTH, "Idempotency-Key": "same"},
        )
    assert other.status_code == 422
    assert other.json()["errors"][0]["field"] == "Idempotency-Key"
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "Idempotency-Key"
    assert same.status_code == 201
    assert await bus.redis.xlen(bus.names.events) == 1


async def test_cancel_over_http_is_204_then_404_and_409_once_sent(
    gateway: Gateway, bus: EventBus
) -> None:
    """DELETE a held event: 204, then 404 (gone); one already sent: 409; no key: 401."""
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    soon = (datetime.now(UTC) + timedelta(milliseconds=300)).isoformat()
    async with httpx.AsyncClient(base_url=gateway.http) as http:
        held = await http.post("/events", json=live_progress("c", deliver_at=later), headers=AUTH)
        assert held.status_code == 202 and held.json()["stream_id"] is None
        event_id = held.json()["event_id"]
        assert (await http.delete(f"/events/{event_id}")).status_code == 401
        assert (await http.delete(f"/events/{event_id}", headers=AUTH)).status_code == 204
        assert (await http.delete(f"/events/{event_id}", headers=AUTH)).status_code == 404
        assert await bus.scheduled_events.count() == 0

        sent = await http.post("/events", json=live_progress("c", deliver_at=soon), headers=AUTH)
        stop = asyncio.Event()
        mover = asyncio.create_task(keep_moving(bus.scheduled_events, stop, 0.05))
        try:

            async def appended() -> bool:
                return await bus.redis.xlen(bus.names.events) == 1

            await eventually(appended, 5, "the scheduled event to be appended")
        finally:
            stop.set()
            await mover
        gone = await http.delete(f"/events/{sent.json()['event_id']}", headers=AUTH)
        assert gone.status_code == 409 and "already sent" in gone.json()["detail"]
