"""emit vs raw XADD (one at a time) and emit_many vs raw pipelined XADD, same run, same Redis.

    python -m bench.emit [--events 20000] [--rounds 3]

Each round runs ours and the baseline back to back and keeps the best of each, so a noisy
neighbour hurts both sides alike. The payload of the raw XADD is the same encoded event.
"""

from __future__ import annotations

import argparse

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
        best = {"emit": 0.0, "xadd": 0.0, "emit_many": 0.0, "xadd_pipe": 0.0}
        for _ in range(rounds):
            with Timer() as t:
                for d in dicts:
                    await bus.emit(d)
            best["emit"] = max(best["emit"], n / t.seconds)
            with Timer() as t:
                for p in payloads:
                    await redis.xadd(stream, p, maxlen=1_000_000)
            best["xadd"] = max(best["xadd"], n / t.seconds)
            with Timer() as t:
                for i in range(0, n, 100):
                    await bus.emit_many(dicts[i : i + 100])
            best["emit_many"] = max(best["emit_many"], n / t.seconds)
            with Timer() as t:
                for i in range(0, n, 100):
                    pipe = redis.pipeline(transaction=False)
                    for p in payloads[i : i + 100]:
                        pipe.xadd(stream, p, maxlen=1_000_000)
                    await pipe.execute()
            best["xadd_pipe"] = max(best["xadd_pipe"], n / t.seconds)
            await redis.delete(bus.names.events, stream)
        return report(
            f"emit ({n:,} events, best of {rounds}; events built from dicts and validated)",
            [
                ("emit vs XADD awaited one at a time", best["emit"], best["xadd"], 0.9),
                ("emit_many vs XADD pipelined by 100", best["emit_many"], best["xadd_pipe"], 0.75),
            ],
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--json", action="store_true", help="print one JSON object (table to stderr)"
    )
    args = parser.parse_args()
    run_bench("emit", main(args.events, args.rounds), args.json)
