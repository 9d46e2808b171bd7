"""The consumer runtime's guarantees (SPEC section 4), proved on a real Redis."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from redis.asyncio import Redis
from structlog.testing import capture_logs

from bookgen_events import Consumer, Event, EventBus, RetryLater
from bookgen_events.bus import Commit
from bookgen_events.delivery import retry_delay
from bookgen_events.events import decode
from bookgen_events.outcomes import DeadLetter, Outcome
from bookgen_events.ratelimit import RateLimiter

from ..support.channels import RecordingChannel
from ..support.events import progress
from ..support.waits import eventually

ROOT = Path(__file__).resolve().parents[2]


def make_consumer(bus: EventBus, channel: RecordingChannel, **options) -> Consumer:
    defaults = dict(
        retry_schedule=(0.05, 0.1, 0.2), max_retries=3, claim_idle_ms=500,
        max_block_ms=100, rate_limits=(0, 0), grace_s=2.0,
    )  # fmt: skip
    defaults.update(options)
    return Consumer(bus, channel, **defaults)


async def outcomes(bus: EventBus) -> list[Outcome]:
    return [Outcome.from_fields(f) for _, f in await bus.range(stream=bus.names.deliveries)]


async def dead_letters(bus: EventBus, channel: str = "webhook") -> list[DeadLetter]:
    return [DeadLetter.from_fields(f) for _, f in await bus.range(stream=bus.names.dlq(channel))]


async def test_delivers_every_event_once_and_acks(bus: EventBus) -> None:
    """Each event is delivered once, with one 'delivered' outcome, and nothing stays pending."""
    channel = RecordingChannel()
    await bus.emit_many([progress(str(i)) for i in range(300)])
    await make_consumer(bus, channel).run(burst=True)
    assert len(channel.delivered) == 300 == len({e for e, _ in channel.delivered})
    found = await outcomes(bus)
    assert Counter(o.status for o in found) == {"delivered": 300}
    assert all(o.final and o.attempt == 1 and o.latency_ms is not None for o in found)
    assert (await bus.redis.xpending(bus.names.events, "webhook"))["pending"] == 0


async def test_failing_delivery_retries_with_backoff_while_others_flow(bus: EventBus) -> None:
    """A failing recipient is retried on the schedule without holding up the others."""
    channel = RecordingChannel()
    channel.fail["bad"] = 2
    consumer = make_consumer(bus, channel, retry_schedule=(0.3, 0.3))
    task = asyncio.create_task(consumer.run())
    await bus.emit(progress("bad"))
    started = time.monotonic()
    await bus.emit_many([progress(f"ok{i}") for i in range(50)])
    await eventually(lambda: len(channel.delivered) >= 50)
    assert time.monotonic() - started < 0.3, "healthy events waited for the failing one"
    assert all(e != "bad" for e, _ in channel.delivered)
    await eventually(lambda: len(channel.delivered) == 51)
    elapsed = time.monotonic() - started
    assert elapsed >= 0.45, f"two retries at 0.3 s ±20 % each cannot finish in {elapsed:.2f}s"
    consumer.stop()
    await task
    bad = [o for o in await outcomes(bus) if o.job_id == "bad"]
    assert [(o.status, o.attempt, o.final) for o in bad] == [
        ("failed", 1, False), ("failed", 2, False), ("delivered", 3, True),
    ]  # fmt: skip
    assert bad[0].retry_at_ms and bad[0].status_code == 503


async def test_dead_letter_after_the_last_attempt(bus: EventBus) -> None:
    """With 3 retries an always-failing delivery is tried 4 times, then dead-lettered."""
    channel = RecordingChannel()
    channel.fail["doomed"] = 99
    event_id = await bus.emit(progress("doomed"))
    consumer = make_consumer(bus, channel, max_retries=3, retry_schedule=(0.02,))
    task = asyncio.create_task(consumer.run())
    await eventually(lambda: _has_dead_letter(bus))
    consumer.stop()
    await task
    (letter,) = await dead_letters(bus)
    assert letter.attempts == 4 and letter.entry_id == event_id
    assert "gave up after 4 attempts" in letter.reason and "temporarily down" in letter.reason
    assert json.loads(letter.event)["job_id"] == "doomed"
    attempts = [(o.attempt, o.final) for o in await outcomes(bus)]
    assert attempts == [(1, False), (2, False), (3, False), (4, True)]
    assert await bus.redis.zcard(bus.names.scheduled("webhook")) == 0


async def test_reject_dead_letters_at_once(bus: EventBus) -> None:
    """A permanent failure is not retried: one attempt, one dead letter with the reason."""
    channel = RecordingChannel()
    channel.reject.add("gone")
    await bus.emit(progress("gone"))
    await make_consumer(bus, channel).run(burst=True)
    (letter,) = await dead_letters(bus)
    assert letter.reason == "permanently refused" and letter.attempts == 1
    (outcome,) = await outcomes(bus)
    assert (outcome.status, outcome.final, outcome.status_code) == ("failed", True, 410)


async def test_poison_entry_is_dead_lettered_and_later_entries_flow(bus: EventBus) -> None:
    """Junk written straight into the stream is dead-lettered; the consumer keeps going."""
    channel = RecordingChannel()
    await bus.emit(progress("before"))
    await bus.redis.xadd(bus.names.events, {"junk": "yes"})
    await bus.redis.xadd(
        bus.names.events, {"event": '{"type": "progress_update", "data": {"progress": 900}}'}
    )
    await bus.emit(progress("after"))
    await make_consumer(bus, channel).run(burst=True)
    assert len(channel.delivered) == 2
    letters = await dead_letters(bus)
    assert [letter.poison for letter in letters] == [True, True]
    assert "junk" in letters[0].event and "progress" in letters[1].reason
    assert (await bus.redis.xpending(bus.names.events, "webhook"))["pending"] == 0


async def test_two_consumers_split_the_work_without_double_delivery(bus: EventBus) -> None:
    """Competing consumers of one group each get a share and no event twice."""
    channel_a, channel_b = RecordingChannel(), RecordingChannel()
    for channel in (channel_a, channel_b):
        channel.delay = {str(i): 0.002 for i in range(400)}
    a = make_consumer(bus, channel_a, name="a", batch=10, concurrency=5)
    b = make_consumer(bus, channel_b, name="b", batch=10, concurrency=5)
    tasks = [asyncio.create_task(c.run()) for c in (a, b)]
    await bus.emit_many([progress(str(i)) for i in range(400)])
    await eventually(lambda: len(channel_a.delivered) + len(channel_b.delivered) >= 400)
    await asyncio.sleep(0.2)
    a.stop(), b.stop()
    await asyncio.gather(*tasks)
    ids = [e for e, _ in channel_a.delivered + channel_b.delivered]
    assert len(ids) == 400 == len(set(ids))
    assert channel_a.delivered and channel_b.delivered


async def test_stale_pending_entries_of_a_dead_consumer_are_reclaimed(bus: EventBus) -> None:
    """Entries read by a consumer that never acked are claimed by another after CLAIM_IDLE_MS."""
    await bus.emit_many([progress(str(i)) for i in range(30)])
    await bus.ensure_group("webhook")
    taken = await bus.read_group("webhook", "dead", count=30, block_ms=None)
    assert len(taken) == 30  # "dead" read them and died without acking
    channel = RecordingChannel()
    consumer = make_consumer(bus, channel, name="alive", claim_idle_ms=300)
    task = asyncio.create_task(consumer.run())
    await eventually(lambda: len(channel.delivered) == 30)
    consumer.stop()
    await task
    assert (await bus.redis.xpending(bus.names.events, "webhook"))["pending"] == 0


async def test_a_restarted_consumer_first_redoes_its_own_pending(bus: EventBus) -> None:
    """A consumer with a stable name redoes what it read before a crash, without waiting."""
    await bus.emit_many([progress(str(i)) for i in range(5)])
    await bus.ensure_group("webhook")
    await bus.read_group("webhook", "worker-1", count=5, block_ms=None)
    channel = RecordingChannel()
    await make_consumer(bus, channel, name="worker-1", claim_idle_ms=600_000).run(burst=True)
    assert len(channel.delivered) == 5


async def test_group_lost_with_redis_data_is_recreated(bus: EventBus) -> None:
    """If Redis loses the group (restart without persistence) the consumer recreates it."""
    channel = RecordingChannel()
    consumer = make_consumer(bus, channel)
    task = asyncio.create_task(consumer.run())
    await bus.emit(progress("first"))
    await eventually(lambda: len(channel.delivered) == 1)
    await bus.redis.delete(bus.names.events)  # the stream and its groups are gone
    await asyncio.sleep(0.3)
    await bus.emit(progress("second"))
    await eventually(lambda: len(channel.delivered) == 2)
    consumer.stop()
    await task


async def test_rate_limit_counts_exactly(bus: EventBus, redis: Redis) -> None:
    """With 3 per minute, 5 events to one URL give 3 deliveries and 2 rate_limited outcomes."""
    channel = RecordingChannel()
    limiter = RateLimiter(redis, prefix=bus.names.prefix)
    await bus.emit_many([progress(str(i)) for i in range(5)])
    await bus.emit(progress("other", url="https://other.example.com/x"))
    await make_consumer(bus, channel, limiter=limiter, rate_limits=(3, 100)).run(burst=True)
    by_status = Counter((o.recipient, o.status) for o in await outcomes(bus))
    assert by_status == {
        ("https://hooks.example.com/in", "delivered"): 3,
        ("https://hooks.example.com/in", "rate_limited"): 2,
        ("https://other.example.com/x", "delivered"): 1,
    }
    assert len(channel.delivered) == 4  # limited ones were never attempted


async def test_retry_of_a_counted_notification_is_not_limited_again(
    bus: EventBus, redis: Redis
) -> None:
    """A retry re-uses the slot its first attempt took: limits count notifications, not attempts."""
    channel = RecordingChannel()
    channel.fail["flaky"] = 2
    limiter = RateLimiter(redis, prefix=bus.names.prefix)
    await bus.emit(progress("flaky"))
    consumer = make_consumer(bus, channel, limiter=limiter, rate_limits=(1, 0))
    task = asyncio.create_task(consumer.run())
    await eventually(lambda: len(channel.delivered) == 1)
    consumer.stop()
    await task
    assert [o.status for o in await outcomes(bus)] == ["failed", "failed", "delivered"]


async def test_graceful_stop_never_half_acks(bus: EventBus) -> None:
    """On stop, finished work is recorded and acked; unfinished work stays pending for others."""
    channel = RecordingChannel()
    channel.delay = {"slow": 5.0}
    await bus.emit_many([progress("slow"), progress("fast")])
    consumer = make_consumer(bus, channel, grace_s=0.3)
    task = asyncio.create_task(consumer.run())
    await eventually(lambda: len(channel.delivered) == 1)
    consumer.stop()
    await task
    pending = await bus.redis.xpending_range(bus.names.events, "webhook", "-", "+", 10)
    assert len(pending) == 1  # the slow one, handed back
    assert [o.job_id for o in await outcomes(bus)] == ["fast"]
    # Another consumer picks it up once idle.
    channel.delay = {}
    await asyncio.sleep(0.6)
    await make_consumer(bus, channel, name="other", claim_idle_ms=500).run(burst=True)
    assert (
        sorted(channel.delivered) == sorted(set(channel.delivered)) and len(channel.delivered) == 2
    )


async def test_stop_with_a_job_queued_behind_a_slow_delivery_hands_both_back(
    bus: EventBus,
) -> None:
    """Per-job order at shutdown: one job's second delivery waits for its first; when the
    grace runs out both are handed back, nothing recorded and nothing reported as crashed."""
    channel = RecordingChannel()
    channel.delay = {"slow": 5.0}
    await bus.emit_many([progress("slow"), progress("slow")])
    consumer = make_consumer(bus, channel, grace_s=0.3)
    with capture_logs() as logs:
        task = asyncio.create_task(consumer.run())
        await eventually(lambda: len(channel.attempts) == 1)
        await asyncio.sleep(0.1)
        assert len(channel.attempts) == 1  # the first under way, the second waiting for it
        consumer.stop()
        await asyncio.wait_for(task, 5)
    assert not [e for e in logs if e["event"] == "delivery crashed"], logs
    pending = await bus.redis.xpending_range(bus.names.events, "webhook", "-", "+", 10)
    assert len(pending) == 2 and await outcomes(bus) == []


async def test_a_redis_refusing_writes_stops_reads_and_loses_nothing(bus: EventBus) -> None:
    """While results cannot be written, reading stops at a bound; once they can, all land."""
    channel = RecordingChannel()
    await bus.redis.set(bus.names.deliveries, "not a stream")  # every commit fails: WRONGTYPE
    await bus.emit_many([progress(str(i)) for i in range(300)])
    consumer = make_consumer(bus, channel, batch=10, concurrency=4)
    task = asyncio.create_task(consumer.run())
    await eventually(lambda: len(channel.delivered) >= 4 + 4 * 10)
    await asyncio.sleep(0.5)  # room to read on, were reading unbounded
    pending = (await bus.redis.xpending(bus.names.events, "webhook"))["pending"]
    assert pending <= 4 + 4 * 10 + 10, f"{pending} entries read with no result written"
    assert len(channel.delivered) == pending  # each read one delivered once, none acked
    await bus.redis.delete(bus.names.deliveries)
    await eventually(lambda: len(channel.delivered) == 300)
    consumer.stop()
    await task
    assert Counter(o.status for o in await outcomes(bus)) == {"delivered": 300}
    assert (await bus.redis.xpending(bus.names.events, "webhook"))["pending"] == 0


async def test_waiting_deliveries_run_side_by_side_up_to_the_concurrency(bus: EventBus) -> None:
    """Deliveries that wait overlap, up to ``concurrency`` of them at once and no more."""

    class Gauged(RecordingChannel):
        def __init__(self) -> None:
            super().__init__()
            self.running = self.peak = 0
            self.release = asyncio.Event()

        async def deliver(self, event, recipient):  # type: ignore[no-untyped-def]
            self.running += 1
            self.peak = max(self.peak, self.running)
            await self.release.wait()
            self.running -= 1
            return await super().deliver(event, recipient)

    channel = Gauged()
    await bus.emit_many([progress(str(i)) for i in range(12)])
    consumer = make_consumer(bus, channel, batch=20, concurrency=5)
    task = asyncio.create_task(consumer.run())
    await eventually(lambda: channel.running == 5)
    await asyncio.sleep(0.2)  # room for a sixth, were there no bound
    assert channel.peak == 5
    channel.release.set()
    await eventually(lambda: len(channel.delivered) == 12)
    assert channel.peak == 5
    consumer.stop()
    await task


async def test_one_jobs_deliveries_run_one_at_a_time_in_order_other_jobs_beside(
    bus: EventBus,
) -> None:
    """Per-job order: with deliveries of random length, each job's events complete in the
    order emitted, while different jobs' deliveries overlap."""

    class Shuffling(RecordingChannel):
        def __init__(self) -> None:
            super().__init__()
            self.finished: list[tuple[str, float]] = []
            self.running: dict[str, int] = {}
            self.most_at_once = 0
            self.jobs_at_once = 0
            self.shuffle = random.Random(3)

        async def deliver(self, event: Event, recipient: str) -> int | None:
            job = event.job_id or ""
            self.running[job] = self.running.get(job, 0) + 1
            assert self.running[job] == 1, f"two deliveries of job {job} at once"
            self.jobs_at_once = max(self.jobs_at_once, len(self.running))
            await asyncio.sleep(self.shuffle.random() * 0.02)
            del self.running[job]
            self.finished.append((job, event.data.progress))
            return 200

    channel = Shuffling()
    events = [
        {**progress(job), "data": {"progress": float(i), "phase": "writing"}}
        for i in range(8)
        for job in ("a", "b", "c", "d")
    ]
    await bus.emit_many(events)
    consumer = make_consumer(bus, channel, concurrency=16)
    await consumer.poll_once()
    assert len(channel.finished) == len(events)
    for job in ("a", "b", "c", "d"):
        assert [p for j, p in channel.finished if j == job] == [float(i) for i in range(8)]
    assert channel.jobs_at_once > 1
    assert len(await outcomes(bus)) == len(events)


