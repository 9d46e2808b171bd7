"""Tracing (SPEC 13) with the OpenTelemetry SDK's in-memory exporter: one trace from the
producer's span, through the stream, to the receiver's request."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from bookgen_events import EventBus, Settings, tracing
from bookgen_events.delivery import Delivery
from bookgen_events.events import decode
from tests.support.channels import RecordingChannel
from tests.support.outcomes import final_outcomes
from tests.support.waits import eventually
from tests.support.webhooks import Receiver, Reply, running


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    tracing.use_provider(provider)
    try:
        yield spans
    finally:
        tracing.use_provider(None)


async def test_one_trace_from_emit_to_the_receivers_request(
    bus: EventBus, webhook_settings: Settings, receiver: Receiver, exporter: InMemorySpanExporter
) -> None:
    """emit records the producer's context; the attempt is a span in that trace, linked to
    the producer's span, with channel, recipient kind, attempt and outcome; the receiver's
    request carries that span's traceparent. A failed first attempt is a span of its own."""
    receiver.script("t", [Reply(503)], then=Reply(200))
    tracer = tracing._provider.get_tracer("producer")
    with tracer.start_as_current_span("POST /jobs") as request_span:
        await bus.emit(
            {"type": "completion", "job_id": "1", "data": {}, "webhook_url": receiver.url("t")}
        )
    producer = request_span.get_span_context()
    [(_, fields)] = await bus.redis.xrange(bus.names.events)
    stored = decode(fields).trace
    assert stored is not None
    assert stored["traceparent"].startswith(f"00-{producer.trace_id:032x}-{producer.span_id:016x}-")

    async with running(bus, webhook_settings, retry_schedule=(0.05,)):
        await final_outcomes(bus, 1)
        await eventually(lambda: len(receiver.at("t")) == 2)
    attempts = sorted(
        (s for s in exporter.get_finished_spans() if s.name == "deliver webhook"),
        key=lambda s: s.attributes["bookgen.attempt"],
    )
    assert [
        (s.attributes["bookgen.attempt"], s.attributes["bookgen.outcome"]) for s in attempts
    ] == [
        (1, "failed"),
        (2, "delivered"),
    ]
    for span in attempts:
        assert span.context.trace_id == producer.trace_id
        assert span.parent is not None and span.parent.span_id == producer.span_id
        assert [link.context.span_id for link in span.links] == [producer.span_id]
        assert span.attributes["bookgen.channel"] == "webhook"
        assert span.attributes["bookgen.recipient.kind"] == "url"
    for request, span in zip(receiver.at("t"), attempts, strict=True):
        assert request.headers["traceparent"].startswith(
            f"00-{producer.trace_id:032x}-{span.context.span_id:016x}-"
        )


async def test_nothing_is_recorded_or_paid_without_a_provider(bus: EventBus) -> None:
    """No provider set up: emit records no context and attempts run untraced."""
    assert not tracing.enabled()
    await bus.emit({"type": "completion", "job_id": "1", "data": {}})
    [(_, fields)] = await bus.redis.xrange(bus.names.events)
    assert decode(fields).trace is None
    delivery = Delivery(RecordingChannel(), None, (1.0,), 0, (0, 0), None)
    assert delivery.attempt == delivery._attempt
