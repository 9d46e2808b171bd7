"""The consumer runtime with a no-op channel vs raw XREADGROUP COUNT 100 + XACK, same run.

    python -m bench.consume [--events 50000] [--rounds 3] [--peer-events 10000]

Ours is the runtime as a worker runs it (``Consumer.run()``, on the worker's event loop,
see ``runner.run_loop``), timed until every outcome is written: it decodes and validates
each event, delivers it on the runtime's worker pool, writes one outcome entry per delivery
on the deliveries stream and acks, outcomes and acks written by one script call per flush.
The raw baseline reads batches of 100 and acks them, nothing else.

A third row, the floor, does only the work the runtime is required to do, inline and one
batch at a time: read 100, validate each event, write one outcome per entry and the acks in
one commit. The runtime overlaps reading, delivering and writing, so it can beat the floor.

The peer is FastStream (``bench/faststream_peer.py``) in its own virtualenv,
``bookgen-bench-faststream`` in the temp folder, created on first use (``--peer-venv`` to
move it): a consumer group on its own stream holding ``--peer-events`` of the same event
bodies in FastStream's envelope, each validated into a pydantic model of our event by
FastStream, handed to a no-op handler and acked; once one message per handler call, once
a batch of 100 per call (for reference). Rates are compared, not times.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
from collections.abc import Sequence
from pathlib import Path

from bench import faststream_peer
from bench._common import Timer, redis_url, report, run_bench, scratch_redis
from bookgen_events import Consumer, Event, EventBus
from bookgen_events.bus import Commit
from bookgen_events.events import decode
from bookgen_events.outcomes import outcome_record


class NoopChannel:
    """Delivers nothing; sets ``done`` after ``expected`` deliveries."""

    name = "bench"

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.delivered = 0
        self.done = asyncio.Event()

    def recipients(self, event: Event) -> Sequence[str]:
        return [event.webhook_url] if event.webhook_url else []

    def rate_limit_key(self, event: Event, recipient: str) -> str | None:
        return None

    async def deliver(self, event: Event, recipient: str) -> int:
        self.delivered += 1
        if self.delivered == self.expected:
            self.done.set()
        return 200


def sample(i: int) -> dict:
    return {
        "type": "progress_update",
        "job_id": str(i % 100),
        "data": {"progress": i % 100, "phase": "Chapter 3 of 20"},
        "webhook_url": "https://hooks.example.com/in",
    }


async def fill(bus: EventBus, n: int) -> None:
    events = [sample(i) for i in range(n)]
    for i in range(0, n, 1000):
        await bus.emit_many(events[i : i + 1000])


async def raw(bus: EventBus, n: int) -> float:
    redis, stream = bus.redis, bus.names.events
    await redis.xgroup_create(stream, "raw", id="0")
    done = 0
    with Timer() as t:
        while done < n:
            reply = await redis.xreadgroup("raw", "c", {stream: ">"}, count=100)
            ids = [entry_id for entry_id, _ in reply[0][1]]
            await redis.xack(stream, "raw", *ids)
            done += len(ids)
    return n / t.seconds


async def floor(bus: EventBus, n: int) -> float:
    await bus.ensure_group("floor", start="0")  # a new group starts at "$": read the fill
    done = 0
    with Timer() as t:
        while done < n:
            commit = Commit.empty()
            for entry_id, fields in await bus.read_group("floor", "c", count=100, block_ms=None):
                event = decode(fields)
                outcome = outcome_record(
                    event.id,
                    entry_id,
                    "floor",
                    event.webhook_url or "",
                    "delivered",
                    1,
                    True,
                    event.type.value,
                    event.job_id or "",
                )
                commit.outcomes.append(outcome)
                commit.acks.append(entry_id)
            await bus.commit("floor", commit, "floor")
            done += len(commit.acks)
    return n / t.seconds


async def ours(bus: EventBus, n: int) -> float:
    """The runtime as it runs in a worker (``run()``), timed until every outcome is written."""
    channel = NoopChannel(n)
    consumer = Consumer(bus, channel, batch=100, concurrency=200, rate_limits=(0, 0))
    await bus.ensure_group(consumer.group, start="0")  # a new group starts at "$"
    with Timer() as t:
        running = asyncio.create_task(consumer.run())
        await channel.done.wait()
        # The last outcomes are written by the flusher just after the last delivery.
        while await bus.redis.xlen(bus.names.deliveries) < n:  # noqa: ASYNC110 (a Redis poll)
            await asyncio.sleep(0.001)
    consumer.stop()
    await running
    assert await bus.redis.xlen(bus.names.deliveries) == n
    return n / t.seconds


async def main(n: int, rounds: int, peer_n: int, peer_venv: str) -> list[dict[str, object]]:
    python = faststream_peer.ensure_venv(Path(peer_venv))
    peer_n = min(peer_n, n)
    rates: dict[str, list[float]] = {k: [] for k in ("ours", "raw", "floor", "fs", "fs_batch")}
    for _ in range(rounds):
        async with scratch_redis() as (redis, prefix):
            bus = EventBus(redis, prefix=prefix, maxlen=10_000_000)
            await fill(bus, n)
            rates["raw"].append(await raw(bus, n))
            rates["ours"].append(await ours(bus, n))
            rates["floor"].append(await floor(bus, n))
            for batch in (False, True):  # FastStream copies its bodies from our stream
                stream = f"{prefix}:faststream{batch:d}"
                rate = await faststream_peer.measure(
                    python, redis_url(), bus.names.events, stream, peer_n, batch=batch
                )
                rates["fs_batch" if batch else "fs"].append(rate)
    # Medians, not the best round (the box is noisy); each round's own ratio is printed too.
    med = {k: statistics.median(v) for k, v in rates.items()}
    per_round = [o / r for o, r in zip(rates["ours"], rates["raw"], strict=True)]
    rows = report(
        f"consumer runtime ({n:,} events, no-op channel, medians of {rounds} rounds)",
        [
            ("runtime (decode, outcome, ack) vs XREADGROUP+XACK", med["ours"], med["raw"], 0.5),
            (
                "floor: the required work inline, no runtime (for reference)",
                med["floor"],
                med["raw"],
                None,
            ),
            (
                f"FastStream ({peer_n:,} msgs), a message per handler call, vs XREADGROUP+XACK",
                med["fs"],
                med["raw"],
                None,
            ),
            (
                "runtime vs FastStream, a message per call (baseline: FastStream)",
                med["ours"],
                med["fs"],
                20.0,
            ),
            (
                "FastStream, 100 messages per call, one XACK, vs XREADGROUP+XACK (reference)",
                med["fs_batch"],
                med["raw"],
                None,
            ),
            (
                "runtime vs FastStream, 100 per call (baseline: FastStream, reference)",
                med["ours"],
                med["fs_batch"],
                None,
            ),
        ],
    )
    print(
        "\nruntime vs XREADGROUP+XACK, each round: "
        + ", ".join(f"{ratio:.2f}x" for ratio in per_round)
    )
    return rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--peer-events", type=int, default=10_000, help="FastStream's messages (~3 k/s)"
    )
    parser.add_argument(
        "--peer-venv", default=str(Path(tempfile.gettempdir()) / "bookgen-bench-faststream")
    )
    parser.add_argument(
        "--json", action="store_true", help="print one JSON object (table to stderr)"
    )
    args = parser.parse_args()
    run_bench(
        "consume", main(args.events, args.rounds, args.peer_events, args.peer_venv), args.json
    )
