"""Webhook throughput: the dispatcher end to end vs a raw aiohttp POST loop, in one run.

The receiver is an aiohttp web server in a separate process on loopback. The figures, all at
the same concurrency against the same receiver:

- raw aiohttp POSTs (the goal's yardstick);
- httpx POSTs on httpx's default transport (``--httpx``, a reference);
- the dispatcher: the real :class:`Consumer` with the webhook channel, so reading, decoding,
  signing, the per-recipient rate limit (set high, still checked), outcomes and acks are
  included; delivering to each event's own ``webhook_url``, to 1 registered endpoint, and to
  100 endpoints matching every event (the same number of deliveries each time).

Each line prints deliveries/s against raw POSTs/s, and the CPU us per delivery of this
process (only the dispatcher runs in it while timed) against the CPU us per raw POST; the raw
figures are the mean of raw loops run just before and just after that dispatcher run, so a
shared, noisy box skews both sides alike.

The whole process runs as a dispatcher process runs (``runner.run_loop``: uvloop, the cyclic
collector frozen at start and its gen0 threshold raised), the raw loops on the same loop. With
CPython's default collector this process had spent ~100 us of every delivery in collections
(gen2 passes over every object the dispatcher keeps alive, ~110,000 of them; ~300 us with 100
endpoints, whose 5,000 waiting requests are scanned too); measured in one process on
asyncio's loop, three paired runs, 1 endpoint: 491-522 CPU us per delivery tuned as the
runner tunes it, 573-605 us untuned.

    REDIS_URL=redis://127.0.0.1:6379/0 python -m bench.webhook [--events 4000] [--concurrency 50]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import httpx
from pydantic import SecretStr

from bench._common import free_port
from bookgen_events.app.runner import run_loop
from bookgen_events.bus import EventBus
from bookgen_events.connection import create_redis
from bookgen_events.consumer import Consumer
from bookgen_events.endpoint_health import EndpointHealth
from bookgen_events.endpoint_index import EndpointIndex
from bookgen_events.endpoints import EndpointRegistry
from bookgen_events.events import Event
from bookgen_events.settings import load_settings
from consumers.signing import new_secret
from consumers.webhook import encode_payload, open_channel

BODY = encode_payload(
    Event(type="completion", job_id="123", data={"biography_id": 456, "status": "completed"})
)
HEADERS = {"content-type": "application/json"}


def _serve_receiver(port: int) -> None:
    """The receiver process: answers every POST with 200 after reading the body."""
    from aiohttp import web

    async def hook(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/hook/{name}", hook)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


def _wait_listening(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("the receiver did not start")


async def _loop(n: int, concurrency: int, post: Callable[[], Awaitable[int]]) -> float:
    """POST ``n`` times with ``concurrency`` workers; returns requests per second."""
    remaining = n

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            status = await post()
            assert status == 200, status

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return n / (time.perf_counter() - started)


async def raw_aiohttp(url: str, n: int, concurrency: int) -> tuple[float, float]:
    """POSTs per second and CPU us per POST of a bare aiohttp loop (the yardstick)."""
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def post() -> int:
            async with session.post(url, data=BODY, headers=HEADERS) as response:
                await response.read()
                return response.status

        await _loop(concurrency, concurrency, post)  # warm the pool
        cpu = time.process_time()
        rate = await _loop(n, concurrency, post)
        return rate, (time.process_time() - cpu) / n * 1e6


async def httpx_loop(url: str, n: int, concurrency: int) -> float:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    transport = httpx.AsyncHTTPTransport(limits=limits)
    async with httpx.AsyncClient(transport=transport) as client:

        async def post() -> int:
            response = await client.post(url, content=BODY, headers=HEADERS)
            return response.status_code

        await _loop(concurrency, concurrency, post)
        return await _loop(n, concurrency, post)


async def dispatcher(
    redis_url: str, url: str, n: int, concurrency: int, *, endpoints: int = 0
) -> tuple[float, float]:
    """Deliveries per second and CPU us per delivery through the real consumer loop and
    webhook channel: to each event's own ``webhook_url`` (``endpoints=0``), or to
    ``endpoints`` registered endpoints matching every event (``n`` deliveries either way)."""
    prefix = f"bench{uuid.uuid4().hex[:8]}"
    settings = load_settings(
        redis_url=redis_url,
        stream_prefix=prefix,
        webhook_allow_private=True,
        webhook_secret=new_secret(),
        webhook_rate_limit_per_minute=10**9,
        webhook_rate_limit_per_hour=10**9,
        consumer_concurrency=concurrency,
        _env_file=None,
    )
    assert isinstance(settings.webhook_secret, SecretStr)
    redis = create_redis(redis_url)
    bus = EventBus.from_settings(redis, settings)
    try:
        registry = EndpointRegistry.for_prefix(redis, prefix)
        for i in range(endpoints):
            await registry.create({"url": f"{url}-{i}", "event_types": ["job.completed"]})
        index = EndpointIndex(registry)
        await index.load()
        health = EndpointHealth(
            redis, bus.names, registry, bus.emit, disable_after_s=86400.0, min_failures=10
        )
        per_event = max(endpoints, 1)
        events = [
            Event(
                type="completion",
                job_id=str(i),
                data={"biography_id": i},
                webhook_url=None if endpoints else url,
            )
            for i in range(n // per_event)
        ]
        total = len(events) * per_event
        await bus.ensure_group("webhook")  # before the fill: a new group starts at "$"
        for start in range(0, len(events), 1000):
            await bus.emit_many(events[start : start + 1000])
        async with open_channel(
            settings, max_connections=concurrency, endpoints=index, health=health
        ) as channel:
            consumer = Consumer.from_settings(bus, channel, settings)
            started = time.perf_counter()
            cpu = time.process_time()
            task = asyncio.create_task(consumer.run())
            while await redis.xlen(bus.names.deliveries) < total:
                if task.done():
                    task.result()
                await asyncio.sleep(0.01)
            elapsed = time.perf_counter() - started
            cpu = time.process_time() - cpu
            consumer.stop()
            await task
        delivered = sum(
            1
            for _, fields in await redis.xrange(bus.names.deliveries)
            if fields["status"] == "delivered"
        )
        assert delivered == total, f"only {delivered} of {total} delivered"
        return total / elapsed, cpu / total * 1e6
    finally:
        keys = [key async for key in redis.scan_iter(match=f"{prefix}:*", count=1000)]
        if keys:
            await redis.delete(*keys)
        await redis.aclose()


def _start_receiver(port: int) -> subprocess.Popen[bytes]:
    receiver = subprocess.Popen(
        [sys.executable, "-m", "bench.webhook", "--serve-receiver", str(port)],
        cwd=Path(__file__).resolve().parents[1],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    _wait_listening(port)
    return receiver


async def main(args: argparse.Namespace) -> list[dict[str, object]]:
    port = free_port()
    receiver = _start_receiver(port)
    try:
        url = f"http://127.0.0.1:{port}/hook/bench"
        n, c = args.events, args.concurrency
        print(f"{n} POSTs each, concurrency {c}, receiver: aiohttp server (separate process)")
        print("each dispatcher figure is paired with raw loops run just before and after it")
        if args.httpx:
            plain = await httpx_loop(url, n // 2, c)
            print(f"httpx, default transport          {plain:8.0f} req/s  (reference)")
        rows: list[dict[str, object]] = []
        # Warm-up, not reported: the first run in a process pays one-time costs (scripts
        # loaded, first requests, lazily built validators) that skewed it by ~100 us/delivery.
        await dispatcher(args.redis_url, url, min(n, 1000), c, endpoints=1)
        before = await raw_aiohttp(url, n, c)
        for label, count in (("event's webhook_url", 0), ("1 endpoint", 1), ("100 endpoints", 100)):
            rate, cpu = await dispatcher(args.redis_url, url, n, c, endpoints=count)
            after = await raw_aiohttp(url, n, c)
            raw, raw_cpu = (before[0] + after[0]) / 2, (before[1] + after[1]) / 2
            before = after
            print(
                f"{label:20s} dispatcher {rate:6.0f}/s {cpu:6.1f} CPU us/delivery | raw aiohttp"
                f" {raw:6.0f}/s {raw_cpu:6.1f} CPU us/POST | {rate / raw:4.2f}x the rate"
                f" (goal >= 0.6x), {cpu / raw_cpu:4.2f}x the CPU (goal <= 2x)"
            )
            rows.append(
                {
                    "measure": f"dispatcher ({label}) vs raw aiohttp POSTs, concurrency {c}",
                    "ours": rate,
                    "raw": raw,
                    "goal": 0.6,
                    "cpu_us": cpu,
                    "raw_cpu_us": raw_cpu,
                }
            )
        return rows
    finally:
        receiver.terminate()
        receiver.wait(timeout=10)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=4000)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument(
        "--redis-url", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    )
    parser.add_argument("--httpx", action="store_true", help="also time httpx (reference)")
    parser.add_argument("--serve-receiver", type=int, help=argparse.SUPPRESS)
    parser.add_argument(
        "--json", action="store_true", help="print one JSON object (text to stderr)"
    )
    cli = parser.parse_args()
    if cli.serve_receiver:
        _serve_receiver(cli.serve_receiver)
    else:
        with contextlib.redirect_stdout(sys.stderr if cli.json else sys.stdout):
            results = run_loop(main(cli))
        if cli.json:
            print(json.dumps({"bench": "webhook", "rows": results}))
