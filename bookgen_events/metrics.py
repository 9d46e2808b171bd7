"""Prometheus metrics, registered once per process on the default registry."""

from __future__ import annotations

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
