"""The HTTP surface is safe to expose (SPEC 8), tried as an attacker would, on a real gateway."""

from __future__ import annotations

import asyncio
import inspect
import socket
import time

import httpx
import jwt
import pytest
from pydantic import SecretStr
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from websockets.asyncio.client import connect

from bookgen_events import EventBus, Settings
from bookgen_events.errors import ConfigError, EventValidationError
from gateway.app import create_app
from tests.support.events import live_progress
from tests.support.gateway import (
    ADMIN_KEY,
    API_KEY,
    JWT_SECRET,
    Gateway,
    StartGateway,
    recv_json,
    token,
)


@pytest.fixture
async def keyed(start_gateway: StartGateway, gateway_settings: Settings) -> Gateway:
    return await start_gateway(
        gateway_settings.model_copy(update={"admin_api_key": SecretStr(ADMIN_KEY)})
    )


async def test_operator_routes_need_the_admin_key(keyed: Gateway) -> None:
    """GET /notifications: 401 without or with a wrong key (even the producer's), 200 with it."""
    async with httpx.AsyncClient(base_url=keyed.http) as http:
        missing = await http.get("/notifications")
        assert missing.status_code == 401 and "ADMIN_API_KEY" in missing.json()["detail"]
        assert missing.headers["www-authenticate"] == "Bearer"
        for wrong in ("nope", API_KEY, ADMIN_KEY + "x"):
            response = await http.get(
                "/notifications", headers={"Authorization": f"Bearer {wrong}"}
            )
            assert response.status_code == 401, wrong
        ok = await http.get("/notifications", headers={"Authorization": f"Bearer {ADMIN_KEY}"})
        assert ok.status_code == 200 and ok.json()["notifications"] == []


async def test_operator_routes_without_a_configured_key_are_403_naming_it(
    gateway: Gateway,
) -> None:
    """No ADMIN_API_KEY: nobody may read the log, whatever they send; the answer says why."""
    async with httpx.AsyncClient(base_url=gateway.http) as http:
        for headers in ({}, {"Authorization": f"Bearer {API_KEY}"}):
            response = await http.get("/notifications", headers=headers)
            assert response.status_code == 403
            assert "ADMIN_API_KEY" in response.json()["detail"]


async def test_health_status_and_metrics_stay_open(keyed: Gateway) -> None:
    """Probes and scrapers need no key: these routes carry no per-user data."""
    async with httpx.AsyncClient(base_url=keyed.http) as http:
        for path in ("/health", "/ws/status", "/metrics", "/"):
            assert (await http.get(path)).status_code == 200, path


@pytest.mark.parametrize(
    ("depth", "status"), [(20, 201), (32, 201), (33, 422), (250, 422), (20_000, 422)]
)
async def test_deep_json_is_a_422_never_a_500(
    gateway: Gateway, bus: EventBus, depth: int, status: int
) -> None:
    """JSON nested past 32 levels (the document's own) is refused at the edge, never stored."""
    nested = '{"k":' * (depth - 2) + "1" + "}" * (depth - 2)  # the envelope and data: 2
    body = (
        '{"type":"admin_alert","data":{"alert_type":"a","message":"m","metadata":' + nested + "}}"
    )
    if depth > 1000:
        body = "[" * depth + "]" * depth  # past what the JSON parser itself takes
    async with httpx.AsyncClient(base_url=gateway.http) as http:
        response = await http.post(
            "/events", content=body, headers={"Authorization": f"Bearer {API_KEY}"}
        )
    assert response.status_code == status, response.text
    assert await bus.length() == (1 if status == 201 else 0)
    if status == 422:
        assert "32" in response.json()["detail"]


async def test_emit_refuses_deep_metadata(bus: EventBus) -> None:
    """The Python producer API applies the same depth limit, and writes nothing."""
    deep: dict[str, object] = {}
    for _ in range(40):
        deep = {"k": deep}
    with pytest.raises(EventValidationError, match="deeper than 32"):
        await bus.emit({"type": "admin_alert", "data": {"alert_type": "a", "message": "m",
                                                        "metadata": deep}})  # fmt: skip
    assert await bus.length() == 0


