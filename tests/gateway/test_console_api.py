"""The console's operator routes on a real gateway: status, dead letters, replay, the log."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from bookgen_events import EventBus, Settings
from consumers.logger import NotificationLogger
from tests.support.events import progress
from tests.support.gateway import ADMIN_KEY, StartGateway
from tests.support.waits import eventually
from tests.support.webhooks import Receiver, Reply, running

ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
ROUTES = [
    ("GET", "/status"),
    ("GET", "/dead-letters/webhook"),
    ("POST", "/dead-letters/webhook/redrive"),
    ("POST", "/dead-letters/webhook/purge"),
    ("POST", "/replay"),
]


@pytest.fixture
async def http(
    start_gateway: StartGateway, admin_settings: Settings
) -> AsyncIterator[httpx.AsyncClient]:
    gateway = await start_gateway(admin_settings)
    async with httpx.AsyncClient(base_url=gateway.http, headers=ADMIN) as client:
        yield client


async def test_operator_routes_need_the_admin_key(
    http: httpx.AsyncClient, start_gateway: StartGateway, gateway_settings: Settings
) -> None:
    """Without the key: 401; with a wrong one: 401; with ADMIN_API_KEY unset: 403 naming it."""
    for method, path in ROUTES:
        bare = await http.request(method, path, headers={"Authorization": ""}, json={})
        assert bare.status_code == 401, (method, path)
        wrong = await http.request(method, path, headers={"Authorization": "Bearer nope"}, json={})
        assert wrong.status_code == 401, (method, path)
    closed = await start_gateway(gateway_settings)  # no ADMIN_API_KEY
    async with httpx.AsyncClient(base_url=closed.http, headers=ADMIN) as other:
        for method, path in ROUTES:
            response = await other.request(method, path, json={})
            assert response.status_code == 403 and "ADMIN_API_KEY" in response.json()["detail"]


async def test_status_shows_each_group_with_lag_and_pending(
    http: httpx.AsyncClient, bus: EventBus
) -> None:
    """Three events nobody has read yet: every channel group lags by three, none pending."""
    for job in ("1", "2", "3"):
        await bus.emit(progress(job))
    status = (await http.get("/status")).json()
    groups = {g["group"]: g for g in status["events"]["groups"]}
    assert {"webhook", "email", "logger"} <= set(groups)
    assert groups["webhook"]["lag"] == 3 and groups["webhook"]["pending"] == 0
    assert status["events"]["length"] == 3 and status["dead_letters"]["webhook"] == 0


async def test_a_dead_letter_is_listed_with_reason_and_payload_then_redriven_and_delivered(
    http: httpx.AsyncClient, bus: EventBus, admin_settings: Settings, receiver: Receiver
) -> None:
    """A 410 is final: the delivery is dead-lettered with the reason; redriven by its id once
    the receiver is back, it is delivered with the same webhook-id and leaves the list."""
    receiver.script("gone", [Reply(410)], then=Reply(200))
    async with running(bus, admin_settings):
        await bus.emit(progress("7", receiver.url("gone")))

        async def listed() -> list[dict]:
            return (await http.get("/dead-letters/webhook")).json()["dead_letters"]

        (letter,) = await eventually(listed, 10, "the dead letter")
        event_id = letter["event_id"]
        assert "410" in letter["reason"] and letter["attempts"] == 1
        assert letter["event"]["id"] == event_id and letter["event"]["job_id"] == "7"
        assert letter["recipient"] == receiver.url("gone") and not letter["poison"]

        redriven = await http.post(
            "/dead-letters/webhook/redrive", json={"ids": [letter["dlq_id"]]}
        )
        assert redriven.json() == {"redriven": 1, "poison_skipped": []}
        await eventually(lambda: receiver.accepted[event_id] == 1, 10, "the redelivery")
        page = (await http.get("/dead-letters/webhook")).json()
        assert page == {"channel": "webhook", "total": 0, "dead_letters": []}


async def test_purge_needs_ids_or_all_and_bad_input_is_named(
    http: httpx.AsyncClient, bus: EventBus
) -> None:
    """An empty purge deletes nothing (422 naming "all"); unknown channels are 404; bad
    fields and limits name themselves."""
    for n in range(3):
        await bus.redis.xadd(
            bus.names.dlq("email"),
            {"channel": "email", "entry_id": "1-0", "reason": "550 no such user",
             "attempts": "1", "event_id": f"e{n}", "recipient": "a@example.com",
             "event": "{}", "poison": "0", "at_ms": "1"},
        )  # fmt: skip
    empty = await http.post("/dead-letters/email/purge", json={})
    assert empty.status_code == 422 and empty.json()["errors"][0]["field"] == "all"
    assert (await http.get("/dead-letters/email")).json()["total"] == 3
    extra = await http.post("/dead-letters/email/redrive", json={"idz": ["x"]})
    assert extra.status_code == 422 and extra.json()["errors"][0]["field"] == "idz"
    assert (await http.get("/dead-letters/websocket")).status_code == 404
    assert (await http.get("/dead-letters/email?limit=0")).status_code == 400
    one = (await http.get("/dead-letters/email?limit=1")).json()
    assert one["total"] == 3 and [d["event_id"] for d in one["dead_letters"]] == ["e2"]

    purged = await http.post(
        "/dead-letters/email/purge", json={"ids": [one["dead_letters"][0]["dlq_id"]]}
    )
    assert purged.json() == {"purged": 1}
    assert (await http.post("/dead-letters/email/purge", json={"all": True})).json() == {
        "purged": 2
    }
    assert (await http.get("/dead-letters/email")).json()["total"] == 0


async def test_replay_dry_run_counts_and_a_run_schedules(
    http: httpx.AsyncClient, bus: EventBus
) -> None:
    """A dry run counts what the filters match and schedules nothing; a real run schedules."""
    first = await bus.emit(progress("10"))
    await bus.emit(progress("11"))
    await bus.emit({"type": "progress_update", "job_id": "10", "data": {"progress": 5}})
    body = {"channel": "webhook", "from": first, "job_id": "10"}
    dry = (await http.post("/replay", json={**body, "dry_run": True})).json()
    assert (dry["matched"], dry["scheduled"], dry["no_recipient"]) == (1, 0, 1)
    assert await bus.redis.zcard(bus.names.scheduled("webhook")) == 0
    done = (await http.post("/replay", json=body)).json()
    assert (done["matched"], done["scheduled"]) == (1, 1)
    assert await bus.redis.zcard(bus.names.scheduled("webhook")) == 1


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"channel": "logger", "from": "0"}, "channel"),
        ({"channel": "webhook", "from": "yesterday"}, "from"),
        ({"channel": "webhook", "from": "0", "to": "soon"}, "to"),
        ({"channel": "webhook", "from": "99999999999999999999999-0"}, "from"),
        ({"channel": "webhook", "from": "0001-01-01T00:00:00Z"}, "from"),
        ({"channel": "email", "from": "0", "endpoint": "ep_x"}, "endpoint"),
        ({"channel": "webhook", "from": "0", "endpoint": "ep_missing"}, "endpoint"),
        ({"channel": "webhook", "from": "0", "type": "nope"}, "type"),
        ({"channel": "webhook"}, "from"),
    ],
)
async def test_replay_refuses_bad_fields_by_name(
    http: httpx.AsyncClient, bus: EventBus, body: dict, field: str
) -> None:
    await bus.emit(progress("1"))
    response = await http.post("/replay", json=body)
    assert response.status_code == 422, response.text
    assert field in [e["field"] for e in response.json()["errors"]]


async def test_the_log_is_searchable_by_user(
    http: httpx.AsyncClient, bus: EventBus, admin_settings: Settings
) -> None:
    """``user_id`` narrows the log to that user's rows (exactly, not by prefix)."""
    logger = NotificationLogger.from_settings(bus, admin_settings)
    await logger.start()
    await bus.emit(progress("1", user_id="ada"))
    await bus.emit(progress("2", user_id="ada2"))
    await logger.poll_once()
    rows = (await http.get("/notifications", params={"user_id": "ada"})).json()["notifications"]
    assert rows and {r["notification_metadata"]["job_id"] for r in rows} == {"1"}
    assert (await http.get("/notifications", params={"user_id": ""})).status_code == 400
