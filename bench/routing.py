"""Routing one event against many registered endpoints: Python per event, side by side.

    python -m bench.routing [--endpoints 10000] [--matching 100] [--events 20000]

10,000 endpoints are registered through the real registry (Redis), a dispatcher's index
loads them, and each event is routed to the ``matching`` endpoints that want its type
(half of them filtered by job, so the filters are exercised too). Printed beside it, as the
yardstick, a plain scan that checks every endpoint's filters per event. Goal (issue 16):
<= 20 us of Python per event with 10,000 endpoints, 100 matching.
"""

from __future__ import annotations

import argparse
import time

from bench._common import scratch_redis
from bookgen_events.app.runner import run_loop
from bookgen_events.endpoint_index import EndpointIndex
from bookgen_events.endpoints import EndpointRegistry, endpoint_recipient
from bookgen_events.events import WEBHOOK_EVENT_NAMES, make_event

OTHER_TYPES = [n for n in WEBHOOK_EVENT_NAMES.values() if n != "job.completed"]


async def main(args: argparse.Namespace) -> None:
    async with scratch_redis() as (redis, prefix):
        registry = EndpointRegistry.for_prefix(redis, prefix)
        for i in range(args.endpoints):
            wanted = "job.completed" if i < args.matching else OTHER_TYPES[i % len(OTHER_TYPES)]
            fields: dict = {"url": f"https://h{i}.example.com/in", "event_types": [wanted]}
            if i < args.matching and i % 2:
                fields["job_ids"] = ["1", "2"]
            await registry.create(fields)
        index = EndpointIndex(registry)
        await index.load()
        event = make_event({"type": "completion", "job_id": "1", "data": {"biography_id": 1}})
        everyone = await registry.all()

        start = time.perf_counter()
        for _ in range(args.events):
            routed = index.recipients(event, "webhook")
        ours = (time.perf_counter() - start) / args.events * 1e6

        scan_events = max(args.events // 50, 100)
        start = time.perf_counter()
        for _ in range(scan_events):
            scanned = [endpoint_recipient(e) for e in everyone if e.wants(event)]
        scan = (time.perf_counter() - start) / scan_events * 1e6
        assert sorted(routed) == sorted(scanned) and len(routed) == args.matching

        print(f"{args.endpoints} endpoints, {args.matching} wanting the event's type "
              f"({args.matching // 2} of them filtered by job)")  # fmt: skip
        print(f"{'routing by the index':34} {ours:8.2f} us/event  (goal <= 20 us)")
        print(f"{'scanning every endpoint':34} {scan:8.2f} us/event  (yardstick)")
        print(f"{'ratio index / scan':34} {ours / scan:8.4f}x")
        print("met" if ours <= 20 else "NOT met")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--endpoints", type=int, default=10_000)
    parser.add_argument("--matching", type=int, default=100)
    parser.add_argument("--events", type=int, default=20_000)
    run_loop(main(parser.parse_args()))
