"""Prometheus metrics, registered once per process on the default registry."""

from __future__ import annotations

import asyncio
import contextlib
from bisect import bisect_left
from collections.abc import Iterator
from itertools import accumulate
from typing import Any

from prometheus_client import REGISTRY, Counter, Gauge
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

RETRIES_SCHEDULED = Counter(
    "bookgen_retries_scheduled_total", "Failed attempts scheduled for a retry", ["channel"]
)
DEAD_LETTERS = Counter(
    "bookgen_dead_letters_total", "Entries dead-lettered by this process", ["channel", "poison"]
)
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800, 7200)
_LE = [*map(floatToGoString, LATENCY_BUCKETS), "+Inf"]  # the buckets' "le" labels


class ChannelTally:
    """One channel's delivery counts and latency histogram, kept in plain numbers.

    Every delivery updates it, so it costs a bisect and two additions rather than
    prometheus-client's locked values (~2 µs a delivery for a counter and a histogram, a
    sixth of the consumer runtime's whole cost per delivery). A consumer runs on one thread;
    a scrape from the metrics-server thread reads copies.
    """

    __slots__ = ("buckets", "counts", "latency_sum")

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self.buckets = [0] * (len(LATENCY_BUCKETS) + 1)  # the last one is +Inf
        self.latency_sum = 0.0

    def count(self, status: str) -> None:
        self.counts[status] = self.counts.get(status, 0) + 1

    def delivered(self, latency_s: float) -> None:
        """A successful delivery, ``latency_s`` after its event occurred (counted by the
        histogram: its total is the ``delivered`` count)."""
        if latency_s < 0:  # the producer's clock is ahead of ours
            latency_s = 0.0
        self.buckets[bisect_left(LATENCY_BUCKETS, latency_s)] += 1
        self.latency_sum += latency_s


class DeliveryTallies(Collector):
    """``bookgen_deliveries_total`` and ``bookgen_delivery_latency_seconds`` at scrape time."""

    def __init__(self) -> None:
        self._channels: dict[str, ChannelTally] = {}

    def channel(self, name: str) -> ChannelTally:
        return self._channels.setdefault(name, ChannelTally())

    def collect(self) -> Iterator[Metric]:
        counts = CounterMetricFamily(
            "bookgen_deliveries",
            "Delivery attempts by channel and outcome",
            labels=["channel", "status"],
        )
        latency = HistogramMetricFamily(
            "bookgen_delivery_latency_seconds",
            "From the event's occurred_at to a successful delivery",
            labels=["channel"],
        )
        for name, tally in list(self._channels.items()):
            buckets = list(tally.buckets)
            if delivered := sum(buckets):
                counts.add_metric([name, "delivered"], delivered)
            for status, n in list(tally.counts.items()):
                counts.add_metric([name, status], n)
            cumulative = accumulate(buckets)
            latency.add_metric([name], list(zip(_LE, cumulative, strict=True)), tally.latency_sum)
        yield counts
        yield latency


DELIVERIES = DeliveryTallies()
REGISTRY.register(DELIVERIES)

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
