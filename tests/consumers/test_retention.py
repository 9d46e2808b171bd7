"""Retention against the real channels (SPEC 11): a retry outlives its entry being trimmed,
and LOG_RETENTION deletes old rows in batches on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import insert, select

from bookgen_events import EventBus, Settings
from bookgen_events.db import Notification, delete_rows_before, get_engine, oldest_row_at
from bookgen_events.retention import trim_streams
from tests.support.events import progress
from tests.support.waits import eventually
from tests.support.webhooks import Receiver, Reply, running


async def test_a_retry_outstanding_is_delivered_after_its_entry_is_trimmed(
    bare_bus: EventBus, receiver: Receiver, webhook_settings: Settings
) -> None:
    """First attempt refused (500), retry due in 1 s; the stream is trimmed to nothing
    meanwhile; the retry, carrying its event, is still delivered."""
    settings = webhook_settings.model_copy(update={"webhook_retry_schedule": (1.0,)})
    receiver.script("r", [Reply(500)], then=Reply(200))
    scheduled = bare_bus.names.scheduled("webhook")
    await bare_bus.ensure_group("webhook")  # the only group: nothing else holds the entry
    async with running(bare_bus, settings):
        await bare_bus.emit(progress("ret", receiver.url("r")))

        async def retry_waiting() -> bool:
            return len(receiver.at("r")) == 1 and await bare_bus.redis.zcard(scheduled) == 1

        await eventually(retry_waiting, 10, "the first attempt refused and its retry scheduled")
        trimmed = await trim_streams(bare_bus, 0.001)
        assert trimmed[bare_bus.names.events] == 1 and await bare_bus.length() == 0

        async def retried() -> bool:
            return len(receiver.at("r")) == 2 and await bare_bus.redis.zcard(scheduled) == 0

        await eventually(retried, 10, "the retry delivered")
    first, second = receiver.at("r")
    assert first.body == second.body and first.webhook_id == second.webhook_id


def _row(i: int, created: datetime) -> dict[str, object]:
    return {"id": i, "notification_type": "progress_update", "status": "delivered",
            "created_at": created}  # fmt: skip


def test_log_retention_deletes_old_rows_in_batches(db_url: str) -> None:
    """Rows older than the cutoff go, in batches of 3 (7 old rows: 3 statements), newer stay."""
    engine = get_engine(db_url)
    now = datetime.now(UTC).replace(tzinfo=None)
    table = Notification.__table__  # type: ignore[attr-defined]
    with engine.begin() as conn:
        conn.execute(insert(table), [_row(i, now - timedelta(days=40 + i)) for i in range(7)])
        conn.execute(insert(table), [_row(100 + i, now - timedelta(days=i)) for i in range(3)])
    assert delete_rows_before(engine, now - timedelta(days=30), batch=3) == 7
    with engine.connect() as conn:
        left = sorted(conn.execute(select(table.c.id)).scalars())
    assert left == [100, 101, 102]
    oldest = oldest_row_at(engine)
    assert oldest is not None and abs(oldest - (now - timedelta(days=2))) < timedelta(seconds=1)
