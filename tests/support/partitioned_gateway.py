"""One scenario for a gateway over partitioned streams (plain Redis or a cluster): live
delivery from every partition, then resume after a disconnect, and again mid-backfill, with
events emitted meanwhile across partitions: nothing missing, nothing twice, each job's in
order.

A subscription's messages are read up to a sentinel event emitted last: everything the
gateway sent before it is compared, so an extra (a duplicate) fails as surely as a gap.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect

from bookgen_events import EventBus, Settings
from bookgen_events.partitions import partition_of_key
from gateway.app import serve

from .events import live_progress
from .gateway import Gateway, token
from .ports import free_port
from .waits import wait_healthy

USER = "pu-1"


def connect(url: str) -> ws_connect:
    """A client that keeps reading while it closes mid-backfill (with websockets' default
    queue of 16 it stops reading and waits out its 10 s close timeout)."""
    return ws_connect(url, max_queue=None)


@contextlib.asynccontextmanager
async def running_gateway(bus: EventBus, settings: Settings) -> AsyncIterator[Gateway]:
    """``serve`` over ``bus`` on a free loopback port, stopped on exit."""
    port = free_port()
    stop = asyncio.Event()
    task = asyncio.create_task(serve(bus, settings, stop, host="127.0.0.1", port=port))
    gateway = Gateway(port, stop, task)
    try:
        await wait_healthy(gateway.http)
        yield gateway
    finally:
        stop.set()
        await asyncio.gather(task, return_exceptions=True)


def spread_jobs(partitions: int, per_partition: int = 2) -> list[str]:
    """Job ids covering every partition ``per_partition`` times."""
    jobs: list[str] = []
    counts = [0] * partitions
    i = 0
    while min(counts) < per_partition:
        job = f"pj-{i}"
        p = partition_of_key(job, partitions)
        if counts[p] < per_partition:
            counts[p] += 1
            jobs.append(job)
        i += 1
    return jobs


def batch(tag: str, jobs: list[str], rounds: int) -> list[dict[str, Any]]:
    """The user's events of ``jobs`` (``rounds`` each, interleaved), two without a job, and
    noise for another user the subscriptions must never see."""
    events = [
        live_progress(job, r, user_id=USER, id=f"{tag}.{job}.{r:02d}")
        for r in range(rounds)
        for job in jobs
    ]
    events += [live_progress(None, 1, user_id=USER, id=f"{tag}.nojob.{n}") for n in range(2)]
    events += [live_progress(f"other-{tag}-{n}", 1, user_id="pu-2") for n in range(6)]
    return events


async def read_until(ws: ClientConnection, sentinel: str, within: float = 15.0) -> list[dict]:
    """Messages up to and including the event ``sentinel``."""
    got: list[dict[str, Any]] = []
    async with asyncio.timeout(within):
        while not got or got[-1].get("event_id") != sentinel:
            got.append(json.loads(await ws.recv()))
    return got


async def read_some(ws: ClientConnection, count: int, within: float = 15.0) -> list[dict]:
    got: list[dict[str, Any]] = []
    async with asyncio.timeout(within):
        while len(got) < count:
            got.append(json.loads(await ws.recv()))
    return got


def wanted(events: list[dict[str, Any]], job: str | None) -> list[str]:
    """The ids a subscription (``job``'s, or the user's when None) must receive."""
    return [e["id"] for e in events if (e["job_id"] == job if job else e.get("user_id") == USER)]


def check_order(got: list[dict[str, Any]]) -> None:
    """Each job's events arrive in the order emitted (their ids, ``<batch>-...<round>``,
    rise per job; the sentinels aside)."""
    last: dict[str, str] = {}
    for message in got:
        job, event_id = message["job_id"], message["event_id"]
        if job is not None and not event_id.startswith("s-"):
            assert event_id > last.get(job, ""), f"{job} out of order"
            last[job] = event_id


async def check_live_and_resume(bus: EventBus, gateway: Gateway) -> None:
    """The whole scenario, for a user subscription and one job's."""
    n = len(bus.partitions)
    jobs = spread_jobs(n)
    for job in (None, jobs[1]):
        url: dict[str, str] = (
            {"user_id": USER, "token": token(user_id=USER)}
            if job is None
            else {"job_id": job, "token": token(jobs=(job,))}
        )
        name = job or "user"
        # Live: every partition's events reach the subscription.
        a = batch(f"a-{name}", jobs, 3)
        sentinel = live_progress(jobs[0] if job is None else job, 9, id=f"s-a-{name}")
        sentinel["user_id"] = USER
        async with connect(gateway.ws(**url)) as ws:
            await bus.emit_many(a)
            await bus.emit(sentinel)
            got = await read_until(ws, sentinel["id"])
        assert [m["event_id"] for m in got] == [*sorted_like(got, wanted(a, job)), sentinel["id"]]
        if job is None:
            seen = {partition_of_key(m["job_id"] or USER, n) for m in got}
            assert seen == set(range(n)), "live delivery from every partition"
        check_order(got)
        if n > 1:
            assert all(len(m["id"].split(".")) == n for m in got)
        last = got[-1]["id"]

        # Disconnected: events emitted across partitions (a batch, and one by one).
        b = batch(f"b-{name}", jobs, 4)
        await bus.emit_many(b[: len(b) // 2])
        for event in b[len(b) // 2 :]:
            await bus.emit(event)
        expect_b = wanted(b, job)
        # Resume, and drop the connection a third of the way through the backfill.
        async with connect(gateway.ws(**url, last_event_id=last)) as ws:
            first = await read_some(ws, len(expect_b) // 3)
        c = batch(f"c-{name}", jobs, 2)
        await bus.emit_many(c[: len(c) // 2])  # missed too
        sentinel = live_progress(jobs[0] if job is None else job, 9, id=f"s-c-{name}")
        sentinel["user_id"] = USER
        async with connect(gateway.ws(**url, last_event_id=first[-1]["id"])) as ws:
            rest_task = asyncio.create_task(read_until(ws, sentinel["id"]))
            await bus.emit_many(c[len(c) // 2 :])  # during the backfill or live
            await bus.emit(sentinel)
            rest = await rest_task
        got = first + rest
        ids = [m["event_id"] for m in got]
        assert len(ids) == len(set(ids)), "nothing twice"
        assert sorted(ids) == sorted([*expect_b, *wanted(c, job), sentinel["id"]]), "no gap"
        check_order(got)


def sorted_like(got: list[dict[str, Any]], expected: list[str]) -> list[str]:
    """``expected`` in the order ``got`` has them when it has exactly those (else as is):
    across partitions the arrival order is not the emit order, only per job."""
    received = [m["event_id"] for m in got[:-1]]
    return received if sorted(received) == sorted(expected) else expected
