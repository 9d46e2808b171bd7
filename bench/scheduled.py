"""Scheduled events held and moved (SPEC 11): Redis bytes per held event, due -> appended.

    python -m bench.scheduled [--held 1000000] [--rate 1000] [--seconds 10]

First ``--held`` events are scheduled an hour ahead (they stay held throughout) and Redis's
``used_memory`` read before and after: bytes per held event, its idempotency key included.
Then ``--rate`` events a second fall due for ``--seconds`` seconds (emitted beforehand,
each due at its own ms) while one mover (:func:`keep_moving`, as every worker process runs
it) moves them; each one's lateness is its stream id's time minus its due time, both by
Redis's clock. Goal: p99 <= 1 s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta

from bench._common import run_bench, scratch_redis
from bookgen_events import EventBus
from bookgen_events.events import make_event
from bookgen_events.scheduled_events import keep_moving


def sample(i: int, deliver_at: datetime) -> dict:
    return {
        "type": "progress_update",
        "job_id": str(i % 1000),
        "data": {"progress": i % 100, "phase": f"Chapter {i % 20} of 20"},
        "webhook_url": "https://hooks.example.com/in",
        "deliver_at": deliver_at,
    }


async def main(held: int, rate: int, seconds: int) -> dict[str, object]:
    async with scratch_redis() as (redis, prefix):
        bus = EventBus(redis, prefix=prefix, maxlen=10_000_000)
        later = datetime.now(UTC) + timedelta(hours=1)
        before = int((await redis.info("memory"))["used_memory"])
        t0 = time.perf_counter()
        for k in range(0, held, 5000):
            await bus.emit_many([sample(i, later) for i in range(k, min(k + 5000, held))])
        hold_s = time.perf_counter() - t0
        after = int((await redis.info("memory"))["used_memory"])
        per_event = (after - before) / held if held else 0.0
        print(
            f"held {held:,} events in {hold_s:.1f} s: {per_event:,.0f} bytes each", file=sys.stderr
        )

        # Events falling due at `rate` a second, each at its own ms, starting in 3 s.
        n = rate * seconds
        start = datetime.now(UTC) + timedelta(seconds=3)
        due = [make_event(sample(i, start + timedelta(seconds=i / rate))) for i in range(n)]
        await bus.emit_many(due)
        stop = asyncio.Event()
        mover = asyncio.create_task(keep_moving(bus.scheduled_events, stop))

        async def all_appended() -> None:
            while await bus.length() < n:  # noqa: ASYNC110
                await asyncio.sleep(0.5)

        try:
            await asyncio.wait_for(all_appended(), 3 + seconds + 30)
        except TimeoutError:
            pass  # reported as fewer appended than due
        stop.set()
        await mover
        late_ms: list[int] = []
        for entry_id, fields in await bus.range():
            event = json.loads(fields["event"])
            due_ms = datetime.fromisoformat(event["deliver_at"]).timestamp() * 1000
            late_ms.append(int(entry_id.split("-")[0]) - int(-(-due_ms // 1)))
        late_ms.sort()
        q = statistics.quantiles(late_ms, n=100) if len(late_ms) > 1 else [0] * 99
        result = {
            "held": held,
            "bytes_per_held_event": round(per_event),
            "hold_seconds": round(hold_s, 1),
            "due_events": n,
            "appended": len(late_ms),
            "late_ms_min": late_ms[0] if late_ms else None,
            "late_ms_p50": q[49],
            "late_ms_p99": q[98],
            "late_ms_max": late_ms[-1] if late_ms else None,
            "goal_p99_ms": 1000,
        }
        print(
            f"\n### scheduled events ({held:,} held, {rate:,}/s falling due for {seconds} s)\n\n"
            f"- Redis bytes per held event (JSON, set, hash, idempotency key): {per_event:,.0f}\n"
            f"- due -> appended: min {result['late_ms_min']} ms, p50 {q[49]:.0f} ms, "
            f"p99 {q[98]:.0f} ms, max {result['late_ms_max']} ms "
            f"({len(late_ms):,} of {n:,} appended; goal p99 <= 1000 ms)"
        )
        return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--held", type=int, default=1_000_000)
    parser.add_argument("--rate", type=int, default=1000, help="events falling due per second")
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    run_bench("scheduled", main(args.held, args.rate, args.seconds), args.json)
