"""The consumer runtime: one consumer-group loop that every delivery channel runs on.

Reading, bounded concurrency, acks, reclaims, leases and the retry clock live here; a
:class:`~bookgen_events.channel.Channel` only delivers one event to one recipient.

Deliveries run on a pool of at most ``concurrency`` worker tasks, fed one batch ahead by the
reader: a delivery that waits (an HTTP call) holds one worker while the others go on, and one
that never waits costs no task of its own, so a fast channel is not paced by task creation.

Retries go to a per-channel sorted set (``bookgen:scheduled:<channel>``) rather than staying
in the PEL: each (event, recipient) keeps its own attempt count and due time, a retry in five
hours does not pin a stream entry (which ``STREAM_MAXLEN`` may trim), and the PEL stays a
short list of work in flight, so one ``CLAIM_IDLE_MS`` suffices to reclaim a dead consumer's
entries. A due retry is leased, not popped, so a consumer killed mid-retry loses nothing.

Each finished entry's outcomes, dead letters, schedule changes and ack are buffered and
written by one flusher in one atomic script per flush: never an ack without its outcome.
What happens to one delivery (rate limit, attempt, retry or dead letter) is in
:mod:`bookgen_events.delivery`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import time
from collections import deque
from collections.abc import Coroutine, Sequence
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from .bus import Commit, Entry, EventBus, Scheduled
from .channel import Channel
from .delivery import Delivery
from .errors import DecodeError
from .events import WIRE_FIELD, Event, decode
from .logs import get_logger
from .outcomes import now_ms
from .ratelimit import RateLimiter

log = get_logger("bookgen_events.consumer")

_REDIS_DOWN = (RedisConnectionError, RedisTimeoutError, OSError)

# A delivery waiting for a worker: its coroutine (not started yet), and the stream entry (acked
# once the coroutine has recorded its results) or leased scheduled delivery it settles ("" for
# none). Both are released if the coroutine never completes.
_Work = tuple[Coroutine[Any, Any, None], str, str]


def default_consumer_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class Consumer:
    """Runs ``channel`` as consumer ``name`` of the group named after the channel.

    ``run()`` loops until ``stop()``; ``run(burst=True)`` returns once nothing is left to do
    now; ``poll_once()`` does one non-blocking pass and settles it (for tests and tools).
    """

    def __init__(
        self,
        bus: EventBus,
        channel: Channel,
        *,
        limiter: RateLimiter | None = None,
        name: str | None = None,
        batch: int = 100,
        concurrency: int = 64,
        claim_idle_ms: int = 60_000,
        retry_schedule: Sequence[float] = (5.0, 300.0, 1800.0),
        max_retries: int = 3,
        rate_limits: tuple[int, int] = (60, 500),
        max_block_ms: int = 1000,
        grace_s: float = 10.0,
    ) -> None:
        self.bus = bus
        self.channel = channel
        self.group = channel.name
        self.name = name or default_consumer_name()
        self.limiter = limiter
        self.batch = batch
        self.concurrency = concurrency
        # Deliveries running (at most ``concurrency``) plus one batch read ahead and queued, so
        # the next batch is on its way while this one is delivered.
        self._capacity = concurrency + batch
        self.claim_idle_ms = claim_idle_ms
        self.max_block_ms = max_block_ms
        self.grace_s = grace_s
        # A leased retry is re-offered after this long unless the heartbeat extends it.
        self._lease_ms = max(claim_idle_ms, 1000)

        # Deliveries run on a pool of up to ``concurrency`` worker tasks fed from ``_queue``:
        # a worker runs one delivery at a time, so a slow recipient holds one worker while
        # the others go on, and a delivery that needs no wait costs no task of its own.
        self._queue: deque[_Work] = deque()
        self._busy = 0  # workers running a delivery
        self._workers: set[asyncio.Task[None]] = set()
        self._idle: list[asyncio.Future[None]] = []  # workers waiting for work
        self._spread_pending = False
        self._waking = 0  # workers woken or started that have not run yet
        self._quiet = asyncio.Event()  # set when nothing is queued or running
        # Work owned by this consumer, from dispatch until its results are written: kept alive
        # by the heartbeat and never reclaimed by ourselves.
        self._inflight_ids: set[str] = set()  # stream entries
        self._inflight_members: set[str] = set()  # leased scheduled deliveries
        # Entries and leased retries owned, results written or not: a Redis that refuses
        # writes (OOM, a read-only replica) stops the reads instead of filling memory.
        self._max_owned = concurrency + 4 * batch
        self._slot_freed = asyncio.Event()
        self._slot_waiters = 0  # loops waiting in _wait_for_slot
        self._slots_wanted = 1  # free slots the latest of them waits for
        # Results waiting to be written. Always the same object (flushes drain it), so a
        # delivery appends to whatever the next flush will write.
        self._buffer = Commit.empty()
        self._flush_wanted = asyncio.Event()
        self._flusher: asyncio.Task[None] | None = None
        self._closing = False
        self._stopping = asyncio.Event()
        self._started = False
        self._claim_cursor = "0-0"
        self._next_due_ms = 0.0
        self._wake = asyncio.Event()
        self._log = log.bind(channel=channel.name, group=self.group, consumer=self.name)
        self._delivery = Delivery(
            channel, limiter, retry_schedule, max_retries, rate_limits, self._log
        )

    @classmethod
    def from_settings(
        cls, bus: EventBus, channel: Channel, settings: Any, **overrides: Any
    ) -> Consumer:
        """Build a consumer with the channel's retry policy and limits from ``Settings``."""
        schedule, max_retries = settings.retry_policy(channel.name)
        options: dict[str, Any] = {
            "limiter": RateLimiter(bus.redis, prefix=settings.stream_prefix),
            "name": settings.consumer_name,
            "batch": settings.consumer_batch,
            "concurrency": settings.consumer_concurrency,
            "claim_idle_ms": settings.claim_idle_ms,
            "retry_schedule": schedule,
            "max_retries": max_retries,
            "rate_limits": settings.rate_limits(channel.name),
            "grace_s": settings.shutdown_grace_s,
        }
        options.update(overrides)
        return cls(bus, channel, **options)

    # -- lifecycle ---------------------------------------------------------------------------

    def stop(self) -> None:
        """Ask the loop to finish: no new reads, in-flight work finishes or is handed back."""
        self._stopping.set()

    async def run(self, *, burst: bool = False) -> None:
        """Consume until :meth:`stop` (or, with ``burst``, until there is nothing to do now)."""
        await self._start()
        try:
            await self._drain_own_pending()
            if burst:
                while not self._stopping.is_set():
                    if not await self.poll_once() and not await self._anything_due():
                        break
            else:
                timers = asyncio.create_task(self._timer_loop(), name=f"timers-{self.group}")
                try:
                    await self._read_loop()
                finally:
                    timers.cancel()
                    await asyncio.gather(timers, return_exceptions=True)
        finally:
            await self._shutdown()

    async def poll_once(self) -> int:
        """One non-blocking pass (reclaim, due retries, new entries), settled; returns work seen."""
        await self._start()
        dispatched = await self._reclaim() + await self._take_due()
        await self._wait_for_slot()
        entries = await self._read(block_ms=None)
        await self._settle()
        return dispatched + entries

    async def aclose(self) -> None:
        await self._shutdown()

    async def _start(self) -> None:
        if self._started:
            return
        self._started = True
        await self.bus.ensure_group(self.group)
        self._closing = False
        self._flusher = asyncio.create_task(self._flush_loop(), name=f"flush-{self.group}")
        self._log.info("consumer started")

    async def _shutdown(self) -> None:
        if not self._started:
            return
        self._started = False
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.grace_s):
                await self._quiesce()
        unfinished = self._load()
        # Never started or cancelled, its entry stays pending: another consumer reclaims it.
        # The queue is emptied first, so no worker starts anything meanwhile.
        while self._queue:
            work, entry_id, member = self._queue.popleft()
            work.close()
            self._release([entry_id] if entry_id else [], [member] if member else [])
        workers = list(self._workers)
        for worker in workers:
            worker.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        self._idle.clear()
        self._waking = 0
        if unfinished:
            self._log.warning("handed back unfinished work", deliveries=unfinished)
        self._closing = True
        self._flush_wanted.set()
        if self._flusher is not None:
            await asyncio.gather(self._flusher, return_exceptions=True)
            self._flusher = None
        await self._flush()
        try:
            mine = [c for c in await self.bus.consumers_info(self.group) if c["name"] == self.name]
            if mine and int(mine[0]["pending"]) == 0:
                await self.bus.delete_consumer(self.group, self.name)
        except _REDIS_DOWN:
            pass
        self._log.info("consumer stopped")

    # -- the loop ----------------------------------------------------------------------------

    async def _drain_own_pending(self) -> None:
        """Redo entries this consumer name read but never acked (a crash before a restart)."""
        seen: set[str] = set()
        while not self._stopping.is_set():
            entries = await self._redis_call(
                self.bus.read_group(
                    self.group, self.name, count=self.batch, block_ms=None, pending=True
                )
            )
            fresh = [e for e in entries or [] if e[0] not in seen]
            if not fresh:
                return
            seen.update(entry_id for entry_id, _ in fresh)
            self._log.info("redoing own pending entries", entries=len(fresh))
            for entry in fresh:
                await self._wait_for_slot()
                self._dispatch_entry(entry)
            await self._settle()

    async def _read_loop(self) -> None:
        # Refill in batches: reading as soon as one slot frees costs a round trip per entry.
        refill = max(1, min(self.batch, self._capacity // 4))
        while not self._stopping.is_set():
            await self._wait_for_slot(refill)
            started = time.monotonic()
            if not await self._read(block_ms=self.max_block_ms) and (
                time.monotonic() - started < self.max_block_ms / 4000
            ):
                # A server that ignores BLOCK (fakeredis) or a lost connection: no hot spin.
                await asyncio.sleep(0.05)

    async def _read(self, *, block_ms: int | None) -> int:
        free = self._capacity - self._load()
        entries = await self._redis_call(
            self.bus.read_group(
                self.group, self.name, count=min(self.batch, free), block_ms=block_ms
            )
        )
        for entry in entries or []:
            self._dispatch_entry(entry)
        return len(entries or [])

    async def _timer_loop(self) -> None:
        """Due retries and reclaims, on their own clock so a blocking read never delays them."""
        claim_every = min(max(self.claim_idle_ms / 2000, 0.2), 30.0)
        beat_every = max(self.claim_idle_ms / 3000, 0.1)
        next_claim = next_beat = 0.0
        while not self._stopping.is_set():
            try:
                if time.monotonic() >= next_beat:
                    await self._heartbeat()
                    next_beat = time.monotonic() + beat_every
                if time.monotonic() >= next_claim:
                    await self._reclaim()
                    next_claim = time.monotonic() + claim_every
                self._wake.clear()
                await self._take_due()
            except Exception:
                # This loop drives retries, reclaims and leases: it must outlive any one error.
                self._log.exception("timer loop iteration failed; going on")
                await asyncio.sleep(0.5)
                continue
            sleep_s = min(
                (self._next_due_ms - now_ms()) / 1000,
                next_claim - time.monotonic(),
                next_beat - time.monotonic(),
                1.0,
            )
            if sleep_s > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=sleep_s)

    async def _heartbeat(self) -> None:
        """Keep work in flight owned: a delivery slower than CLAIM_IDLE_MS is not taken over."""
        await self._redis_call(self.bus.touch(self.group, self.name, list(self._inflight_ids)))
        await self._redis_call(
            self.bus.scheduled.extend_lease(
                self.group, list(self._inflight_members), now_ms() + self._lease_ms
            )
        )

    async def _reclaim(self) -> int:
        result = await self._redis_call(
            self.bus.autoclaim(
                self.group,
                self.name,
                min_idle_ms=self.claim_idle_ms,
                start=self._claim_cursor,
                count=self.batch,
            )
        )
        if result is None:
            return 0
        self._claim_cursor, entries = result
        fresh = [e for e in entries if e[0] not in self._inflight_ids]
        if fresh:
            self._log.info("reclaimed idle entries", entries=len(fresh))
        for entry in fresh:
            await self._wait_for_slot()
            self._dispatch_entry(entry)
        return len(fresh)

    async def _take_due(self) -> int:
        free = max(self._capacity - self._load(), 1)
        result = await self._redis_call(
            self.bus.scheduled.claim_due(
                self.group,
                now_ms=now_ms(),
                lease_ms=self._lease_ms,
                limit=min(free, self.batch),
            )
        )
        if result is None:
            self._next_due_ms = now_ms() + 1000
            return 0
        members, head = result
        # Wake for the next due item, but look at least once a second for newly added ones.
        self._next_due_ms = min(head if head is not None else float("inf"), now_ms() + 1000)
        if len(members) == min(free, self.batch):
            self._next_due_ms = now_ms()  # maybe more due: look again next cycle
        for member in members:
            self._inflight_members.add(member)
            self._submit(self._run_scheduled(member), "", member)
        return len(members)

    async def _anything_due(self) -> bool:
        result = await self._redis_call(
            self.bus.scheduled.claim_due(self.group, now_ms=now_ms(), lease_ms=0, limit=1)
        )
        return bool(result and result[0])

    # -- in-flight work ----------------------------------------------------------------------

    def _dispatch_entry(self, entry: Entry) -> None:
        """Decode an entry and queue its delivery; poison and no-recipient entries need none."""
        entry_id, fields = entry
        self._inflight_ids.add(entry_id)
        try:
            event = decode(fields, self.bus.max_event_bytes)
        except DecodeError as exc:
            self._ack_now(entry_id, str(exc), json.dumps(fields, default=str))
            return
        raw = fields[WIRE_FIELD]
        try:  # _recipients() written out: this runs once per entry read
            recipients = self.channel.recipients(event)
        except Exception as exc:  # a channel bug must not kill the loop
            self._ack_now(entry_id, f"recipients() failed: {exc!r}", raw)
            return
        if len(recipients) == 1:  # the common case: its records go straight to the buffer
            work = self._delivery.attempt(self._buffer, event, raw, entry_id, recipients[0], 1)
        elif recipients:
            work = self._deliver_to_all(event, raw, entry_id, recipients)
        else:
            self._ack_now(entry_id, None, raw)
            return
        self._submit(work, entry_id, "")

    def _recipients(self, event: Event) -> tuple[Sequence[str], str | None]:
        """Who the channel delivers ``event`` to, or nobody and why if the channel raised."""
        try:
            return self.channel.recipients(event), None
        except Exception as exc:  # a channel bug must not kill the loop
            return (), f"recipients() failed: {exc!r}"

    def _ack_now(self, entry_id: str, poison: str | None = None, raw: str = "") -> None:
        """Settle an entry with nothing to deliver: ack it, dead-lettered first if poison."""
        commit = Commit.empty()
        if poison is not None:
            self._delivery.poison(commit, entry_id, poison, raw)
        commit.acks.append(entry_id)
        self._record(commit)

    def _load(self) -> int:
        return len(self._queue) + self._busy

    def _submit(self, work: Coroutine[Any, Any, None], entry_id: str, member: str) -> None:
        self._queue.append((work, entry_id, member))
        if not self._spread_pending:
            self._spread_pending = True
            asyncio.get_running_loop().call_soon(self._spread)

    def _spread(self) -> None:
        """Hand queued work to more workers; runs as a callback, between workers' turns.

        If no worker is inside a delivery now, none waits on one: one worker is enough, and
        runs queued work until a delivery waits (a batch that never waits costs no wake-ups).
        If some are (an HTTP call pending), workers start for all the queued work at once.
        """
        self._spread_pending = False
        wanted = (len(self._queue) if self._busy else min(len(self._queue), 1)) - self._waking
        while wanted > 0:
            if self._idle:
                waiter = self._idle.pop()
                if waiter.done():  # cancelled
                    continue
                waiter.set_result(None)
            elif len(self._workers) < self.concurrency:
                worker = asyncio.create_task(self._worker(), name=f"worker-{self.group}")
                self._workers.add(worker)
                worker.add_done_callback(self._workers.discard)
            else:
                return
            self._waking += 1
            wanted -= 1

    async def _worker(self) -> None:
        queue = self._queue
        loop = asyncio.get_running_loop()
        self._waking -= 1  # started by _spread
        while True:
            if not queue:
                waiter = loop.create_future()
                self._idle.append(waiter)
                await waiter
                self._waking -= 1
                continue
            work, entry_id, member = queue.popleft()
            if queue and not self._spread_pending:
                self._spread_pending = True
                loop.call_soon(self._spread)
            self._busy += 1
            try:
                await work
                # No await since the work's records went into the buffer: the entry's ack
                # joins them in the same flush.
                if entry_id:
                    self._buffer.acks.append(entry_id)
                self._flush_wanted.set()
            except BaseException as exc:
                # Nothing will be recorded for it: release it, so a reclaim can redo it later.
                self._release([entry_id] if entry_id else [], [member] if member else [])
                if not isinstance(exc, Exception):
                    raise  # cancelled: the consumer is shutting down
                self._log.error("delivery crashed", exc_info=exc)
            finally:
                # Finished work stays owned (heartbeat, no self-reclaim) until its commit is
                # written.
                self._busy -= 1
                load = len(queue) + self._busy
                if self._slot_waiters and self._capacity - load >= self._slots_wanted:
                    self._slot_freed.set()
                if not load:
                    self._quiet.set()

    async def _deliver_to_all(
        self, event: Event, raw: str, entry_id: str, recipients: Sequence[str]
    ) -> None:
        # Collected apart, so all recipients' outcomes are written together.
        commit = Commit.empty()
        await self._delivery.deliver_all(commit, event, raw, entry_id, recipients, 1)
        self._record(commit)

    def _release(self, entry_ids: Sequence[str], members: Sequence[str]) -> None:
        self._inflight_ids.difference_update(entry_ids)
        self._inflight_members.difference_update(members)
        self._slot_freed.set()

    async def _wait_for_slot(self, free: int = 1) -> None:
        while (
            self._capacity - self._load() < free
            or len(self._inflight_ids) + len(self._inflight_members) >= self._max_owned
        ):
            self._slots_wanted = free
            self._slot_freed.clear()
            self._slot_waiters += 1
            try:
                await self._slot_freed.wait()
            finally:
                self._slot_waiters -= 1

    async def _quiesce(self) -> None:
        """Wait until no delivery is queued or running."""
        while self._load():
            self._quiet.clear()
            await self._quiet.wait()

    async def _settle(self) -> None:
        """Wait for in-flight work to finish and its results to be written."""
        await self._quiesce()
        await self._flush()

    def _record(self, commit: Commit) -> None:
        self._buffer.extend(commit)
        self._flush_wanted.set()

    async def _run_scheduled(self, member: str) -> None:
        commit = Commit.empty()
        commit.unschedule.append(member)
        try:
            item = Scheduled.loads(member)
            event = decode({WIRE_FIELD: item.event})
        except (ValueError, KeyError, TypeError) as exc:
            self._delivery.poison(commit, "", f"undecodable scheduled delivery: {exc}", member)
            self._record(commit)
            return
        recipients, failure = (
            ([item.recipient], None) if item.recipient is not None else self._recipients(event)
        )
        if failure is not None:
            self._delivery.poison(commit, item.entry_id, failure, item.event)
            self._record(commit)
            return
        await self._delivery.deliver_all(
            commit, event, item.event, item.entry_id, recipients, item.attempt
        )
        self._record(commit)

    # -- writing results ---------------------------------------------------------------------

    async def _flush_loop(self) -> None:
        # Ends by flag, never by cancel: a cancel landing inside redis-py's read timeout can
        # surface as TimeoutError on Python 3.11, which would look like "Redis down" here.
        while not self._closing:
            await self._flush_wanted.wait()
            self._flush_wanted.clear()
            await self._flush()

    async def _flush(self) -> None:
        backoff = 0.05
        while self._buffer:
            commit = self._buffer.drain()
            try:
                await self.bus.commit(self.group, commit, self.group)
                self._release(commit.acks, commit.unschedule)
            except ResponseError as exc:
                if "NOGROUP" in str(exc):
                    # Redis lost the group (restart without persistence): the outcomes before
                    # the failing XACK were written; the entries left the PEL with the group.
                    self._log.error("consumer group lost; recreating it", error=str(exc))
                    self._release(commit.acks, commit.unschedule)
                    await self._redis_call(self.bus.ensure_group(self.group, start="0"))
                    continue
                # Anything else (OOM, a read-only replica...): keep the results, try again.
                self._log.error("cannot record results; retrying", error=str(exc))
                self._put_back(commit)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
            except _REDIS_DOWN as exc:
                self._log.warning("cannot record results; retrying", error=str(exc))
                self._put_back(commit)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
            else:
                if commit.schedule:  # wake the timer loop for a retry due sooner
                    soonest = min(due for _, due in commit.schedule)
                    if soonest < self._next_due_ms:
                        self._next_due_ms = soonest
                        self._wake.set()

    def _put_back(self, commit: Commit) -> None:
        """Return an unwritten commit to the front of the buffer."""
        newer = self._buffer.drain()
        self._buffer.extend(commit)
        self._buffer.extend(newer)

    async def _redis_call(self, awaitable: Any) -> Any:
        """Await a loop-level Redis call; on a connection failure wait and return None."""
        try:
            return await awaitable
        except _REDIS_DOWN as exc:
            self._log.warning("redis unavailable", error=str(exc))
            await asyncio.sleep(0.5)
            return None
