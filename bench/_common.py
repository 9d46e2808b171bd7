"""Shared bench plumbing: a Redis to use, a unique prefix, cleanup, and result printing."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import time
import uuid
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from typing import Any

from redis.asyncio import Redis

from bookgen_events.app.runner import run_loop
from bookgen_events.connection import create_redis


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def smtp_sink_argv(port: int) -> list[str]:
    """An aiosmtpd server on ``port`` that accepts and discards every message."""
    return [sys.executable, "-m", "aiosmtpd", "-n", "-c", "aiosmtpd.handlers.Sink",
            "-l", f"127.0.0.1:{port}"]  # fmt: skip


def redis_url() -> str:
    return os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")


@asynccontextmanager
async def scratch_redis() -> AsyncIterator[tuple[Redis, str]]:
    """A client and a fresh key prefix whose keys are deleted afterwards."""
    client = create_redis(redis_url())
    prefix = f"bench{uuid.uuid4().hex[:8]}"
    try:
        yield client, prefix
    finally:
        keys = [k async for k in client.scan_iter(match=f"{prefix}*", count=1000)]
        for i in range(0, len(keys), 1000):
            await client.delete(*keys[i : i + 1000])
        await client.aclose()


class Timer:
    def __enter__(self) -> Timer:
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.start


def report(
    title: str, rows: list[tuple[str, float, float, float | None]]
) -> list[dict[str, object]]:
    """Print ``(name, ours/s, baseline/s, goal)`` rows as a markdown table; return them.

    A goal of None marks a row printed for reference only."""
    print(f"\n### {title}\n")
    print("| measure | ours (/s) | raw baseline (/s) | ratio | goal |")
    print("| --- | ---: | ---: | ---: | ---: |")
    out = []
    for name, ours, raw, goal in rows:
        ratio = ours / raw if raw else 0.0
        bound = "report" if goal is None else f">= {goal:.2f}x"
        print(f"| {name} | {ours:,.0f} | {raw:,.0f} | {ratio:.2f}x | {bound} |")
        out.append({"measure": name, "ours": ours, "raw": raw, "ratio": ratio, "goal": goal})
    return out


def run_bench(
    name: str, main: Coroutine[Any, Any, list[dict[str, object]]], json_out: bool
) -> None:
    """Run a bench on the event loop the workers use; with ``--json`` its table goes to stderr and one JSON object to stdout."""
    with contextlib.redirect_stdout(sys.stderr if json_out else sys.stdout):
        rows = run_loop(main)
    if json_out:
        print(json.dumps({"bench": name, "rows": rows}))
