"""GET /notifications over the table the logger wrote, and the order-safe merge."""

from __future__ import annotations

import itertools
from datetime import datetime

import httpx
from starlette.applications import Starlette
from starlette.routing import Route

from bookgen_events import EventBus, Settings
from bookgen_events.db import get_engine, upsert_outcomes
from bookgen_events.event_ids import new_event_id
from bookgen_events.outcomes import Outcome
from consumers.logger import NotificationLogger
from consumers.logrows import outcome_row
from gateway.notifications import encode_cursor, list_notifications
from tests.support.database import rows, snapshot
from tests.support.events import progress


def client(settings: Settings) -> httpx.AsyncClient:
    app = Starlette(routes=[Route("/notifications", list_notifications)])
    app.state.settings = settings
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")


async def test_list_filters_and_pages(bus: EventBus, log_settings: Settings) -> None:
    """Filters by job, status and channel; cursor pages cover every row exactly once."""
    logger = NotificationLogger.from_settings(bus, log_settings)
    await logger.start()
    await bus.emit_many([progress(str(i % 3), emails=["a@example.com"]) for i in range(12)])
    await bus.emit(progress("job-x"))
    await logger.poll_once()
    async with client(log_settings) as http:
        seen: list[str] = []
        cursor = None
        while True:
            params = {"limit": "5", **({"cursor": cursor} if cursor else {})}
            page = (await http.get("/notifications", params=params)).json()
            seen += [n["id"] for n in page["notifications"]]
            if not (cursor := page["next_cursor"]):
                break
        assert sorted(seen) == sorted(str(r.id) for r in rows(log_settings.database_url))
        assert len(seen) == 13 * 3 - 1  # job-x has no email

        job = (await http.get("/notifications", params={"job_id": "1"})).json()["notifications"]
        assert len(job) == 12 and {n["related_entity_id"] for n in job} == {1}
        named = (await http.get("/notifications?job_id=job-x&channel=webhook")).json()
        assert [n["recipient"] for n in named["notifications"]] == ["https://hooks.example.com/in"]
        pending = (await http.get("/notifications?status=pending&channel=email")).json()
        assert len(pending["notifications"]) == 12
        created = [n["created_at"] for n in pending["notifications"]]
        assert created == sorted(created, reverse=True) and created[0].endswith("Z")


async def test_bad_parameters_are_400(log_settings: Settings) -> None:
    """Each invalid parameter is refused with a reason naming it."""
    async with client(log_settings) as http:
        for query, word in [
            ("status=lost", "status"),
            ("channel=fax", "channel"),
            ("limit=0", "limit"),
            ("limit=ten", "limit"),
            ("cursor=%%%", "cursor"),
            ("cursor=WzFd", "cursor"),
            ("colour=red", "colour"),
            ("status=failed&status=pending", "once"),
            ("job_id=", "job_id"),
            (f"cursor={encode_cursor(datetime(2024, 1, 1), 10**30)}", "cursor"),
            (f"cursor={encode_cursor(datetime(2024, 1, 1), -1)}", "cursor"),
            (f"limit={'9' * 5000}", "limit"),
        ]:
            response = await http.get(f"/notifications?{query}")
            assert response.status_code == 400, query
            assert word in response.json()["error"], (query, response.json())


EVENT_ID = new_event_id()


def outcome(status: str, attempt: int, final: bool = True, at_ms: int = 1_000) -> Outcome:
    error = "" if status == "delivered" else f"{status} #{attempt}"
    return Outcome(
        EVENT_ID,
        "1-0",
        "webhook",
        "https://h.example.com",
        status,
        attempt,
        final,  # type: ignore[arg-type]
        error=error,
        at_ms=at_ms,
    )


async def test_outcomes_in_any_order_or_batching_give_one_row(db_url: str) -> None:
    """Every order of a delivery's outcomes, batched or not, ends in the same row."""
    history = [
        outcome("failed", 1, final=False, at_ms=1_000),
        outcome("rate_limited", 2, at_ms=2_000),
        outcome("failed", 2, final=False, at_ms=3_000),
        outcome("failed", 3, final=True, at_ms=4_000),
        outcome("delivered", 1, at_ms=9_000),  # an operator's replay, after the dead letter
        outcome("delivered", 1, at_ms=5_000),
    ]
    engine = get_engine(db_url)

    def apply(groups: list[list[Outcome]]) -> list[tuple[object, ...]]:
        with engine.begin() as conn:
            conn.exec_driver_sql("DELETE FROM notifications")
        for group in groups:
            with engine.begin() as conn:
                upsert_outcomes(conn, [outcome_row(o) for o in group])
        return snapshot(db_url)

    # Without the deliveries: failed final with attempt 3 wins over everything older.
    (row,) = apply([history[:4][::-1]])
    assert row[6:9] == ("failed", 3, "failed #3")
    expected = apply([history])
    ((*_, status, attempts, error, _t, _e, _m, limited, _c, delivered_at),) = expected
    assert (status, attempts, error, bool(limited)) == ("delivered", 3, None, True)
    assert delivered_at.timestamp() == 5  # the first delivery (naive UTC, 1970-01-01 00:00:05)
    for order in itertools.permutations(history[:5]):
        order = [*order, history[5]]
        assert apply([order]) == expected, order
        assert apply([[o] for o in order]) == expected, order