async def test_a_foreign_origin_is_refused_its_own_and_listed_ones_are_not(
    start_gateway: StartGateway, gateway_settings: Settings
) -> None:
    """Browsers send Origin: another site's page cannot watch the gateway; ours can."""
    gateway = await start_gateway(
        gateway_settings.model_copy(
            update={"websocket_allowed_origins": ["https://app.example.com"]}
        )
    )
    url = gateway.ws(job_id="o", token=token(jobs=("o",)))
    async with connect(url, origin="https://evil.example.net") as ws:  # type: ignore[arg-type]
        await asyncio.wait_for(ws.wait_closed(), 5)
    assert ws.close_code == 1008 and "WEBSOCKET_ALLOWED_ORIGINS" in (ws.close_reason or "")
    for origin in (f"http://127.0.0.1:{gateway.port}", "https://app.example.com", None):
        async with connect(url, origin=origin) as ws:  # type: ignore[arg-type]
            assert (await gateway.status())["connections"]["total_job_connections"] >= 1
            assert ws.close_code is None, origin


async def test_a_connection_is_closed_when_its_token_expires(
    gateway: Gateway, bus: EventBus
) -> None:
    """The token's exp ends the connection (1008 "token expired"); events flowed until then."""
    async with connect(gateway.ws(job_id="e", token=token(jobs=("e",), ttl_s=2))) as ws:
        stream_id = await bus.emit(live_progress("e"))
        assert (await recv_json(ws))["id"] == stream_id
        started = time.monotonic()
        await asyncio.wait_for(ws.wait_closed(), 5)
    assert (ws.close_code, ws.close_reason) == (1008, "token expired")
    assert time.monotonic() - started < 3


async def test_tokens_living_past_the_cap_are_refused(gateway: Gateway) -> None:
    """A hundred-year token, correctly signed, is still refused (WEBSOCKET_TOKEN_MAX_TTL)."""
    now = int(time.time())
    forever = jwt.encode(
        {"jobs": ["j"], "iat": now, "exp": now + 100 * 365 * 86400}, JWT_SECRET, algorithm="HS256"
    )
    async with connect(gateway.ws(job_id="j", token=forever)) as ws:
        await asyncio.wait_for(ws.wait_closed(), 5)
    assert ws.close_code == 1008 and "WEBSOCKET_TOKEN_MAX_TTL" in (ws.close_reason or "")


async def test_a_missing_token_says_how_to_mint_one(gateway: Gateway) -> None:
    async with connect(gateway.ws(job_id="j")) as ws:
        await asyncio.wait_for(ws.wait_closed(), 5)
    assert ws.close_code == 1008 and "bookgen-events token" in (ws.close_reason or "")


def test_short_jwt_secrets_are_refused_at_start(bus: EventBus, gateway_settings: Settings) -> None:
    """HS256 with a key shorter than 32 bytes does not start (it used to only warn)."""
    short = gateway_settings.model_copy(update={"websocket_jwt_secret": SecretStr("x" * 31)})
    with pytest.raises(ConfigError, match="32 bytes"):
        create_app(bus, short)


