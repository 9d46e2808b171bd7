"""Prometheus metrics, registered once per process on the default registry."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

DELIVERIES = Counter(
    "bookgen_deliveries_total", "Delivery attempts by channel and outcome", ["channel", "status"]
)
RETRIES_SCHEDULED = Counter(
    "bookgen_retries_scheduled_total", "Failed attempts scheduled for a retry", ["channel"]
)
DEAD_LETTERS = Counter(
    "bookgen_dead_letters_total", "Entries dead-lettered by this process", ["channel", "poison"]
)
DELIVERY_LATENCY = Histogram(
    "bookgen_delivery_latency_seconds",
    "From the event's occurred_at to a successful delivery",
    ["channel"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800, 7200),
)
ATTEMPT_DURATION = Histogram(
    "bookgen_attempt_duration_seconds",
    "Duration of one delivery attempt",
    ["channel"],
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
INFLIGHT = Gauge("bookgen_consumer_inflight", "Entries being processed", ["channel"])

# Stream-level gauges, refreshed from Redis by every worker process (cheap: a few commands
# every few seconds), so whichever process is scraped tells the whole deployment's state.
EVENTS_APPENDED = Gauge(
    "bookgen_events_appended", "Events ever appended to the stream (XINFO entries-added)"
)
STREAM_LENGTH = Gauge("bookgen_stream_length", "Entries retained in a stream", ["stream"])
GROUP_LAG = Gauge("bookgen_group_lag", "Entries not yet read by a consumer group", ["group"])
GROUP_PENDING = Gauge("bookgen_group_pending", "Entries read but not yet acked", ["group"])
DLQ_SIZE = Gauge("bookgen_dlq_size", "Entries in a channel's dead-letter stream", ["channel"])
SCHEDULED = Gauge("bookgen_scheduled_deliveries", "Retries and replays waiting", ["channel"])


async def refresh_stream_gauges(bus: Any) -> None:
    """Update the stream-level gauges from ``ops.status`` once."""
    from .ops import status

    report = await status(bus)
    events = report["events"]
    EVENTS_APPENDED.set(events.get("entries_added") or events["length"])
    STREAM_LENGTH.labels("events").set(events["length"])
    STREAM_LENGTH.labels("deliveries").set(report["deliveries"]["length"])
    for group in events["groups"]:
        GROUP_LAG.labels(group["group"]).set(group["lag"] or 0)
        GROUP_PENDING.labels(group["group"]).set(group["pending"])
    for channel, size in report["dead_letters"].items():
        DLQ_SIZE.labels(channel).set(size)
    for channel, size in report["scheduled"].items():
        SCHEDULED.labels(channel).set(size)


async def keep_stream_gauges_fresh(bus: Any, stop: asyncio.Event, every_s: float = 5.0) -> None:
    """Refresh the gauges until ``stop``; Redis hiccups are skipped, never fatal."""
    while not stop.is_set():
        with contextlib.suppress(Exception):
            await refresh_stream_gauges(bus)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=every_s)
