"""POST /events, /health, /metrics over real HTTP; the plain-ASGI send path on stock uvicorn."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
import uvicorn
from redis.asyncio import Redis
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from bookgen_events import EventBus, Settings
from gateway.app import create_app
from tests.support.events import live_progress
from tests.support.gateway import API_KEY, Gateway, StartGateway, recv_json, recv_until, token
from tests.support.ports import free_port
from tests.support.waits import wait_answer, wait_healthy

AUTH = {"Authorization": f"Bearer {API_KEY}"}


async def test_post_events_authenticates_validates_and_appends(
    gateway: Gateway, bus: EventBus
) -> None:
    """401 without or with a wrong key, 422 with the reason, 413 when too big, 201 and delivered when valid."""
    async with (
        httpx.AsyncClient(base_url=gateway.http) as http,
        connect(gateway.ws(job_id="p", token=token(jobs=("p",)))) as ws,
    ):
        assert (await http.post("/events", json=live_progress("p"))).status_code == 401
        wrong = await http.post(
            "/events", json=live_progress("p"), headers={"Authorization": "Bearer nope"}
        )
        assert wrong.status_code == 401

        bad = await http.post("/events", json=live_progress("p", 150.0), headers=AUTH)
        assert bad.status_code == 422
        assert "data.progress" in bad.json()["detail"]
        assert bad.json()["errors"][0]["field"] == "data.progress"
        garbage = await http.post("/events", content=b"{nope", headers=AUTH)
        assert garbage.status_code == 422 and "not valid JSON" in garbage.json()["detail"]
        huge = await http.post(
            "/events", json=live_progress("p", message="x" * 70_000), headers=AUTH
        )
        assert huge.status_code == 413
        assert await bus.length() == 0  # nothing written by any refusal

        ok = await http.post("/events", json=live_progress("p", 42.0), headers=AUTH)
        assert ok.status_code == 201
        body = ok.json()
        assert set(body) == {"stream_id", "event_id"}
        message = await recv_json(ws)
    assert message["id"] == body["stream_id"] and message["event_id"] == body["event_id"]
    assert message["progress"] == 42.0


async def test_post_events_without_a_configured_key_is_503_saying_so(
    start_gateway: StartGateway, gateway_settings: Settings
) -> None:
    """No PRODUCER_API_KEY configured: POST /events is unavailable (503) and names the variable."""
    gateway = await start_gateway(gateway_settings.model_copy(update={"producer_api_key": None}))
    async with httpx.AsyncClient(base_url=gateway.http) as http:
        response = await http.post("/events", json=live_progress("p"), headers=AUTH)
    assert response.status_code == 503
    assert "PRODUCER_API_KEY" in response.json()["detail"]


async def test_websocket_disabled_keeps_http_only(
    start_gateway: StartGateway, gateway_settings: Settings
) -> None:
    """WEBSOCKET_ENABLED=false: no WebSocket endpoint (handshake refused), HTTP still serves."""
    gateway = await start_gateway(gateway_settings.model_copy(update={"websocket_enabled": False}))
    with pytest.raises(InvalidStatus):
        async with connect(gateway.ws(job_id="x", token=token(jobs=("x",)))):
            pass
    assert (await gateway.status())["status"] == "operational"


async def test_health_and_metrics(gateway: Gateway) -> None:
    """/health pings Redis; /metrics exposes the WebSocket connection gauge."""
    async with (
        httpx.AsyncClient(base_url=gateway.http) as http,
        connect(gateway.ws(job_id="m", token=token(jobs=("m",)))),
    ):
        health = await http.get("/health")
        assert health.status_code == 200 and health.json()["redis"] == "ok"
        text = (await http.get("/metrics")).text
    assert "bookgen_websocket_connections" in text
    assert "bookgen_websocket_messages_total" in text


async def test_health_is_503_when_redis_is_down(
    start_gateway: StartGateway, gateway_settings: Settings
) -> None:
    """A gateway whose Redis does not answer reports 503, and still starts."""
    dead = Redis.from_url(
        f"redis://127.0.0.1:{free_port()}/0", decode_responses=True, socket_timeout=0.5
    )
    app = create_app(EventBus(dead, prefix=gateway_settings.stream_prefix), gateway_settings)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, lifespan="on")
    )
    task = asyncio.create_task(server.serve())
    try:
        response = await wait_answer(f"http://127.0.0.1:{port}/health", within=10, step=0.05)
        assert response.status_code == 503
        assert response.json()["status"] == "unavailable"
    finally:
        server.should_exit = True
        await task
        await dead.aclose()


async def test_plain_asgi_path_on_stock_uvicorn_routes_and_resumes(
    gateway_settings: Settings, bus: EventBus
) -> None:
    """Without our framed-write protocol, the app falls back to ASGI sends and still resumes exactly."""
    app = create_app(bus, gateway_settings)
    port = free_port()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_config=None, ws="websockets-sansio"
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        await wait_healthy(f"http://127.0.0.1:{port}")
        url = f"ws://127.0.0.1:{port}/ws/notifications?job_id=f&token={token(jobs=('f',))}"
        base = await bus.emit(live_progress("f", 1))
        missed = await bus.emit(live_progress("f", 2))
        async with connect(f"{url}&last_event_id={base}") as ws:
            live = await bus.emit(live_progress("f", 3))
            got = await recv_until(ws, live)
        assert [m["id"] for m in got] == [missed, live]
        assert json.loads(json.dumps(got[0]))["progress"] == 2.0
    finally:
        server.should_exit = True
        await task