async def test_a_slow_jobs_backlog_holds_no_worker_from_other_jobs(bus: EventBus) -> None:
    """Nothing blocked: ten events of a slow job queued ahead of other jobs' events, four
    workers; the slow job's waiting deliveries hold no worker, so the others are delivered
    while the slow job is still on its first few."""
    channel = RecordingChannel()
    channel.delay = {"slow": 0.3}
    await bus.emit_many([progress("slow") for _ in range(10)])
    others = [progress(f"quick-{i}") for i in range(10)]
    await bus.emit_many(others)
    consumer = make_consumer(bus, channel, concurrency=4)
    task = asyncio.create_task(consumer.run())
    try:
        await eventually(lambda: len(channel.delivered) >= 10, 2.0, "the quick jobs")
        assert len(channel.attempts) <= 14  # the slow job is on its first few (~0.3 s each)
    finally:
        consumer.stop()
        await task


async def test_several_recipients_each_get_their_own_outcome(bus: EventBus) -> None:
    """An event with several recipients yields one delivery and outcome per recipient."""
    channel = RecordingChannel(name="email")
    await bus.emit(
        {"type": "completion", "job_id": "7", "data": {}, "emails": ["a@x.com", "b@x.com"]}
    )
    await make_consumer(bus, channel).run(burst=True)
    assert sorted(r for _, r in channel.delivered) == ["a@x.com", "b@x.com"]
    assert sorted(o.recipient for o in await outcomes(bus)) == ["a@x.com", "b@x.com"]


