"""Rows/s through the notification logger vs a plain batched SQLModel insert of the same rows.

    REDIS_URL=redis://127.0.0.1:6379/0 python -m bench.logger [--events 4000] [--pg URL]

For each database (SQLite in a temporary folder; PostgreSQL in a throwaway database on
``--pg``, default the server on 127.0.0.1:5432, skipped with a reason if none answers):

- baselines: the very rows the logger would write, committed every 500 rows (the issue's
  "batched by 500"), as ``Notification`` objects through ``session.add_all``, and as plain
  dicts through ``session.execute(insert(Notification), rows)`` (the faster of the two is
  the one the goal is measured against);
- logger: the same events read from Redis by the real logger loop (read, decode, render,
  upsert in one transaction per batch, ack), from the first read to the last ack.

Each event goes to WebSocket, a webhook and an email address: three rows per event.
Redis keys live under a unique ``STREAM_PREFIX`` and are deleted afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg
from sqlalchemy import Engine, delete, func, insert, select
from sqlalchemy.orm import Session

from bookgen_events import EventBus, load_settings
from bookgen_events.channel import CHANNELS
from bookgen_events.connection import create_redis
from bookgen_events.db import Notification, dispose_engines, init_db
from bookgen_events.events import decode
from consumers.logger import NotificationLogger
from consumers.logrows import event_rows


def make_events(n: int) -> list[dict[str, Any]]:
    return [
        {
            "type": "progress_update",
            "job_id": str(1000 + i % 50),
            "user_id": f"user{i % 20}",
            "data": {"progress": i % 101, "phase": f"chapter {i % 30}", "message": "writing"},
            "webhook_url": f"https://hooks.example.com/in/{i % 10}",
            "emails": [f"reader{i % 40}@example.com"],
        }
        for i in range(n)
    ]


def baseline(engine: Engine, rows: list[dict[str, Any]], batch: int = 500) -> float:
    """Seconds to insert ``rows`` as ORM objects, committing every ``batch``."""
    start = time.perf_counter()
    with Session(engine) as session:
        for i in range(0, len(rows), batch):
            session.add_all(Notification(**row) for row in rows[i : i + batch])
            session.commit()
    return time.perf_counter() - start


def baseline_core(engine: Engine, rows: list[dict[str, Any]], batch: int = 500) -> float:
    """Seconds for the same rows as ``insert(Notification)`` executemany, one commit per batch."""
    start = time.perf_counter()
    with Session(engine) as session:
        for i in range(0, len(rows), batch):
            session.execute(insert(Notification), rows[i : i + batch])
            session.commit()
    return time.perf_counter() - start


def count(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(Notification)).scalar_one())


def clear(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(delete(Notification))


async def bench_one(label: str, url: str, redis_url: str, n: int) -> tuple[float, float] | None:
    prefix = f"bench{uuid.uuid4().hex[:8]}"
    settings = load_settings(
        redis_url=redis_url,
        stream_prefix=prefix,
        database_url=url,
        email_enabled=True,
        stream_maxlen=max(n * 2, 1000),
        _env_file=None,
    )
    redis = create_redis(redis_url)
    bus = EventBus.from_settings(redis, settings)
    try:
        await NotificationLogger.from_settings(bus, settings).start()  # its groups, at "$"
        for i in range(0, n, 1000):
            await bus.emit_many(make_events(n)[i : i + 1000])
        entries = await bus.range(count=n)
        rows = [r for eid, fields in entries for r in event_rows(decode(fields), eid, CHANNELS)]
        engine = init_db(url)
        clear(engine)
        base_s = baseline(engine, rows)
        assert count(engine) == len(rows)
        clear(engine)
        core_s = baseline_core(engine, rows)
        assert count(engine) == len(rows)
        clear(engine)

        logger = NotificationLogger.from_settings(bus, settings)
        await logger.start()
        start = time.perf_counter()
        await logger.run(asyncio.Event(), burst=True)
        log_s = time.perf_counter() - start
        assert count(engine) == len(rows), (count(engine), len(rows))
        base, core, rate = (len(rows) / s for s in (base_s, core_s, log_s))
        print(
            f"{label:<10} rows={len(rows):>6}  add_all {base:>7,.0f}/s  core insert "
            f"{core:>7,.0f}/s  logger {rate:>7,.0f}/s  ratio {rate / base:.2f}x add_all, "
            f"{rate / core:.2f}x core"
        )
        return max(base, core), rate
    finally:
        keys = [k async for k in redis.scan_iter(match=f"{prefix}:*", count=1000)]
        if keys:
            await redis.delete(*keys)
        await redis.aclose()


def pg_database(server: str) -> tuple[str, str] | None:
    """Create a throwaway database; returns (SQLAlchemy URL, name) or None if no server."""
    name = f"bookgen_bench_{uuid.uuid4().hex[:8]}"
    try:
        with psycopg.connect(server, autocommit=True, connect_timeout=3) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.OperationalError as exc:
        print(f"postgresql skipped: no server answers at {server} ({exc})".splitlines()[0])
        return None
    base = server.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://")
    return f"{base}/{name}", name


def drop_pg(server: str, name: str) -> None:
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=8000)
    parser.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument(
        "--json", action="store_true", help="print one JSON object (text to stderr)"
    )
    args = parser.parse_args()
    with contextlib.redirect_stdout(sys.stderr if args.json else sys.stdout):
        rows = await _run(args)
    if args.json:
        print(json.dumps({"bench": "logger", "rows": rows}))
    return 0


async def _run(args: argparse.Namespace) -> list[dict[str, object]]:
    redis_url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    print(f"{args.events} events x {len(CHANNELS)} channels; baseline = add_all + commit per 500")
    results = []
    labels = ["sqlite"]
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'bench.db'}"
        results.append(await bench_one("sqlite", url, redis_url, args.events))
        dispose_engines()
    created = pg_database(args.pg)
    if created:
        labels.append("postgresql")
        try:
            results.append(await bench_one("postgresql", created[0], redis_url, args.events))
        finally:
            dispose_engines()
            drop_pg(args.pg, created[1])
    # Each result is (faster baseline, logger).
    ratios = [log / base for base, log in filter(None, results)]
    print(f"goal >= 0.80x: {'met' if ratios and min(ratios) >= 0.8 else 'NOT met'}")
    return [
        {
            "measure": f"logger rows/s vs the faster batched insert, {label}",
            "ours": log,
            "raw": base,
            "goal": 0.8,
        }
        for label, result in zip(labels, results, strict=True)
        if result
        for base, log in [result]
    ]


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
