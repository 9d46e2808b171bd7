"""emit_many and the consumer runtime on a 3-master cluster with 6 partitions vs one node.

    python -m bench.cluster [--events 30000] [--json]

Both setups are started here from the embedded ``valkey-server``, the same binary and
options (no persistence), on loopback: a plain node, and a 3-master cluster
(``tests/support/cluster.py``); each runs ``STREAM_PARTITIONS=6``. On each, one run:

- **emit_many**: ``--events`` events of 300 jobs in batches of 100, one producer.
- **consume**: a consumer per partition with a no-op channel (as ``bench/consume.py``),
  timed until every outcome is written: read, decode, deliver, one outcome per delivery,
  acks, by the commit script.

Besides the rates, each node's CPU (``INFO cpu``: user + sys) and stream/script calls
(``INFO commandstats``) are read before and after each phase: the server CPU per event of
emit and of one consumer group, and each master's share. On this 2-core machine the
client and all three masters share the cores, so the cluster cannot be faster here: the
point is the per-node share (what one node carries when the work is spread), and the
per-event server cost the README's projection starts from.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import redis as sync_redis

from bench._common import Timer, run_bench
from bench.consume import NoopChannel
from bookgen_events import Consumer, EventBus
from bookgen_events.connection import create_redis
from bookgen_events.embedded import EmbeddedRedis
from tests.support.cluster import LocalCluster

PARTITIONS = 6
CALLS = ("evalsha", "xadd", "xreadgroup", "xack", "xautoclaim", "xrange")


def sample(i: int) -> dict[str, Any]:
    return {
        "type": "progress_update",
        "job_id": f"job-{i % 300}",
        "data": {"progress": i % 100, "phase": f"Chapter {i % 20} of 20"},
        "webhook_url": "https://hooks.example.com/in",
    }


def node_stats(url: str) -> dict[str, float]:
    """A node's CPU seconds (user + sys) and its stream/script calls so far."""
    with sync_redis.Redis.from_url(url, decode_responses=True) as node:
        cpu = node.info("cpu")
        stats = node.info("commandstats")
    calls = sum(int(stats.get(f"cmdstat_{name}", {}).get("calls", 0)) for name in CALLS)
    return {"cpu": float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"]), "calls": calls}


def delta(before: list[dict[str, float]], after: list[dict[str, float]]) -> list[dict[str, float]]:
    return [{k: a[k] - b[k] for k in a} for b, a in zip(before, after, strict=True)]


@asynccontextmanager
async def setup(kind: str, folder: Path) -> AsyncIterator[tuple[EventBus, list[str]]]:
    """A bus with 6 partitions on ``kind`` ("node" or "cluster") and its nodes' URLs."""
    if kind == "node":
        server = EmbeddedRedis(folder / "node", port=0, appendonly=False)
        url = await asyncio.to_thread(server.start)
        nodes, stop = [url], server.stop
    else:
        cluster = await asyncio.to_thread(LocalCluster(folder / "cluster").start)
        url = cluster.url
        nodes = [f"redis://{n.address}/0" for n in cluster.primaries()]
        stop = cluster.stop
    redis = create_redis(url)
    try:
        yield EventBus(redis, prefix="bench", maxlen=2_000_000, partitions=PARTITIONS), nodes
    finally:
        await redis.aclose()
        await asyncio.to_thread(stop)


async def measure(kind: str, n: int, folder: Path) -> dict[str, Any]:
    async with setup(kind, folder) as (bus, nodes):
        dicts = [sample(i) for i in range(n)]
        for part in bus.partitions:
            await part.ensure_group("bench", start="0")
        before = [node_stats(u) for u in nodes]
        with Timer() as emit_t:
            for k in range(0, n, 100):
                await bus.emit_many(dicts[k : k + 100])
        after_emit = [node_stats(u) for u in nodes]

        channel = NoopChannel(n)
        share = max(1, 200 // PARTITIONS)
        consumers = [
            Consumer(part, channel, batch=100, concurrency=share, rate_limits=(0, 0))
            for part in bus.partitions
        ]
        with Timer() as consume_t:
            tasks = [asyncio.create_task(c.run()) for c in consumers]
            await channel.done.wait()
            # The last flush follows the last delivery.
            while sum([await p.length(p.names.deliveries) for p in bus.partitions]) < n:  # noqa: ASYNC110 (a Redis poll)
                await asyncio.sleep(0.005)
        for consumer in consumers:
            consumer.stop()
        await asyncio.gather(*tasks)
        after_consume = [node_stats(u) for u in nodes]
    emit_d, consume_d = delta(before, after_emit), delta(after_emit, after_consume)
    return {
        "setup": kind,
        "masters": len(nodes),
        "emit_many_per_s": n / emit_t.seconds,
        "consume_per_s": n / consume_t.seconds,
        "emit_server_cpu_us_per_event": sum(d["cpu"] for d in emit_d) / n * 1e6,
        "consume_server_cpu_us_per_event": sum(d["cpu"] for d in consume_d) / n * 1e6,
        "emit_node_share": [
            round(d["calls"] / max(1, sum(x["calls"] for x in emit_d)), 3) for d in emit_d
        ],
        "consume_node_share": [
            round(d["calls"] / max(1, sum(x["calls"] for x in consume_d)), 3) for d in consume_d
        ],
        "consume_node_cpu_share": [
            round(d["cpu"] / max(1e-9, sum(x["cpu"] for x in consume_d)), 3) for d in consume_d
        ],
    }


def projection(node: dict[str, Any], groups: int = 5) -> list[dict[str, Any]]:
    """Masters needed for a rate with every channel: each event emitted once and read and
    committed by ``groups`` consumer groups (webhook, email, sms, logger, one gateway read
    counted as a group), a master kept at most 70 % busy (Redis runs commands on one
    thread). A floor: channels' own Redis work (rate limits, registries) comes on top."""
    per_event_us = (
        node["emit_server_cpu_us_per_event"] + groups * node["consume_server_cpu_us_per_event"]
    )
    out = []
    for rate in (100_000, 1_000_000):
        cores = rate * per_event_us / 1e6
        out.append({"events_per_s": rate, "server_cpu_cores": round(cores, 1),
                    "masters_at_70pct": max(1, -(-cores // 0.7))})  # fmt: skip
    return out


async def main(n: int) -> list[dict[str, object]]:
    with tempfile.TemporaryDirectory(prefix="bench-cluster-") as tmp:
        node = await measure("node", n, Path(tmp))
        cluster = await measure("cluster", n, Path(tmp))
    print(f"\n### emit_many and consume, {PARTITIONS} partitions, {n:,} events\n")
    print("| setup | emit_many /s | consume /s | server CPU µs/event emit | consume (one group) "
          "| stream calls per master, consume | CPU per master, consume |")  # fmt: skip
    print("| --- | ---: | ---: | ---: | ---: | --- | --- |")
    for row in (node, cluster):
        print(
            f"| {row['setup']} ({row['masters']} master{'s' if row['masters'] > 1 else ''}) "
            f"| {row['emit_many_per_s']:,.0f} | {row['consume_per_s']:,.0f} "
            f"| {row['emit_server_cpu_us_per_event']:.1f} "
            f"| {row['consume_server_cpu_us_per_event']:.1f} "
            f"| {' / '.join(f'{s:.0%}' for s in row['consume_node_share'])} "
            f"| {' / '.join(f'{s:.0%}' for s in row['consume_node_cpu_share'])} |"
        )
    print(
        f"\ncluster / node: emit_many {cluster['emit_many_per_s'] / node['emit_many_per_s']:.2f}x, "
        f"consume {cluster['consume_per_s'] / node['consume_per_s']:.2f}x"
    )
    proj = projection(cluster)
    print("\nprojection (the cluster's per-event server CPU, 5 groups, masters <= 70 % busy):")
    for p in proj:
        print(f"- {p['events_per_s']:,} events/s: {p['server_cpu_cores']} cores -> "
              f"{p['masters_at_70pct']:.0f} masters")  # fmt: skip
    return [node, cluster, {"projection": proj}]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=30_000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    run_bench("cluster", main(args.events), args.json)