def test_retry_delay_follows_schedule_with_jitter() -> None:
    """Delays follow the schedule, repeat its last step, and stay within ±20 %."""
    schedule = (5.0, 300.0, 1800.0)
    assert retry_delay(schedule, 1, lambda: 0.5) == 5.0
    assert retry_delay(schedule, 2, lambda: 0.0) == pytest.approx(240.0)
    assert retry_delay(schedule, 3, lambda: 1.0) == pytest.approx(2160.0)
    assert retry_delay(schedule, 7, lambda: 0.5) == 1800.0


async def test_sigkill_mid_batch_loses_nothing(bus: EventBus, redis_url: str) -> None:
    """A consumer process killed with SIGKILL mid-batch: another finishes every entry."""
    prefix = bus.names.prefix
    count = 200
    await bus.emit_many([progress(str(i)) for i in range(count)])

    def start(name: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-m", "tests.core.consumer_proc", redis_url, prefix, name, "0.05"],
            cwd=ROOT, env={**os.environ, "LOG_LEVEL": "WARNING"},
        )  # fmt: skip

    first = start("first")
    try:
        await eventually(lambda: _delivered_at_least(bus, f"{prefix}:delivered", 30), within=20)
        first.send_signal(signal.SIGKILL)
        first.wait(5)
        assert await bus.redis.llen(f"{prefix}:delivered") < count, (
            "killed too late to prove anything"
        )
        second = start("second")
        try:
            await eventually(lambda: _all_delivered(bus, f"{prefix}:delivered", count), within=30)
        finally:
            second.send_signal(signal.SIGTERM)
            assert second.wait(10) == 0
    finally:
        if first.poll() is None:
            first.kill()
    delivered = Counter(await bus.redis.lrange(f"{prefix}:delivered", 0, -1))
    assert len(delivered) == count  # every event at least once
    assert (await bus.redis.xpending(bus.names.events, "webhook"))["pending"] == 0


