"""The consumer runtime: one consumer-group loop that every delivery channel runs on.

A :class:`~bookgen_events.channel.Channel` only delivers one event to one recipient; the
loop around it is here, its parts one module each: reads of the group (own pending first,
reclaims, a lost group recreated) in :mod:`~bookgen_events.reader`, the deliveries' worker
tasks in :mod:`~bookgen_events.pool` (fed one batch ahead by the reader, within the bounds
of :mod:`~bookgen_events.room`), the write-behind of results in
:mod:`~bookgen_events.flusher`, and one delivery (rate limit, attempt, retry or dead
letter) in :mod:`~bookgen_events.delivery`.

Retries go to a per-channel sorted set (:mod:`~bookgen_events.schedule`), not the PEL: each
(event, recipient) keeps its own attempt count and due time, a retry in five hours does not
pin a stream entry that ``STREAM_MAXLEN`` may trim, and the PEL stays a short list of work
in flight, so one ``CLAIM_IDLE_MS`` suffices to reclaim a dead consumer's entries. Each
finished entry's results and ack are written together, atomically.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Coroutine, Sequence
from typing import Any

from .bus import Entry, EventBus
from .cancelling import cancel_and_wait
from .channel import Channel
from .commit import Commit
from .delivery import Delivery
from .errors import DecodeError
from .events import WIRE_FIELD, Event, decode
from .flusher import Flusher
from .job_lanes import JobLanes
from .logs import get_logger
from .outcomes import now_ms
from .partitions import partition_key
from .pool import WorkerPool
from .ratelimit import RateLimiter
from .reader import GroupReader, default_consumer_name, unless_down
from .room import Room

log = get_logger("bookgen_events.consumer")


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
        self._log = log.bind(channel=channel.name, group=self.group, consumer=self.name)

        self._reader = GroupReader(
            bus, self.group, self.name, claim_idle_ms=claim_idle_ms, log=self._log
        )
        # A delivery's token is the stream entry it settles ("" for a scheduled delivery,
        # which releases its own lease if it never completes) and its job's key (None for a
        # scheduled delivery: a retry comes after the job's later events).
        self._pool: WorkerPool[tuple[str, str | None]] = WorkerPool(
            concurrency, self._finished, name=f"worker-{self.group}"
        )
        # Per-job order: a job's delivery waits here while the one before it runs.
        self._lanes: JobLanes[tuple[Coroutine[Any, Any, object], str]] = JobLanes()
        self._flusher = Flusher(bus, self.group, self.group, written=self._written, log=self._log)
        # The flusher's buffer is always the same object: a delivery appends to whatever the
        # next flush writes.
        self._buffer = self._flusher.buffer
        self._flush_soon = self._flusher.wanted.set
        self._record = self._flusher.record
        self._room = Room(self._capacity, concurrency + 4 * batch, self._load)
        self._inflight_ids = self._room.ids  # the same sets: added to once per entry
        self._inflight_members = self._room.members
        self._release = self._room.release
        self._wait_for_slot = self._room.wait
        self._stopping = asyncio.Event()
        self._started = False
        self._next_due_ms = 0.0
        self._wake = asyncio.Event()  # the timer loop: a retry is due sooner
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
                    await cancel_and_wait([timers])
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
        await self._reader.ensure()
        self._flusher.start()
        self._log.info("consumer started")

    async def _shutdown(self) -> None:
        if not self._started:
            return
        self._started = False
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.grace_s):
                await self._pool.quiesce()
        unfinished = self._load()
        # Never started or cancelled, its entry stays pending: another consumer reclaims it.
        self._release([entry_id for entry_id, _ in await self._pool.close() if entry_id], [])
        waiting = self._lanes.drain()
        for work, _ in waiting:
            work.close()
        self._release([entry_id for _, entry_id in waiting], [])
        if unfinished:
            self._log.warning("handed back unfinished work", deliveries=unfinished)
        await self._flusher.close()
        # Leases of scheduled deliveries never started are handed back too: they run out.
        self._release([], list(self._inflight_members))
        await self._reader.leave()
        self._log.info("consumer stopped")

    # -- the loop ----------------------------------------------------------------------------

    async def _drain_own_pending(self) -> None:
        """Redo entries this consumer name read but never acked (a crash before a restart)."""
        while not self._stopping.is_set():
            entries = await self._reader.own_pending(self.batch)
            if not entries:
                return
            self._log.info("redoing own pending entries", entries=len(entries))
            for entry in entries:
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
        entries = await self._reader.new(min(self.batch, free), block_ms)
        for entry in entries:
            self._dispatch_entry(entry)
        return len(entries)

    async def _timer_loop(self) -> None:
        """Due retries and reclaims, on their own clock so a blocking read never delays them."""
        claim_every = self._reader.claim_every
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
        await self._reader.keep(list(self._inflight_ids))
        until = now_ms() + self._lease_ms
        members = list(self._inflight_members)
        await unless_down(self.bus.scheduled.extend_lease(self.group, members, until), self._log)

    async def _reclaim(self) -> int:
        entries = await self._reader.reclaim(self.batch)
        fresh = [e for e in entries if e[0] not in self._inflight_ids]
        if fresh:
            self._log.info("reclaimed idle entries", entries=len(fresh))
        for entry in fresh:
            await self._wait_for_slot()
            self._dispatch_entry(entry)
        return len(fresh)

    async def _take_due(self) -> int:
        free = max(self._capacity - self._load(), 1)
        result = await unless_down(
            self.bus.scheduled.claim_due(
                self.group, now_ms=now_ms(), lease_ms=self._lease_ms, limit=min(free, self.batch)
            ),
            self._log,
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
            self._pool.submit(self._run_scheduled(member), ("", None))
        return len(members)

    async def _anything_due(self) -> bool:
        result = await unless_down(
            self.bus.scheduled.claim_due(self.group, now_ms=now_ms(), lease_ms=0, limit=1),
            self._log,
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
            self._delivery.admit(event, recipients[0])  # its rate limit, with the batch's
            work = self._delivery.attempt(self._buffer, event, raw, entry_id, recipients[0], 1)
        elif recipients:
            work = self._deliver_to_all(event, raw, entry_id, recipients)
        else:
            self._ack_now(entry_id, None, raw)
            return
        # One job's events reach a recipient in the order they were emitted (first attempts;
        # a retry comes after the job's later events): it runs once the one before is done.
        key = partition_key(event)
        if self._lanes.admit(key, (work, entry_id)):
            self._pool.submit(work, (entry_id, key))

    def _load(self) -> int:
        """Deliveries queued, running, or waiting for their job's previous one."""
        return self._pool.load + self._lanes.held

    def _ack_now(self, entry_id: str, poison: str | None = None, raw: str = "") -> None:
        """Settle an entry with nothing to deliver: ack it, dead-lettered first if poison."""
        commit = Commit.empty()
        if poison is not None:
            self._delivery.poison(commit, entry_id, poison, raw)
        commit.acks.append(entry_id)
        self._record(commit)

    def _finished(
        self, token: tuple[str, str | None], error: BaseException | None, load: int
    ) -> None:
        """A delivery is done (called by the pool): its ack joins its results, or it is
        released for a reclaim to redo if it never completed; its job's next one may run."""
        entry_id, key = token
        if key is not None and not isinstance(error, asyncio.CancelledError):
            following = self._lanes.done(key)  # (none is started by a shutdown's cancel)
            if following is not None:
                work, following_id = following
                self._pool.submit(work, (following_id, key))
                load += 1
        if error is None:
            # The work's records went into the buffer with no await since: the ack joins them
            # in one flush. Owned (heartbeat, no self-reclaim) until that flush is written.
            if entry_id:
                self._buffer.acks.append(entry_id)
            self._flush_soon()
        else:
            self._release([entry_id] if entry_id else [], [])
            if isinstance(error, Exception):
                self._log.error("delivery crashed", exc_info=error)
        self._room.finished(load + self._lanes.held)

    async def _deliver_to_all(
        self, event: Event, raw: str, entry_id: str, recipients: Sequence[str]
    ) -> None:
        # Collected apart, so all recipients' outcomes are written together.
        commit = Commit.empty()
        await self._delivery.deliver_all(commit, event, raw, entry_id, recipients, 1)
        self._record(commit)

    async def _settle(self) -> None:
        """Wait for in-flight work to finish and its results to be written."""
        await self._pool.quiesce()
        await self._flusher.flush()

    async def _run_scheduled(self, member: str) -> None:
        commit = Commit.empty()
        try:
            await self._delivery.scheduled(commit, member)
        except BaseException:
            self._release([], [member])  # nothing recorded: the lease runs out, it is redone
            raise
        self._record(commit)

    def _written(self, commit: Commit, recorded: bool) -> None:
        """A flush is done (called by the flusher): its work is no longer ours to keep."""
        self._release(commit.acks, commit.unschedule)
        if recorded and commit.schedule:  # wake the timer loop for a retry due sooner
            soonest = min(due for _, due in commit.schedule)
            if soonest < self._next_due_ms:
                self._next_due_ms = soonest
                self._wake.set()
