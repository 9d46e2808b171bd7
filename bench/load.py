"""Load: N events through every channel, each a real process, on this machine.

    python -m bench.load [--events 100000] [--ws-clients 4] [--maxlen-events 30000] [--json]

Processes: ``bookgen-events gateway``, ``consume webhook``, ``consume email``,
``consume logger``, a loopback aiohttp webhook receiver (``bench.webhook``'s) and an
aiosmtpd sink; WebSocket clients run in this process. Every event carries a webhook URL,
one email address and a job id watched by one of the WebSocket clients.

Reported: sustained events/s end to end (first emit to the last channel drained), emit ->
delivered latency p50/p99 per channel (webhook and email from the deliveries stream's
``latency_ms``; WebSocket from receive time vs the event's ``timestamp``; the logger from
its group's read position sampled every 100 ms, so +-50 ms), peak RSS of each process
(VmHWM), Redis bytes per retained event, and a second phase with ``STREAM_MAXLEN=10000``
showing XLEN and stream memory stay bounded while more events are emitted.

Emission is unpaced by default, so latencies are those of a saturated system and include
the backlog; ``--rate`` paces emission below capacity to measure latency without one.
The raw baseline is pipelined XADD of the same encoded events: the stream's own ceiling.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
from redis.asyncio import Redis
from websockets.asyncio.client import connect

from bench._common import free_port, redis_url, smtp_sink_argv
from bookgen_events import EventBus
from bookgen_events.channel import GROUP_CHANNELS
from bookgen_events.connection import create_redis
from bookgen_events.events import WIRE_FIELD, encode, make_event
from bookgen_events.outcomes import Outcome

BIN = Path(sys.executable).with_name("bookgen-events")
GROUPS = (*GROUP_CHANNELS, "logger")
JOBS = 50  # job ids 0..49; WebSocket client k watches job k


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def peak_rss_mb(pid: int) -> float:
    """Peak resident memory (VmHWM) of a live process, in MB."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def sample(i: int, hook: str) -> dict[str, Any]:
    return {
        "type": "progress_update",
        "job_id": str(i % JOBS),
        "user_id": f"user{i % 7}",
        "data": {"progress": i % 101, "phase": f"Chapter {i % 20} of 20"},
        "webhook_url": hook,
        "emails": [f"reader{i % 5}@example.com"],
    }


