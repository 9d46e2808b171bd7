"""emit vs raw XADD (one at a time) and emit_many vs raw pipelined XADD, same run, same Redis.

    python -m bench.emit [--events 20000] [--rounds 10]

The events are split into slices; each slice runs ours and the baseline back to back (the
order alternating between slices) and the medians are compared, so a noisy neighbour hurts
both sides alike. The payload of the raw XADD is the same encoded event.
"""

from __future__ import annotations

import argparse
import statistics

from bench._common import Timer, report, run_bench, scratch_redis
from bookgen_events import EventBus
from bookgen_events.events import WIRE_FIELD, encode, make_event


def sample(i: int) -> dict:
    return {
        "type": "progress_update",
        "job_id": str(i % 100),
        "data": {"progress": i % 100, "phase": f"Chapter {i % 20} of 20"},
        "webhook_url": "https://hooks.example.com/in",
    }


async def main(n: int, rounds: int) -> list[dict[str, object]]:
    async with scratch_redis() as (redis, prefix):
        bus = EventBus(redis, prefix=prefix, maxlen=1_000_000)
        stream = f"{prefix}:raw"
        dicts = [sample(i) for i in range(n)]
        payloads = [{WIRE_FIELD: encode(make_event(d), 65536)} for d in dicts]

        async def emit(i: int, j: int) -> None:
            for d in dicts[i:j]:
                await bus.emit(d)

        async def xadd(i: int, j: int) -> None:
            for p in payloads[i:j]:
                await redis.xadd(stream, p, maxlen=1_000_000)

        async def emit_many(i: int, j: int) -> None:
            for k in range(i, j, 100):
                await bus.emit_many(dicts[k : min(k + 100, j)])

        async def xadd_pipe(i: int, j: int) -> None:
            for k in range(i, j, 100):
                pipe = redis.pipeline(transaction=False)
                for p in payloads[k : min(k + 100, j)]:
                    pipe.xadd(stream, p, maxlen=1_000_000)
                await pipe.execute()

        pairs = [("emit", emit, "xadd", xadd), ("emit_many", emit_many, "xadd_pipe", xadd_pipe)]
        rates: dict[str, list[float]] = {name: [] for pair in pairs for name in pair[::2]}
        size = n // rounds
        for r in range(rounds):
            i, j = r * size, (r + 1) * size
            for ours, ours_fn, raw, raw_fn in pairs:
                # Alternate which side goes first, so warm-up and drift hurt both alike.
                order = [(ours, ours_fn), (raw, raw_fn)][:: 1 if r % 2 == 0 else -1]
                for name, fn in order:
                    with Timer() as t:
                        await fn(i, j)
                    rates[name].append(size / t.seconds)
            await redis.delete(bus.names.events, stream)
        med = {name: statistics.median(values) for name, values in rates.items()}
        return report(
            f"emit ({n:,} events in {rounds} interleaved slices, medians; events built from "
            "dicts and validated)",
            [
                ("emit vs XADD awaited one at a time", med["emit"], med["xadd"], 0.9),
                ("emit_many vs XADD pipelined by 100", med["emit_many"], med["xadd_pipe"], 0.75),
            ],
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=10, help="interleaved slices")
    parser.add_argument(
        "--json", action="store_true", help="print one JSON object (table to stderr)"
    )
    args = parser.parse_args()
    run_bench("emit", main(args.events, args.rounds), args.json)