async def _has_dead_letter(bus: EventBus) -> bool:
    return await bus.redis.xlen(bus.names.dlq("webhook")) > 0


async def _delivered_at_least(bus: EventBus, key: str, n: int) -> bool:
    return await bus.redis.llen(key) >= n


async def _all_delivered(bus: EventBus, key: str, n: int) -> bool:
    return len(set(await bus.redis.lrange(key, 0, -1))) >= n


async def test_slow_delivery_is_not_taken_over_by_another_consumer(bus: EventBus) -> None:
    """A delivery slower than CLAIM_IDLE_MS stays owned (heartbeat): delivered once, not twice."""
    channels = [RecordingChannel(), RecordingChannel()]
    for channel in channels:
        channel.delay = {"slow": 1.5}
    consumers = [
        make_consumer(bus, channel, name=f"c{i}", claim_idle_ms=300)
        for i, channel in enumerate(channels)
    ]
    tasks = [asyncio.create_task(c.run()) for c in consumers]
    await bus.emit(progress("slow"))
    await eventually(lambda: sum(len(c.delivered) for c in channels) >= 1, within=10)
    await asyncio.sleep(1.0)  # time enough for a wrongful reclaim to deliver it again
    for c in consumers:
        c.stop()
    await asyncio.gather(*tasks)
    assert sum(len(c.delivered) for c in channels) == 1
    assert sum(sum(c.attempts.values()) for c in channels) == 1