@dataclass
class Fleet:
    """The processes of one run; stopped (SIGTERM, then SIGKILL) on exit."""

    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start(self, name: str, argv: list[str], env: dict[str, str], log: Path) -> None:
        with log.open("wb") as out:
            self.procs[name] = subprocess.Popen(
                argv, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )

    def check(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited early with {proc.returncode}")

    def peaks(self) -> dict[str, float]:
        return {name: peak_rss_mb(proc.pid) for name, proc in self.procs.items()}

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@contextlib.contextmanager
def fleet() -> Iterator[Fleet]:
    running = Fleet()
    try:
        yield running
    finally:
        running.stop()


async def wait_port(port: int, deadline_s: float = 20.0) -> None:
    deadline = time.monotonic() + deadline_s
    while True:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listens on {port}") from None
            await asyncio.sleep(0.05)
        else:
            writer.close()
            return


async def wait_healthy(base: str, deadline_s: float = 30.0) -> None:
    deadline = time.monotonic() + deadline_s
    async with httpx.AsyncClient() as client:
        while True:
            with contextlib.suppress(httpx.TransportError):
                if (await client.get(f"{base}/health", timeout=1)).status_code == 200:
                    return
            if time.monotonic() > deadline:
                raise TimeoutError(f"{base} never became healthy")
            await asyncio.sleep(0.1)


@dataclass
class WsClient:
    """One WebSocket client watching one job; records emit->receive latency (ms)."""

    job: str
    latencies: list[float] = field(default_factory=list)

    async def run(self, url: str, ready: asyncio.Event) -> None:
        async with connect(f"{url}?job_id={self.job}", max_queue=None) as ws:
            ready.set()
            async for raw in ws:
                received = time.time()
                message = json.loads(raw)
                if "timestamp" in message:
                    sent = datetime.fromisoformat(message["timestamp"]).timestamp()
                    self.latencies.append((received - sent) * 1000)


async def group_state(bus: EventBus) -> dict[str, dict[str, Any]]:
    return {g["name"]: g for g in await bus.groups_info()}


async def drained(bus: EventBus, total: int) -> bool:
    groups = await group_state(bus)
    if any(g not in groups or groups[g]["pending"] or (groups[g].get("lag") or 0) for g in GROUPS):
        return False
    if any(int(groups[g].get("entries-read") or 0) < total for g in GROUPS):
        return False
    logger = {g["name"]: g for g in await bus.groups_info(bus.names.deliveries)}.get("logger")
    if logger is None or logger["pending"] or (logger.get("lag") or 0):
        return False
    scheduled = [await bus.redis.zcard(bus.names.scheduled(c)) for c in GROUP_CHANNELS]
    return not any(scheduled)


async def sample_logger(bus: EventBus, samples: list[tuple[float, int, int]]) -> None:
    """Every 100 ms: (time, the logger group's entries-read, its last-delivered-id in ms)."""
    while True:
        logger = (await group_state(bus)).get("logger", {})
        last = str(logger.get("last-delivered-id", "0-0")).split("-")[0]
        samples.append((time.time(), int(logger.get("entries-read") or 0), int(last)))
        await asyncio.sleep(0.1)


async def delivery_latencies(bus: EventBus) -> dict[str, dict[str, Any]]:
    """Per channel: final outcome counts and latency_ms of deliveries, from the stream."""
    out: dict[str, dict[str, Any]] = {}
    start = "-"
    while True:
        page = await bus.redis.xrange(bus.names.deliveries, start, "+", count=5000)
        for _, fields in page:
            outcome = Outcome.from_fields(fields)
            row = out.setdefault(outcome.channel, {"latencies": [], "statuses": {}})
            if outcome.final:
                row["statuses"][outcome.status] = row["statuses"].get(outcome.status, 0) + 1
            if outcome.status == "delivered" and outcome.latency_ms is not None:
                row["latencies"].append(outcome.latency_ms)
        if len(page) < 5000:
            return out
        start = f"({page[-1][0]}"


async def raw_xadd_rate(redis: Redis, payloads: list[dict[str, bytes]], key: str) -> float:
    started = time.perf_counter()
    for i in range(0, len(payloads), 500):
        pipe = redis.pipeline(transaction=False)
        for p in payloads[i : i + 500]:
            pipe.xadd(key, p, maxlen=10_000_000)  # type: ignore[arg-type]
        await pipe.execute()
    rate = len(payloads) / (time.perf_counter() - started)
    await redis.delete(key)
    return rate


async def delete_prefix(redis: Redis, prefix: str) -> None:
    keys = [k async for k in redis.scan_iter(match=f"{prefix}:*", count=1000)]
    for i in range(0, len(keys), 1000):
        await redis.delete(*keys[i : i + 1000])


@contextlib.asynccontextmanager
async def scratch(redis: Redis) -> AsyncIterator[str]:
    prefix = f"load{uuid.uuid4().hex[:8]}"
    try:
        yield prefix
    finally:
        await delete_prefix(redis, prefix)


def env_for(prefix: str, url: str, workdir: Path, hook_port: int, smtp_port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BOOKGEN", "REDIS"))}
    env.update(
        REDIS_URL=url,
        STREAM_PREFIX=prefix,
        STREAM_MAXLEN="1000000",
        WEBHOOK_ALLOW_PRIVATE="true",
        WEBHOOK_SECRET="whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        NOTIFICATION_RATE_LIMIT_PER_MINUTE="0",
        NOTIFICATION_RATE_LIMIT_PER_HOUR="0",
        EMAIL_ENABLED="true",
        SMTP_HOST="127.0.0.1",
        SMTP_PORT=str(smtp_port),
        SMTP_USE_TLS="false",
        WEBSOCKET_AUTH="none",
        WEBSOCKET_MAX_CONNECTIONS_PER_USER="1000000",  # every client is on 127.0.0.1
        DATABASE_URL=f"sqlite:///{workdir / 'bookgen.db'}",
        LOG_LEVEL="WARNING",
        LOG_FORMAT="json",
        PYTHONUNBUFFERED="1",
    )
    return env


async def load_phase(args: argparse.Namespace, redis: Redis) -> dict[str, Any]:
    n = args.events
    url = redis_url()
    async with scratch(redis) as prefix:
        workdir = Path(tempfile.mkdtemp(prefix="bookgen-load-"))
        hook_port, smtp_port, gw_port = free_port(), free_port(), free_port()
        env = env_for(prefix, url, workdir, hook_port, smtp_port)
        bus = EventBus(redis, prefix=prefix, maxlen=1_000_000)
        hook = f"http://127.0.0.1:{hook_port}/hook/load"
        events = [make_event(sample(i, hook)) for i in range(n)]
        payloads = [{WIRE_FIELD: encode(e, 65536)} for e in events]
        baseline = await raw_xadd_rate(redis, payloads, f"{prefix}:raw")
        # Dicts: emit validates them and stamps occurred_at at emit time, as a producer would.
        events = [sample(i, hook) for i in range(n)]
        with fleet() as procs:
            py = sys.executable
            procs.start(
                "receiver",
                [py, "-m", "bench.webhook", "--serve-receiver", str(hook_port)],
                env,
                workdir / "receiver.log",
            )
            procs.start(
                "smtp-sink",
                smtp_sink_argv(smtp_port),
                env,
                workdir / "smtp.log",
            )
            await wait_port(hook_port)
            await wait_port(smtp_port)
            for worker in GROUPS:
                procs.start(worker, [str(BIN), "consume", worker], env, workdir / f"{worker}.log")
            procs.start(
                "gateway",
                [str(BIN), "gateway", "--port", str(gw_port)],
                env,
                workdir / "gateway.log",
            )
            await wait_healthy(f"http://127.0.0.1:{gw_port}")
            deadline = time.monotonic() + 30
            while set(GROUPS) - set(await group_state(bus)):
                procs.check()
                if time.monotonic() > deadline:
                    raise TimeoutError("the consumer groups never appeared")
                await asyncio.sleep(0.1)
            clients = [WsClient(str(k)) for k in range(args.ws_clients)]
            readies = [asyncio.Event() for _ in clients]
            ws_tasks = [
                asyncio.create_task(c.run(f"ws://127.0.0.1:{gw_port}/ws/notifications", r))
                for c, r in zip(clients, readies, strict=True)
            ]
            await asyncio.wait_for(asyncio.gather(*(r.wait() for r in readies)), 10)
            before = int((await redis.info("memory"))["used_memory"])

            logger_samples: list[tuple[float, int, int]] = []  # (time, entries-read, last id ms)
            sampler = asyncio.create_task(sample_logger(bus, logger_samples))
            started = time.time()
            step = 500 if not args.rate else max(1, int(args.rate // 20))
            for i in range(0, n, step):
                await bus.emit_many(events[i : i + step])
                if args.rate:  # paced: hold the schedule of `rate` events per second
                    ahead = started + (i + step) / args.rate - time.time()
                    if ahead > 0:
                        await asyncio.sleep(ahead)
            emitted_at = time.time()
            deadline = time.monotonic() + args.timeout
            while not await drained(bus, n):
                procs.check()
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"not drained after {args.timeout}s: {await group_state(bus)}"
                    )
                await asyncio.sleep(0.1)
            finished = time.time()
            sampler.cancel()
            await asyncio.gather(sampler, return_exceptions=True)
            expected_ws = sum(1 for i in range(n) if i % JOBS < args.ws_clients)
            ws_deadline = time.monotonic() + 30
            while (  # noqa: ASYNC110  (polling plain counters of the clients)
                sum(len(c.latencies) for c in clients) < expected_ws
                and time.monotonic() < ws_deadline
            ):
                await asyncio.sleep(0.1)
            peaks = procs.peaks()
            peaks["bench (emitter + ws clients)"] = peak_rss_mb(os.getpid())
            after = int((await redis.info("memory"))["used_memory"])
            xlen = await bus.length()
            stream_bytes = int(await redis.memory_usage(bus.names.events, samples=0) or 0)
            for task in ws_tasks:
                task.cancel()
            await asyncio.gather(*ws_tasks, return_exceptions=True)

        per_channel = await delivery_latencies(bus)
        logger_lat: list[float] = []
        prev_read = 0
        for at, read, last_ms in logger_samples:
            logger_lat += [at * 1000 - last_ms] * max(0, read - prev_read)
            prev_read = max(prev_read, read)
        ws_lat = [v for c in clients for v in c.latencies]
        channels = {
            name: {
                "p50_ms": percentile(row["latencies"], 0.5),
                "p99_ms": percentile(row["latencies"], 0.99),
                "final": row["statuses"],
            }
            for name, row in per_channel.items()
        }
        channels["websocket"] = {
            "p50_ms": percentile(ws_lat, 0.5),
            "p99_ms": percentile(ws_lat, 0.99),
            "final": {"received": len(ws_lat), "expected": expected_ws},
        }
        channels["logger"] = {
            "p50_ms": percentile(logger_lat, 0.5),
            "p99_ms": percentile(logger_lat, 0.99),
            "final": {"read": prev_read},
        }
        payload_bytes = sum(len(p[WIRE_FIELD]) for p in payloads) / n
        return {
            "events": n,
            "rate": args.rate,
            "events_per_s": n / (finished - started),
            "emit_per_s": n / (emitted_at - started),
            "raw_xadd_per_s": baseline,
            "seconds": finished - started,
            "channels": channels,
            "peak_rss_mb": peaks,
            "redis": {
                "xlen": xlen,
                "stream_bytes_per_event": stream_bytes / max(xlen, 1),
                "used_memory_delta_per_event": (after - before) / max(xlen, 1),
                "payload_bytes_per_event": payload_bytes,
            },
            "workdir": str(workdir),
        }


async def maxlen_phase(args: argparse.Namespace, redis: Redis) -> dict[str, Any]:
    """Emit ``--maxlen-events`` with STREAM_MAXLEN=10000: XLEN and memory must plateau."""
    maxlen = 10_000
    async with scratch(redis) as prefix:
        bus = EventBus(redis, prefix=prefix, maxlen=maxlen)
        samples: list[tuple[int, int, int]] = []  # (emitted, xlen, bytes)
        for i in range(0, args.maxlen_events, 500):
            await bus.emit_many(
                [sample(j, "https://hooks.example.com/in") for j in range(i, i + 500)]
            )
            if (i + 500) % 2500 == 0:
                xlen = await bus.length()
                size = int(await redis.memory_usage(bus.names.events, samples=0) or 0)
                samples.append((i + 500, xlen, size))
        after_fill = [s for s in samples if s[0] >= maxlen]
        return {
            "maxlen": maxlen,
            "emitted": args.maxlen_events,
            "max_xlen": max(s[1] for s in samples),
            "final_xlen": samples[-1][1],
            "max_bytes_after_fill": max(s[2] for s in after_fill) if after_fill else 0,
            "bytes_at_fill": after_fill[0][2] if after_fill else 0,
            "samples": samples,
        }


def rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Machine-readable rows: measure, ours, baseline (or None), goal (text), met (or None)."""
    load, bound = result["load"], result["maxlen"]
    pace = f"paced at {load['rate']:,.0f}/s" if load["rate"] else "unpaced"
    out = [
        {
            "measure": f"end-to-end events/s, all channels ({pace}) vs raw pipelined XADD",
            "ours": load["events_per_s"],
            "baseline": None if load["rate"] else load["raw_xadd_per_s"],
            "goal": "report",
            "met": None,
        }
    ]
    for name, ch in sorted(load["channels"].items()):
        out.append(
            {
                "measure": f"{name} emit->delivered p50 / p99 ms",
                "ours": f"{ch['p50_ms']:.0f} / {ch['p99_ms']:.0f}",
                "baseline": None,
                "goal": "report",
                "met": None,
            }
        )
    redis_row = load["redis"]
    out.append(
        {
            "measure": "Redis bytes per retained event vs its JSON payload",
            "ours": redis_row["stream_bytes_per_event"],
            "baseline": redis_row["payload_bytes_per_event"],
            "goal": "report",
            "met": None,
        }
    )
    out.append(
        {
            "measure": f"max XLEN with STREAM_MAXLEN={bound['maxlen']:,} ({bound['emitted']:,} emitted)",
            "ours": bound["max_xlen"],
            "baseline": bound["maxlen"],
            "goal": "<= 1.05x",
            "met": bound["max_xlen"] <= bound["maxlen"] * 1.05,
        }
    )
    out.append(
        {
            "measure": "stream bytes after fill: max vs at fill",
            "ours": bound["max_bytes_after_fill"],
            "baseline": bound["bytes_at_fill"],
            "goal": "<= 1.10x",
            "met": bound["max_bytes_after_fill"] <= bound["bytes_at_fill"] * 1.10,
        }
    )
    for name, mb in sorted(load["peak_rss_mb"].items()):
        out.append(
            {
                "measure": f"peak RSS MB: {name}",
                "ours": mb,
                "baseline": None,
                "goal": "report",
                "met": None,
            }
        )
    return out


def print_report(result: dict[str, Any]) -> None:
    load, bound = result["load"], result["maxlen"]
    pace = f"paced at {load['rate']:,.0f}/s" if load["rate"] else "unpaced"
    print(f"\n### load: {load['events']:,} events ({pace}) through every channel\n")
    print(
        f"sustained end to end: {load['events_per_s']:,.0f} events/s "
        f"({load['seconds']:.1f} s; emit alone {load['emit_per_s']:,.0f}/s; "
        f"raw pipelined XADD {load['raw_xadd_per_s']:,.0f}/s)\n"
    )
    print("| channel | p50 ms | p99 ms | final outcomes |")
    print("| --- | ---: | ---: | --- |")
    for name, ch in sorted(load["channels"].items()):
        print(f"| {name} | {ch['p50_ms']:,.0f} | {ch['p99_ms']:,.0f} | {ch['final']} |")
    print("\n| process | peak RSS MB |")
    print("| --- | ---: |")
    for name, mb in sorted(load["peak_rss_mb"].items()):
        print(f"| {name} | {mb:.0f} |")
    r = load["redis"]
    print(
        f"\nRedis: {r['stream_bytes_per_event']:.0f} B per retained event in the stream "
        f"(payload {r['payload_bytes_per_event']:.0f} B; INFO used_memory delta "
        f"{r['used_memory_delta_per_event']:.0f} B/event incl. deliveries and DLQs)"
    )
    print(
        f"\nSTREAM_MAXLEN={bound['maxlen']:,}: emitted {bound['emitted']:,}, max XLEN "
        f"{bound['max_xlen']:,}, final {bound['final_xlen']:,}; stream bytes at fill "
        f"{bound['bytes_at_fill']:,}, max after {bound['max_bytes_after_fill']:,}"
    )
    print("| emitted | XLEN | stream bytes |")
    print("| ---: | ---: | ---: |")
    for emitted, xlen, size in bound["samples"]:
        print(f"| {emitted:,} | {xlen:,} | {size:,} |")


async def main(args: argparse.Namespace) -> dict[str, Any]:
    redis = create_redis(redis_url())
    try:
        result = {"load": await load_phase(args, redis), "maxlen": await maxlen_phase(args, redis)}
    finally:
        await redis.aclose()
    result["rows"] = rows(result)
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--ws-clients", type=int, default=4)
    parser.add_argument("--maxlen-events", type=int, default=30_000)
    parser.add_argument(
        "--rate", type=float, default=0.0, help="events/s to emit at (default 0: unpaced)"
    )
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds to drain")
    parser.add_argument("--json", action="store_true", help="print one JSON object, no table")
    cli = parser.parse_args()
    outcome = asyncio.run(main(cli))
    if cli.json:
        print(json.dumps(outcome, default=str))
    else:
        print_report(outcome)
