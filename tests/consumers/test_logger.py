"""The logger as a projection: real events, real outcomes from the real consumer runtime."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy import event as sa_event
from sqlalchemy.exc import OperationalError

from bookgen_events import Consumer, EventBus, Settings
from bookgen_events.bus import Commit
from bookgen_events.db import Notification, SessionLocal, get_settings
from bookgen_events.outcomes import Outcome
from bookgen_events.ratelimit import RateLimiter
from consumers.logger import GROUP, DatabaseUnavailable, NotificationLogger, rebuild, serve
from tests.support.channels import RecordingChannel
from tests.support.database import rows, snapshot
from tests.support.events import progress
from tests.support.waits import eventually


def url_for(job: str) -> str:
    return f"https://hooks.example.com/{job}"


async def deliver_all(consumer: Consumer, channel: RecordingChannel, attempts: int) -> None:
    """Run the real consumer until ``attempts`` delivery attempts were made and settled."""
    deadline = asyncio.get_running_loop().time() + 10
    while sum(channel.attempts.values()) < attempts or await consumer._anything_due():
        await consumer.poll_once()
        await asyncio.sleep(0.03)
        assert asyncio.get_running_loop().time() < deadline, channel.attempts
    await consumer.poll_once()


async def project(logger: NotificationLogger) -> None:
    while await logger.poll_once():
        pass


def webhook_row(url: str, job: str, nth: int = 0) -> Notification:
    found = [r for r in rows(url, delivery_method="webhook") if r.recipient == url_for(job)]
    return sorted(found, key=lambda r: r.created_at)[nth]


async def test_full_life_cycle(bus: EventBus, log_settings: Settings, prefix: str) -> None:
    """pending -> delivered, -> failed with attempts, -> rate_limited, from real deliveries."""
    url = log_settings.database_url
    channel = RecordingChannel("webhook")
    channel.fail = {"102": 2, "105": 99}
    channel.reject = {"103"}
    consumer = Consumer(
        bus,
        channel,
        limiter=RateLimiter(bus.redis, prefix=prefix),
        retry_schedule=(0.05,),
        max_retries=2,
        rate_limits=(1, 100),
        claim_idle_ms=1000,
    )
    logger = NotificationLogger.from_settings(bus, log_settings)
    await logger.start()
    for job in ("101", "102", "103", "104", "104", "105"):
        await bus.emit(progress(job, url_for(job), user_id="u1", emails=["reader@example.com"]))
    await project(logger)
    assert len(rows(url)) == 18  # 6 events x (websocket, webhook, email)
    assert {r.status for r in rows(url, delivery_method="webhook")} == {"pending"}
    assert {r.status for r in rows(url, delivery_method="websocket")} == {"delivered"}

    await consumer.poll_once()  # first attempts only: retries are due later
    await project(logger)
    retrying = webhook_row(url, "102")
    assert (retrying.status, retrying.delivery_attempts) == ("pending", 1)
    assert retrying.error_message == "temporarily down"

    await deliver_all(consumer, channel, attempts=1 + 3 + 1 + 1 + 3)
    await consumer.aclose()
    await project(logger)
    ok, retried, rejected = (webhook_row(url, j) for j in ("101", "102", "103"))
    assert (ok.status, ok.delivery_attempts, ok.error_message) == ("delivered", 1, None)
    assert ok.delivered_at is not None and ok.delivered_at >= ok.created_at
    assert (retried.status, retried.delivery_attempts) == ("delivered", 3)
    assert (rejected.status, rejected.delivery_attempts) == ("failed", 1)
    assert rejected.error_message == "permanently refused"
    # Two events to one URL at a limit of one a minute: whichever came second is limited.
    first, limited = sorted(
        (webhook_row(url, "104", 0), webhook_row(url, "104", 1)), key=lambda r: r.status
    )
    assert (first.status, first.is_rate_limited) == ("delivered", False)
    assert (limited.status, limited.is_rate_limited) == ("rate_limited", True)
    assert (limited.delivery_attempts, limited.error_message) == (0, "rate limit exceeded")
    gave_up = webhook_row(url, "105")
    assert (gave_up.status, gave_up.delivery_attempts) == ("failed", 3)
    assert gave_up.error_message.startswith("gave up after 3 attempts")
    assert len(rows(url)) == 18
    assert {r.status for r in rows(url, delivery_method="email")} == {"pending"}

    # The seed's queries, as written, through SessionLocal bound to DATABASE_URL.
    get_settings.cache_clear()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DATABASE_URL", url)
        db = SessionLocal()
        try:
            notifications = (
                db.query(Notification)
                .filter(Notification.related_entity_id == 102)
                .filter(Notification.related_entity_type == "job")
                .all()
            )
            failed = db.query(Notification).filter(Notification.status == "failed").all()
        finally:
            db.close()
            get_settings.cache_clear()
    assert sorted(n.delivery_method for n in notifications) == ["email", "webhook", "websocket"]
    assert {(n.recipient, n.delivery_attempts) for n in failed} == {
        (url_for("103"), 1),
        (url_for("105"), 3),
    }

    # Replays: every outcome again, oldest last, then a rebuild: the table does not change.
    before = snapshot(url)
    outcomes = [Outcome.from_fields(f) for _, f in await bus.range(stream=bus.names.deliveries)]
    await bus.commit("test", Commit([o.record() for o in outcomes[::-1]], [], [], [], []), "test")
    await project(logger)
    assert await rebuild(bus, log_settings) == {
        "events": 6,
        "outcomes": 2 * len(outcomes),
        "rows": 6 * 3,  # distinct rows written, however often each was upserted
        "poison": 0,
        "database": url,
    }
    assert snapshot(url) == before

    # A producer retry appends the same event again: same rows, now pointing at the new entry.
    _, fields = (await bus.range(count=1))[0]
    again = await bus.redis.xadd(bus.names.events, fields)
    await project(logger)
    assert len(rows(url)) == 18
    assert [r.notification_metadata["stream_id"] for r in rows(url, related_entity_id=101)] == [
        again
    ] * 3


class OptOutChannel(RecordingChannel):
    """Knows of one opt-out, as a channel with subscribers does."""

    def suppressed(self, event: object, recipient: str) -> str | None:
        return "subscriber u1 opted out" if recipient == "optout@example.com" else None


async def test_a_suppressed_delivery_is_logged_with_its_reason(
    bus: EventBus, log_settings: Settings
) -> None:
    """Never attempted, final: the row says suppressed, no attempts, and why."""
    url = log_settings.database_url
    channel = OptOutChannel("email")
    consumer = Consumer(bus, channel)
    logger = NotificationLogger.from_settings(bus, log_settings)
    await logger.start()
    event = progress("201", None, emails=["optout@example.com", "reader@example.com"])
    await bus.emit(event)
    await consumer.poll_once()
    await consumer.aclose()
    await project(logger)
    assert [recipient for _, recipient in channel.delivered] == ["reader@example.com"]
    by_recipient = {r.recipient: r for r in rows(url, delivery_method="email")}
    quiet = by_recipient["optout@example.com"]
    assert (quiet.status, quiet.delivery_attempts) == ("suppressed", 0)
    assert quiet.error_message == "subscriber u1 opted out"
    assert by_recipient["reader@example.com"].status == "delivered"


async def test_outcome_before_its_event(bus: EventBus, log_settings: Settings) -> None:
    """An outcome read before its event makes the row; the event then fills it in."""
    url = log_settings.database_url
    outcome = Outcome(
        "ev-early", "1-1", "webhook", url_for("7"), "delivered", 2, True, "completion", "7"
    )
    await bus.commit("test", Commit([outcome.record()], [], [], [], []), "test")
    logger = NotificationLogger.from_settings(bus, log_settings)
    await logger.start()
    await project(logger)
    (early,) = rows(url)
    assert (early.status, early.delivery_attempts, early.subject) == ("delivered", 2, None)
    assert early.related_entity_id == 7

    await bus.emit(
        {**progress("7", url_for("7")), "id": "ev-early", "type": "completion", "data": {}}
    )
    await project(logger)
    row = next(r for r in rows(url) if r.delivery_method == "webhook")
    assert (row.status, row.delivery_attempts, row.subject) == ("delivered", 2, "Job 7 completed")
    assert row.notification_metadata["stream_id"] != "1-1"
    assert len(rows(url)) == 2  # plus the websocket row


async def test_one_transaction_per_batch_and_poison(bus: EventBus, log_settings: Settings) -> None:
    """300 events and two poison entries: one commit, dead letters, everything acked."""
    url = log_settings.database_url
    logger = NotificationLogger.from_settings(bus, log_settings)
    await logger.start()
    await bus.emit_many([progress(str(i), url_for(str(i))) for i in range(300)])
    await bus.redis.xadd(bus.names.events, {"event": "{not json"})
    await bus.redis.xadd(bus.names.deliveries, {"event_id": "x", "status": "lost"})
    commits: list[int] = []

    def count_commit(conn: object) -> None:
        commits.append(1)

    await asyncio.to_thread(logger.write, [])  # the table check, once, before counting
    sa_event.listen(logger.engine, "commit", count_commit)
    try:
        assert await logger.poll_once() == 302
    finally:
        sa_event.remove(logger.engine, "commit", count_commit)
    assert len(commits) == 1
    assert len(rows(url)) == 600
    letters = await bus.range(stream=bus.names.dlq(GROUP))
    reasons = sorted(f["reason"].split(" entry:")[0] for _, f in letters)
    assert reasons == sorted([bus.names.events, bus.names.deliveries])
    assert all(f["poison"] == "1" for _, f in letters)
    for stream in (bus.names.events, bus.names.deliveries):
        assert (await bus.redis.xpending(stream, GROUP))["pending"] == 0


async def test_database_outage_keeps_entries_pending(
    bus: EventBus, settings: Settings, tmp_path: Path
) -> None:
    """With the database unreachable nothing is acked; the loop retries and catches up."""
    folder = tmp_path / "not-yet"
    url = f"sqlite:///{folder / 'log.db'}"
    down = settings.model_copy(update={"database_url": url})
    logger = NotificationLogger.from_settings(bus, down)
    await logger.start()
    await bus.emit_many([progress(str(i)) for i in range(5)])
    with pytest.raises(DatabaseUnavailable):
        await logger.poll_once()
    assert (await bus.redis.xpending(bus.names.events, GROUP))["pending"] == 5

    stop = asyncio.Event()
    task = asyncio.create_task(serve(bus, down, stop))
    await asyncio.sleep(0.3)  # the loop is backing off against the missing database
    assert not task.done()
    folder.mkdir()
    await eventually(lambda: asyncio.to_thread(_has_rows, url, 10))
    await eventually(lambda: _pending(bus, bus.names.events, 0))
    stop.set()
    await asyncio.wait_for(task, 5)


def _has_rows(url: str, expected: int) -> bool:
    try:
        return len(rows(url)) == expected
    except OperationalError:  # the logger has not created the table yet
        return False


async def _pending(bus: EventBus, stream: str, expected: int) -> bool:
    return (await bus.redis.xpending(stream, GROUP))["pending"] == expected


async def test_reclaims_a_dead_loggers_entries(bus: EventBus, log_settings: Settings) -> None:
    """Entries read by a logger that died are claimed after CLAIM_IDLE_MS and projected."""
    url = log_settings.database_url
    live = NotificationLogger.from_settings(bus, log_settings, claim_idle_ms=200, name="live")
    await live.start()
    await bus.emit_many([progress(str(i), url_for(str(i))) for i in range(20)])
    dead = await bus.read_group(GROUP, "dead", count=20, block_ms=None)
    assert len(dead) == 20
    assert await live.poll_once() == 0  # not idle long enough yet
    await asyncio.sleep(0.25)
    assert await live.poll_once() == 20
    assert len(rows(url)) == 40
    assert await _pending(bus, bus.names.events, 0)


async def test_disabled_logging_does_nothing(bare_bus: EventBus, log_settings: Settings) -> None:
    """ENABLE_NOTIFICATION_LOGGING=false: serve returns at once and reads nothing."""
    off = log_settings.model_copy(update={"enable_notification_logging": False})
    await bare_bus.emit(progress("1"))
    await asyncio.wait_for(serve(bare_bus, off, asyncio.Event()), 2)
    assert rows(log_settings.database_url) == []
    assert await bare_bus.groups_info() == []