async def test_stop_with_retries_in_flight_does_not_hang(bus: EventBus) -> None:
    """Stopping while timed-out deliveries are being retried finishes within the grace period."""

    class TimingOut(RecordingChannel):
        async def deliver(self, event, recipient):  # type: ignore[no-untyped-def]
            try:
                async with asyncio.timeout(0.5):
                    await asyncio.sleep(10 if event.job_id.startswith("s") else 0)
            except TimeoutError:
                raise RetryLater("timed out") from None
            return 200

    await bus.emit_many(
        [progress(f"s{i}") for i in range(3)] + [progress(f"h{i}") for i in range(30)]
    )
    consumer = make_consumer(bus, TimingOut(), concurrency=8, retry_schedule=(0.1,), grace_s=2.0)
    task = asyncio.create_task(consumer.run())
    await asyncio.sleep(1.3)
    stopped = time.monotonic()
    consumer.stop()
    await asyncio.wait_for(task, timeout=10)
    took = time.monotonic() - stopped
    assert took < 2.0 + 0.5, f"stop took {took:.2f}s for a 2 s grace period"


@pytest.mark.parametrize(
    ("event_id", "job_id"),
    [("e1", "plain"), ("e1", "with\x1funit separator"), ("[e1", "[x"), ("e1", "")],
)
async def test_outcomes_round_trip_whatever_their_text(
    bus: EventBus, event_id: str, job_id: str
) -> None:
    """An outcome reads back as written, even with the record separator in a value."""
    written = Outcome(
        event_id, "1-0", "webhook", "https://hooks.example.com/in", "failed", 2, False,
        type="progress_update", job_id=job_id, user_id="u\x1f", error="boom\x1f\n[x]",
        status_code=503, duration_ms=1.25, retry_at_ms=1_800_000_000_000, at_ms=1_700_000_000_000,
    )  # fmt: skip
    await bus.commit("webhook", Commit([written.record()], [], [], [], []), "webhook")
    assert await outcomes(bus) == [written]


async def test_a_new_group_starts_at_the_end_and_backfills_only_on_purpose(
    bare_bus: EventBus,
) -> None:
    """A channel switched on after events exist does not deliver them (SPEC 11); placing the
    group at an earlier id backfills from there on purpose."""
    await bare_bus.emit_many([progress(f"old{i}") for i in range(5)])
    channel = RecordingChannel()
    await make_consumer(bare_bus, channel).run(burst=True)
    assert channel.delivered == []
    await bare_bus.emit(progress("new"))
    await make_consumer(bare_bus, channel).run(burst=True)

    entries = await bare_bus.range()
    job_of = {decode(fields).id: decode(fields).job_id for _, fields in entries}
    assert [job_of[e] for e, _ in channel.delivered] == ["new"]
    assert await bare_bus.place_group("webhook", entries[2][0]) is False  # moved, not created
    await make_consumer(bare_bus, channel).run(burst=True)
    assert [job_of[e] for e, _ in channel.delivered] == ["new", "old3", "old4", "new"]
