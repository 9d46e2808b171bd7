"""System-test fixtures: the whole deployment as processes, its peers, and the accounting."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import pytest

from bookgen_events import Event, EventBus
from bookgen_events.connection import create_redis
from bookgen_events.embedded import EmbeddedRedis
from tests.support.database import PgDatabase
from tests.support.ports import free_port
from tests.support.smtp import SmtpServer
from tests.support.webhooks import Receiver

from .harness import CONSUMERS, Cluster, WsWatcher, deployment_env, make_events
from .reconcile import Report, Seen, settle, smtp_seen

JOBS = ("7001", "7002")


@dataclass
class System:
    """One deployment under test: processes, peers, watchers and every event emitted."""

    bus: EventBus
    cluster: Cluster
    hooks: Receiver
    smtp: SmtpServer
    database_url: str
    rng: random.Random
    watchers: list[WsWatcher] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    stream_ids: dict[str, str] = field(default_factory=dict)  # event id -> stream id

    async def emit(self, count: int) -> list[Event]:
        """Emit ``count`` new events in one pipelined call (they count as acknowledged)."""
        events = make_events(count, jobs=JOBS, webhook_url=self.hooks.url("system"), rng=self.rng)
        ids = await self.bus.emit_many(events)
        self.events += events
        self.stream_ids.update((e.id, i) for e, i in zip(events, ids, strict=True))
        return events

    async def emit_waves(self, total: int, wave: int = 10, every: float = 0.1) -> None:
        """Emit ``total`` events ``wave`` at a time, one wave every ``every`` s (a steady load)."""
        while total > 0:
            await self.emit(min(wave, total))
            total -= wave
            await asyncio.sleep(every)

    def job_stream_ids(self, job_id: str) -> list[str]:
        """The stream ids of the job's events, in stream order: what its watcher must get."""
        ids = [self.stream_ids[e.id] for e in self.events if e.job_id == job_id]
        return sorted(ids, key=lambda i: tuple(map(int, i.split("-"))))

    def watch(self) -> None:
        self.watchers = [
            WsWatcher(f"ws://127.0.0.1:{self.cluster.gateway_port}", j).start() for j in JOBS
        ]

    def seen(self) -> Seen:
        ws: Counter[str] = Counter()
        for watcher in self.watchers:
            ws.update(watcher.event_ids())
        return Seen(Counter(self.hooks.accepted), smtp_seen(self.smtp.handler.received), ws)

    async def settle(self, within: float = 30.0, events: list[Event] | None = None) -> Report:
        """Wait (bounded) until every event is accounted for; returns the reconciliation."""
        report = await settle(
            self.bus,
            self.events if events is None else events,
            self.seen,
            database_url=self.database_url,
            watched_jobs=JOBS if self.watchers else (),
            within=within,
        )
        print(f"\n[{self.cluster.workdir.name}] {len(self.events)} events, settled in "
              f"{report.took_s:.1f}s: {report.summary()}")  # fmt: skip
        return report

    async def shut_down_cleanly(self) -> None:
        """SIGTERM every process: each exits 0, and none ever died of an uncaught exception."""
        codes = await self.cluster.stop_all()
        assert codes == dict.fromkeys(codes, 0), f"exit codes after SIGTERM: {codes}"
        assert set(codes) == {*CONSUMERS, "gateway"}
        assert self.cluster.crashes() == [], "a process printed a traceback"

    def delivered_at_least(self, fraction: float) -> bool:
        return len(self.hooks.accepted) >= fraction * len(self.events)


@contextlib.asynccontextmanager
async def open_system(
    tmp_path: Path, redis_url: str, prefix: str, *, database_url: str | None = None, seed: int = 8
) -> AsyncIterator[System]:
    """Peers first, then every process; on exit everything started is stopped, even on failure."""
    database_url = database_url or f"sqlite:///{tmp_path / 'bookgen.db'}"
    redis = create_redis(redis_url)
    hooks = await Receiver().start()
    smtp = await SmtpServer().start()
    env = deployment_env(
        redis_url=redis_url, prefix=prefix, database_url=database_url, smtp_port=smtp.port
    )
    bus = EventBus(redis, prefix=prefix, maxlen=100_000)
    cluster = Cluster(env, tmp_path, free_port(), bus)
    system = System(bus, cluster, hooks, smtp, database_url, random.Random(seed))
    try:
        yield system
    finally:
        try:
            for watcher in system.watchers:
                await watcher.stop()
            await cluster.stop_all()
            await smtp.stop()
            await hooks.stop()
        finally:
            with contextlib.suppress(Exception):
                keys = [k async for k in redis.scan_iter(match=f"{prefix}:*", count=1000)]
                if keys:
                    await redis.delete(*keys)
            await redis.aclose()


@pytest.fixture
async def system(tmp_path: Path, redis_url: str, prefix: str) -> AsyncIterator[System]:
    """The deployment on the session's Redis and a per-test SQLite file, all processes running."""
    async with open_system(tmp_path, redis_url, prefix) as sys_:
        await sys_.cluster.start_all()
        sys_.watch()
        yield sys_


class OwnRedis:
    """This test's own embedded server, restartable on the same folder and port."""

    def __init__(self, data_dir: Path, *, appendonly: bool) -> None:
        self.data_dir = data_dir
        self.appendonly = appendonly
        self.port = free_port()
        self.server = EmbeddedRedis(data_dir, port=self.port, appendonly=appendonly)

    @property
    def url(self) -> str:
        return self.server.url  # carries the server's password

    async def start(self) -> None:
        self.server = EmbeddedRedis(self.data_dir, port=self.port, appendonly=self.appendonly)
        await asyncio.to_thread(self.server.start)
        assert self.server.port == self.port, "the embedded server moved to another port"

    async def stop(self) -> None:
        """A graceful stop: the server fsyncs its AOF (when on) before it exits."""
        await asyncio.to_thread(self.server.stop)


@pytest.fixture
async def own_redis(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[OwnRedis]:
    """An embedded server for one test (``appendonly`` from the ``indirect`` param)."""
    server = OwnRedis(tmp_path / "redis", appendonly=getattr(request, "param", True))
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
def pg_database() -> Iterator[PgDatabase]:
    """A fresh PostgreSQL database on 127.0.0.1:5432, dropped afterwards."""
    try:
        db = PgDatabase("bookgen_sys").create()
    except psycopg.OperationalError:
        pytest.skip("no PostgreSQL server answers on 127.0.0.1:5432")
    try:
        yield db
    finally:
        db.drop()
