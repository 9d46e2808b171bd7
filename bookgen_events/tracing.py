"""OpenTelemetry tracing (SPEC 13), with the optional extra ``otel`` installed.

- ``emit`` records the current W3C trace context (``traceparent``, ``tracestate``) in the
  event's ``trace`` field, so it travels with the event through the stream;
- each delivery attempt is a span (``deliver <channel>``) in the emit's trace, a child of
  the emitting span and linked to it (the messaging conventions' creation link), with the
  channel, the recipient kind, the attempt and the outcome as attributes, so one trace runs
  from the producer's request to the receiver's;
- outbound HTTP deliveries carry the attempt span's ``traceparent``.

Without the extra (:data:`ACTIVE` False), or with it but no SDK tracer provider set up
(:func:`enabled`), a consumer picks its untraced attempt once, at construction: no
per-delivery cost (``bench/consume.py`` unchanged). Set the provider up before starting
consumers.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from typing import Any, TypeVar

from .events import Event

try:
    from opentelemetry import context as otel_context
    from opentelemetry import propagate, trace
except ImportError:  # the extra is not installed
    ACTIVE = False
else:
    ACTIVE = True

T = TypeVar("T")
#: A tracer provider of this library's own (:func:`use_provider`), else the global one.
_provider: Any = None
_FIELDS = ("traceparent", "tracestate")
_TRACER_NAME = "bookgen_events"


def use_provider(provider: Any) -> None:
    """Record delivery spans with ``provider`` rather than the global one (None: global)."""
    global _provider
    _provider = provider


def enabled() -> bool:
    """Whether spans would be recorded: the extra installed and a tracer provider set up."""
    if not ACTIVE:
        return False
    return _provider is not None or not isinstance(
        trace.get_tracer_provider(), trace.ProxyTracerProvider
    )


def current() -> dict[str, str] | None:
    """The current trace context as W3C headers, or None outside a sampled span."""
    if not ACTIVE or not trace.get_current_span().get_span_context().is_valid:
        return None
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    found = {k: v for k, v in carrier.items() if k in _FIELDS}
    return found or None


def traced_event(event: Event) -> Event:
    """``event`` with the current trace context recorded (unless it carries one already)."""
    if event.trace is not None:
        return event
    found = current()
    return event if found is None else event.model_copy(update={"trace": found})


def inject(headers: MutableMapping[str, str]) -> None:
    """Add the current span's ``traceparent`` (and ``tracestate``) to outgoing ``headers``."""
    if ACTIVE:
        propagate.inject(headers)


def recipient_kind(channel: str, recipient: str) -> str:
    if channel == "webhook":
        return "endpoint" if recipient.startswith("ep_") and " " in recipient else "url"
    return {"email": "email", "sms": "phone"}.get(channel, channel)


async def traced(
    attempt: Callable[[], Awaitable[T]],
    *,
    channel: str,
    recipient: str,
    number: int,
    event_id: str,
    trace_context: Mapping[Any, str] | None,
) -> T:
    """Run one delivery ``attempt`` inside its span; returns what it returned (the outcome)."""
    tracer: Any = (_provider or trace.get_tracer_provider()).get_tracer(_TRACER_NAME)
    links = []
    # The emit's context is the parent; without one, a fresh root (never whatever the
    # consumer loop happens to run under).
    parent = propagate.extract(trace_context) if trace_context else otel_context.Context()
    emitted = trace.get_current_span(parent).get_span_context()
    if emitted.is_valid:
        links.append(trace.Link(emitted))
    token = otel_context.attach(parent)
    try:
        with tracer.start_as_current_span(
            f"deliver {channel}",
            kind=trace.SpanKind.PRODUCER if channel == "webhook" else trace.SpanKind.CLIENT,
            links=links,
            attributes={
                "messaging.destination.name": channel,
                "bookgen.channel": channel,
                "bookgen.recipient.kind": recipient_kind(channel, recipient),
                "bookgen.attempt": number,
                "bookgen.event_id": event_id,
            },
        ) as span:
            outcome = await attempt()
            span.set_attribute("bookgen.outcome", str(outcome or "scheduled"))
            if outcome == "failed":
                span.set_status(trace.Status(trace.StatusCode.ERROR))
            return outcome
    finally:
        otel_context.detach(token)
