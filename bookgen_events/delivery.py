"""One delivery: rate limit, attempt, then the outcome and a retry or a dead letter.

The consumer loop hands each (event, recipient) here and gets back what to record, as
entries of a :class:`~bookgen_events.bus.Commit`; nothing here touches the stream itself.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import replace
from typing import Any

from . import metrics, tracing
from .channel import Channel
from .commit import Commit
from .digests import items_of
from .errors import Reject, RetryLater
from .events import WIRE_FIELD, Event, decode
from .outcomes import DeadLetter, OutcomeRecord, Status, now_ms, outcome_record
from .ratelimit import RateLimiter, Window, windows
from .schedule import Scheduled

MAX_RETRY_AFTER_S = 86_400.0


def retry_delay(
    schedule: Sequence[float], attempt: int, rand: Callable[[], float] = random.random
) -> float:
    """Seconds to wait after failed attempt ``attempt`` (1-based), with ±20 % jitter.

    Past the schedule's end the last delay repeats.
    """
    base = schedule[min(attempt, len(schedule)) - 1]
    return base * (0.8 + 0.4 * rand())


class Delivery:
    """Delivers through ``channel`` under its retry policy and rate limits."""

    #: One attempt (:meth:`_attempt`): appends its records to the commit, returns its status.
    attempt: Callable[[Commit, Event, str, str, str, int], Coroutine[Any, Any, Status | None]]

    def __init__(
        self,
        channel: Channel,
        limiter: RateLimiter | None,
        schedule: Sequence[float],
        max_retries: int,
        rate_limits: tuple[int, int],
        log: Any,
    ) -> None:
        self.channel = channel
        self.name = channel.name
        self.limiter = limiter
        self.schedule = tuple(schedule)
        self.max_retries = max_retries
        self.per_minute, self.per_hour = rate_limits
        self.windows = windows(*rate_limits)
        # Optional on a channel (see Channel): a recipient's own windows (an endpoint's limit).
        self._windows_for: Callable[[str, Sequence[Window]], Sequence[Window]] | None = getattr(
            channel, "rate_limit_windows", None
        )
        self._log = log
        self._tally = metrics.DELIVERIES.channel(channel.name)
        # Optional on a channel (see Channel): why a recipient must not get an event, and
        # until when (Unix ms) it must wait (quiet hours).
        self._suppressed: Callable[[Event, str], str | None] | None = getattr(
            channel, "suppressed", None
        )
        self._held_until: Callable[[Event, str], int | None] | None = getattr(
            channel, "held_until", None
        )
        # ... and how long (ms) a digest window collects a recipient's notification.
        self._digest_window: Callable[[Event, str], int | None] | None = getattr(
            channel, "digest_window", None
        )
        # Chosen once: in a span with tracing on (the extra ``otel``), else no cost at all.
        self.attempt = self._traced_attempt if tracing.enabled() else self._attempt
        # Rate-limit verdicts reserved when deliveries were queued, by (event id, recipient).
        self._admitted: dict[tuple[str, str], asyncio.Future[bool]] = {}
        self._admits = limiter is not None and not (
            self._suppressed or self._held_until or self._digest_window
        )

    def admit(self, event: Event, recipient: str) -> None:
        """Reserve the rate-limit check of a delivery about to be queued, batched with the rest
        of its read batch: when a worker starts it, its verdict is there and it goes straight
        to its POST (bench/webhook.py: a limiter round trip inside every worker's cycle had
        held the dispatcher to about half the raw loop's rate at equal concurrency). Channels
        that may suppress, hold or collect a delivery check when it runs instead (no hit is
        counted for a delivery never made)."""
        if not self._admits or (key := self.channel.rate_limit_key(event, recipient)) is None:
            return
        wins: Sequence[Window] = self.windows
        if self._windows_for is not None:
            wins = self._windows_for(recipient, wins)
        assert self.limiter is not None
        verdict = self.limiter.reserve(self.name, key, event.id, wins)
        if verdict is not None:
            if len(self._admitted) >= 100_000:  # left by work closed unstarted at a shutdown
                self._admitted.clear()
            self._admitted[event.id, recipient] = verdict

    def poison(self, commit: Commit, entry_id: str, reason: str, raw: str) -> None:
        self._log.warning("poison entry dead-lettered", entry_id=entry_id, reason=reason[:300])
        metrics.DEAD_LETTERS.labels(self.name, "true").inc()
        commit.dead_letters.append(
            DeadLetter(self.name, entry_id, reason, 0, event=raw, poison=True)
        )

    async def deliver_all(
        self,
        commit: Commit,
        event: Event,
        raw: str,
        entry_id: str,
        recipients: Sequence[str],
        attempt: int,
    ) -> None:
        """Attempt every recipient concurrently; all their records go into ``commit``."""
        if len(recipients) == 1:
            await self.attempt(commit, event, raw, entry_id, recipients[0], attempt)
        elif recipients:
            for r in recipients:
                self.admit(event, r)
            await asyncio.gather(
                *(self.attempt(commit, event, raw, entry_id, r, attempt) for r in recipients)
            )

    async def scheduled(self, commit: Commit, member: str) -> None:
        """Run leased scheduled delivery ``member`` (a retry, replay or redrive): its records
        and its removal from the schedule go into ``commit``."""
        commit.unschedule.append(member)
        try:
            item = Scheduled.loads(member)
            event = decode({WIRE_FIELD: item.event})
        except (ValueError, KeyError, TypeError) as exc:
            self.poison(commit, "", f"undecodable scheduled delivery: {exc}", member)
            return
        if item.origin == "digest":
            commit.unschedule.pop()  # the member that holds the items is removed instead
            await self._send_digest(commit, member, item)
            return
        recipients: Sequence[str]
        if item.recipient is not None:
            recipients = [item.recipient]
        else:  # a replay: every recipient the channel names
            try:
                recipients = self.channel.recipients(event)
            except Exception as exc:  # a channel bug must not kill the loop
                self.poison(commit, item.entry_id, f"recipients() failed: {exc!r}", item.event)
                return
        await self.deliver_all(commit, event, item.event, item.entry_id, recipients, item.attempt)

    async def _traced_attempt(
        self, commit: Commit, event: Event, raw: str, entry_id: str, recipient: str, attempt: int
    ) -> Status | None:
        return await tracing.traced(
            lambda: self._attempt(commit, event, raw, entry_id, recipient, attempt),
            channel=self.name, recipient=recipient, number=attempt, event_id=event.id,
            trace_context=event.trace,
        )  # fmt: skip

    async def _attempt(
        self, commit: Commit, event: Event, raw: str, entry_id: str, recipient: str, attempt: int
    ) -> Status | None:
        """One delivery attempt; appends its outcome (and retry or dead letter) to ``commit``
        and returns its status (None when it was not made: collected or held).

        Nothing is awaited once appending has begun, so a caller passing a shared buffer gets
        all of an attempt's records into one flush.
        """
        channel = self.channel
        if self._suppressed is not None and (reason := self._suppressed(event, recipient)):
            self._log.info("delivery suppressed", event_id=event.id, reason=reason)
            self._tally.count("suppressed")
            commit.outcomes.append(
                self._outcome(event, entry_id, recipient, "suppressed", attempt, True, error=reason)
            )
            return "suppressed"
        if self._digest_window is not None and (window := self._digest_window(event, recipient)):
            # Collected into the recipient's open window (Redis; if it is down this raises
            # and the entry stays pending); sent, and accounted, when the window closes.
            count = await channel.digests.collect(  # type: ignore[attr-defined]
                event, raw, entry_id, recipient, window, now_ms()
            )
            self._log.info("collected for a digest", event_id=event.id, in_window=count)
            return None
        if self._held_until is not None and (until := self._held_until(event, recipient)):
            # Not an attempt: the same attempt, scheduled for when the recipient's quiet
            # hours end (kept in Redis, so it survives restarts); until then "still scheduled".
            self._log.info("delivery held for quiet hours", event_id=event.id, until_ms=until)
            commit.schedule.append((Scheduled(raw, entry_id, attempt, recipient, "quiet"), until))
            return None
        reserved = self._admitted.pop((event.id, recipient), None) if self._admitted else None
        if (
            reserved is None
            and self.limiter is not None
            and (key := channel.rate_limit_key(event, recipient)) is not None
        ):
            wins: Sequence[Window] = self.windows
            if self._windows_for is not None:
                wins = self._windows_for(recipient, wins)
            # Batched with every other check of this loop turn (one script call).
            reserved = self.limiter.reserve(self.name, key, event.id, wins)
        if reserved is not None:
            # If Redis is down this raises: the entry stays pending and is reclaimed later.
            allowed = await reserved
            if not allowed:
                self._log.warning(
                    "rate limited", event_id=event.id, type=event.type.value, attempt=attempt
                )
                self._tally.count("rate_limited")
                commit.outcomes.append(
                    self._outcome(
                        event, entry_id, recipient, "rate_limited", attempt, True,
                        error="rate limit exceeded",
                    )
                )  # fmt: skip
                return "rate_limited"

        started = time.perf_counter()
        failure: RetryLater | Reject
        try:
            status_code = await channel.deliver(event, recipient)
        except (RetryLater, Reject) as exc:
            failure = exc
        except Exception as exc:  # an unexpected error is treated as transient
            self._log.exception("delivery raised", event_id=event.id, attempt=attempt)
            failure = RetryLater(f"{type(exc).__name__}: {exc}")
        else:
            duration = time.perf_counter() - started
            now = time.time()
            latency = now - event.occurred_at.timestamp()
            self._tally.delivered(latency)
            commit.outcomes.append(
                outcome_record(  # _outcome() written out: this runs once per delivery
                    event.id, entry_id, self.name, recipient, "delivered", attempt, True,
                    event.type, event.job_id or "", event.user_id or "",
                    status_code=status_code, duration_ms=duration * 1000,
                    latency_ms=latency * 1000, at_ms=int(now * 1000),
                )
            )  # fmt: skip
            return "delivered"
        self._failed(commit, event, raw, entry_id, recipient, attempt, failure, started)
        return "failed"

    def _outcome(
        self,
        event: Event,
        entry_id: str,
        recipient: str,
        status: Status,
        attempt: int,
        final: bool,
        **extra: Any,
    ) -> OutcomeRecord:
        return outcome_record(
            event.id,
            entry_id,
            self.name,
            recipient,
            status,
            attempt,
            final,
            event.type,  # a StrEnum: written as its value
            event.job_id or "",
            event.user_id or "",
            **extra,
        )

    def _failed(
        self,
        commit: Commit,
        event: Event,
        raw: str,
        entry_id: str,
        recipient: str,
        attempt: int,
        failure: RetryLater | Reject,
        started: float,
    ) -> None:
        """Record a failed attempt: a retry on the schedule, or a dead letter after the last."""
        duration_ms = (time.perf_counter() - started) * 1000
        self._tally.count("failed")
        bound = self._log.bind(event_id=event.id, type=event.type.value, attempt=attempt)
        if isinstance(failure, RetryLater) and attempt <= self.max_retries:
            delay = retry_delay(self.schedule, attempt)
            if failure.delay is not None:
                delay = max(delay, min(failure.delay, MAX_RETRY_AFTER_S))
            due = now_ms() + int(delay * 1000)
            commit.schedule.append((Scheduled(raw, entry_id, attempt + 1, recipient, "retry"), due))
            metrics.RETRIES_SCHEDULED.labels(self.name).inc()
            bound.info("delivery failed, retry scheduled", reason=failure.reason, delay_s=delay)
            commit.outcomes.append(
                self._outcome(
                    event, entry_id, recipient, "failed", attempt, False,
                    error=failure.reason, status_code=failure.status_code,
                    duration_ms=duration_ms, retry_at_ms=due,
                )
            )  # fmt: skip
            return
        reason = failure.reason
        if isinstance(failure, RetryLater):
            reason = f"gave up after {attempt} attempts: {reason}"
        bound.warning("delivery dead-lettered", reason=reason)
        metrics.DEAD_LETTERS.labels(self.name, "false").inc()
        commit.dead_letters.append(
            DeadLetter(self.name, entry_id, reason, attempt, event.id, recipient, raw)
        )
        commit.outcomes.append(
            self._outcome(
                event, entry_id, recipient, "failed", attempt, True,
                error=reason, status_code=failure.status_code, duration_ms=duration_ms,
            )
        )  # fmt: skip

    async def _send_digest(self, commit: Commit, member: str, send: Scheduled) -> None:
        """A digest window closed: one message for all its notifications, each accounted.

        The items are first moved into the leased member (see :mod:`~bookgen_events.digests`);
        quiet hours still hold the send, a failure retries or dead-letters every item.
        """
        channel: Any = self.channel
        taken = await channel.digests.take(member, send)
        if taken is None:
            return  # settled by another consumer meanwhile
        commit.unschedule.append(taken)  # whatever follows: settled, held or rescheduled
        send = Scheduled.loads(taken)
        items = items_of(send)
        recipient = send.recipient or ""
        if not items:
            return
        latest = items[-1].event
        if self._held_until is not None and (until := self._held_until(latest, recipient)):
            commit.schedule.append((send, until))
            return
        started = time.perf_counter()
        try:
            status_code = await channel.deliver_digest([i.event for i in items], recipient)
        except (RetryLater, Reject) as exc:
            failure: RetryLater | Reject = exc
        except Exception as exc:  # an unexpected error is treated as transient
            self._log.exception("digest delivery raised", digest=send.digest)
            failure = RetryLater(f"{type(exc).__name__}: {exc}")
        else:
            duration_ms = (time.perf_counter() - started) * 1000
            for item in items:
                self._tally.delivered(time.time() - item.event.occurred_at.timestamp())
                commit.outcomes.append(
                    self._outcome(
                        item.event, item.entry_id, recipient, "delivered", send.attempt, True,
                        status_code=status_code, duration_ms=duration_ms, at_ms=now_ms(),
                    )
                )  # fmt: skip
            return
        if isinstance(failure, RetryLater) and send.attempt <= self.max_retries:
            due = now_ms() + int(retry_delay(self.schedule, send.attempt) * 1000)
            commit.schedule.append((replace(send, attempt=send.attempt + 1), due))
            for item in items:
                commit.outcomes.append(
                    self._outcome(
                        item.event, item.entry_id, recipient, "failed", send.attempt, False,
                        error=failure.reason, retry_at_ms=due,
                    )
                )  # fmt: skip
            return
        for item in items:
            self._failed(
                commit, item.event, item.raw, item.entry_id, recipient, send.attempt,
                Reject(failure.reason, status_code=failure.status_code), started,
            )  # fmt: skip
