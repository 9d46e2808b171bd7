"""The gateway's Prometheus metrics, on the default registry next to the core's."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

WS_CONNECTIONS = Gauge("bookgen_websocket_connections", "Open, subscribed WebSocket connections")
WS_EVENTS = Counter("bookgen_websocket_events_total", "Stream entries read by the fan-out")
WS_DELIVERED = Counter(
    "bookgen_websocket_messages_total", "Messages handed to WebSocket connections"
)
WS_CLOSED = Counter(
    "bookgen_websocket_closed_total", "Connections closed by the gateway, by close code", ["code"]
)