async def test_resume_past_the_cap_gets_resync_required(
    start_gateway: StartGateway, gateway_settings: Settings, bus: EventBus
) -> None:
    """A resume reading more than WEBSOCKET_RESUME_MAX entries is told to resync, not served."""
    gateway = await start_gateway(gateway_settings.model_copy(update={"websocket_resume_max": 50}))
    auth = token(jobs=("r",))
    async with connect(gateway.ws(job_id="r", token=auth)) as watcher:
        first = await bus.emit(live_progress("r"))
        ids = await bus.emit_many([live_progress("r", float(i)) for i in range(60)])
        # A resume backfills up to where the gateway's reader is; what it has not read yet
        # comes live. Once a live client has the last event, the reader is past it.
        seen = [(await recv_json(watcher))["id"] for _ in range(61)]
        assert seen == [first, *ids]
    async with connect(gateway.ws(job_id="r", token=auth, last_event_id=first)) as ws:
        assert await recv_json(ws) == {"type": "resync_required"}
        live = await bus.emit(live_progress("r"))
        assert (await recv_json(ws))["id"] == live  # then live, nothing of the backlog
    async with connect(gateway.ws(job_id="r", token=auth, last_event_id=ids[-50])) as ws:
        got = [(await recv_json(ws))["id"] for _ in range(50)]
    assert got == [*ids[-49:], live]  # exactly at the cap: served in full


async def test_connections_per_token_and_address_are_capped(
    start_gateway: StartGateway, gateway_settings: Settings
) -> None:
    """Past WEBSOCKET_MAX_CONNECTIONS_PER_USER a new connection is refused; closing frees one."""
    gateway = await start_gateway(
        gateway_settings.model_copy(update={"websocket_max_connections_per_user": 2})
    )
    auth = token(jobs=("c",))
    async with (
        connect(gateway.ws(job_id="c", token=auth)),
        connect(gateway.ws(job_id="c", token=auth)),
    ):
        async with connect(gateway.ws(job_id="c", token=auth)) as third:
            await asyncio.wait_for(third.wait_closed(), 5)
        assert third.close_code == 1008 and "too many" in (third.close_reason or "")
        # Another token from the same address is capped by the address.
        async with connect(gateway.ws(job_id="c", token=token(jobs=("c",), ttl_s=60))) as other:
            await asyncio.wait_for(other.wait_closed(), 5)
        assert other.close_code == 1008 and "address" in (other.close_reason or "")
    async with connect(gateway.ws(job_id="c", token=auth)) as again:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(again.recv(), 0.3)  # open: nothing to say, not closed
        assert again.close_code is None


async def test_trickling_or_silent_http_connections_are_closed(
    start_gateway: StartGateway, gateway_settings: Settings
) -> None:
    """Slowloris: a request head not complete within HTTP_HEADER_TIMEOUT loses its socket."""
    gateway = await start_gateway(gateway_settings.model_copy(update={"http_header_timeout": 0.5}))

    async def closed_after(send: list[bytes], pause: float) -> float:
        reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
        started = time.monotonic()
        try:
            for chunk in send:
                writer.write(chunk)
                await writer.drain()
                await asyncio.sleep(pause)
            async with asyncio.timeout(5):
                while await reader.read(1024):
                    pass
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()
        return time.monotonic() - started

    assert await closed_after([], 0) < 2  # connected, never said a word
    trickle = [b"GET /health HTTP/1.1\r\n", b"Host: x\r\n", b"X-A: 1\r\n", b"X-B: 2\r\n"]
    assert await closed_after(trickle, 0.2) < 2
    # A prompt request is unaffected, and the connection then lives on keep-alive.
    async with httpx.AsyncClient(base_url=gateway.http) as http:
        assert (await http.get("/health")).status_code == 200


def test_the_uvicorn_hooks_the_header_timeout_uses_exist() -> None:
    """Fence: gateway.headers_timeout subclasses a uvicorn internal; a rename must fail here."""
    for name in ("connection_made", "connection_lost", "on_message_begin", "on_headers_complete"):
        assert callable(getattr(HttpToolsProtocol, name, None)), name
    source = inspect.getsource(HttpToolsProtocol)
    assert "self.loop = " in source and "self.transport = transport" in source


def test_listening_on_a_taken_port_is_a_clear_error() -> None:
    """The gateway binds its socket itself: a taken port raises at once, naming it."""
    from bookgen_events.errors import GatewayBindError
    from gateway.app import listen

    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        with pytest.raises(GatewayBindError, match=f"127.0.0.1:{port}: address already in use"):
            listen("127.0.0.1", port)
