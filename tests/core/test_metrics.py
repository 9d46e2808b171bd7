"""Delivery tallies: plain numbers on the hot path, standard Prometheus series at scrape time."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from bookgen_events.metrics import LATENCY_BUCKETS, DeliveryTallies


def _scrape(tallies: DeliveryTallies) -> dict[str, list]:
    registry = CollectorRegistry()
    registry.register(tallies)
    text = generate_latest(registry).decode()
    return {f.name: f.samples for f in text_string_to_metric_families(text)}


def test_counts_and_latency_buckets_read_back_through_the_exposition_format() -> None:
    """Counts per status and a cumulative histogram whose le bounds are inclusive."""
    tallies = DeliveryTallies()
    webhook = tallies.channel("webhook")
    for latency in (0.005, 0.0051, 0.3, 9_999.0):  # on a bound, just past it, middle, past all
        webhook.delivered(latency)
    webhook.count("failed")
    tallies.channel("email").count("rate_limited")
    assert tallies.channel("webhook") is webhook

    families = _scrape(tallies)
    counts = {
        (s.labels["channel"], s.labels["status"]): s.value
        for s in families["bookgen_deliveries"]
        if s.name == "bookgen_deliveries_total"
    }
    assert counts == {
        ("webhook", "delivered"): 4,
        ("webhook", "failed"): 1,
        ("email", "rate_limited"): 1,
    }
    hist = families["bookgen_delivery_latency_seconds"]
    buckets = {
        s.labels["le"]: s.value
        for s in hist
        if s.name.endswith("_bucket") and s.labels["channel"] == "webhook"
    }
    assert len(buckets) == len(LATENCY_BUCKETS) + 1
    assert buckets["0.005"] == 1  # 0.005 <= 0.005
    assert buckets["0.01"] == 2
    assert buckets["0.25"] == 2 and buckets["0.5"] == 3
    assert buckets["7200.0"] == 3 and buckets["+Inf"] == 4
    [total] = [
        s.value for s in hist if s.name.endswith("_count") and s.labels["channel"] == "webhook"
    ]
    [summed] = [
        s.value for s in hist if s.name.endswith("_sum") and s.labels["channel"] == "webhook"
    ]
    assert total == 4 and abs(summed - (0.005 + 0.0051 + 0.3 + 9_999.0)) < 1e-9


def test_a_latency_below_zero_counts_as_zero() -> None:
    """A producer whose clock runs ahead gives a negative latency: counted in the first bucket."""
    tallies = DeliveryTallies()
    tallies.channel("webhook").delivered(-2.5)
    hist = _scrape(tallies)["bookgen_delivery_latency_seconds"]
    values = {s.name.rsplit("_", 1)[1] + s.labels.get("le", ""): s.value for s in hist}
    assert values["bucket0.005"] == 1 and values["count"] == 1 and values["sum"] == 0
