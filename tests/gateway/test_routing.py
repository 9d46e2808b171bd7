"""Routing by job and user, message shape, /ws/status, auth refusals (real server, real Redis)."""

from __future__ import annotations

import time

import jwt
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from bookgen_events import EventBus, Settings
from tests.support.events import live_progress
from tests.support.gateway import JWT_SECRET, Gateway, StartGateway, recv_json, recv_until, token


async def test_events_reach_exactly_their_job_and_user_subscribers(
    gateway: Gateway, bus: EventBus
) -> None:
    """Each client gets exactly its job's/user's events, in stream order, and once when both match."""
    urls = {
        "a": gateway.ws(job_id="j1", token=token(jobs=("j1",))),
        "b": gateway.ws(job_id="j2", token=token(jobs=("j2",))),
        "c": gateway.ws(user_id="u1", token=token(user_id="u1")),
        "d": gateway.ws(job_id="j1", user_id="u1", token=token(user_id="u1", jobs=("j1",))),
    }
    async with (
        connect(urls["a"]) as a,
        connect(urls["b"]) as b,
        connect(urls["c"]) as c,
        connect(urls["d"]) as d,
    ):
        e1 = await bus.emit(live_progress("j1", 50.0, user_id="u1"))
        e2 = await bus.emit(live_progress("j2", 10.0))
        e3 = await bus.emit(
            {"type": "status_change", "user_id": "u1", "data": {"new_status": "paid"}}
        )
        await bus.emit(live_progress("j3"))  # nobody watches j3
        ends = {k: await bus.emit(live_progress(k, 100.0)) for k in ("j1", "j2")}
        end_u = await bus.emit(
            {"type": "admin_alert", "user_id": "u1", "data": {"alert_type": "x", "message": "m"}}
        )

        ids = lambda msgs: [m["id"] for m in msgs]  # noqa: E731
        assert ids(await recv_until(a, ends["j1"])) == [e1, ends["j1"]]
        assert ids(await recv_until(b, ends["j2"])) == [e2, ends["j2"]]
        assert ids(await recv_until(c, end_u)) == [e1, e3, end_u]
        got_d = await recv_until(d, end_u)
        assert ids(got_d) == [e1, e3, ends["j1"], end_u]

    first = got_d[0]
    assert first["type"] == "progress_update" and first["job_id"] == "j1"
    assert first["progress"] == 50.0 and first["phase"] == "phase 50.0"
    assert first["user_id"] == "u1" and first["timestamp"].endswith("Z")
    assert first["event_id"] and first["id"] == e1


async def test_ws_status_has_the_seed_shape_and_counts(gateway: Gateway) -> None:
    """/ws/status counts distinct jobs/users and the connections indexed under each."""
    assert await gateway.status() == {
        "status": "operational",
        "connections": {
            "total_users": 0,
            "total_user_connections": 0,
            "total_jobs": 0,
            "total_job_connections": 0,
        },
    }
    async with (
        connect(gateway.ws(job_id="j1", token=token(jobs=("j1",)))),
        connect(gateway.ws(job_id="j1", token=token(jobs=("j1",)))),
        connect(gateway.ws(job_id="j2", token=token(jobs=("j2",)))),
        connect(gateway.ws(user_id="u1", token=token(user_id="u1"))),
        connect(gateway.ws(job_id="j1", user_id="u2", token=token(user_id="u2", jobs=("j1",)))),
    ):
        assert (await gateway.status())["connections"] == {
            "total_users": 2,
            "total_user_connections": 2,
            "total_jobs": 2,
            "total_job_connections": 4,
        }


def _expired() -> str:
    now = int(time.time())
    return jwt.encode({"jobs": ["j1"], "iat": now - 120, "exp": now - 60}, JWT_SECRET, "HS256")


@pytest.mark.parametrize(
    ("params", "reason"),
    [
        ({"job_id": "j1"}, "missing token"),
        ({"job_id": "j1", "token": "not-a-jwt"}, "malformed token"),
        ({"job_id": "j1", "token": "__expired__"}, "token expired"),
        (
            {
                "job_id": "j1",
                "token": jwt.encode({"jobs": ["j1"], "iat": 1, "exp": 2**40}, "x" * 40),
            },
            "token signature is invalid",
        ),
        ({"job_id": "j2", "token": "__j1__"}, "token does not allow this job_id"),
        ({"job_id": "j1", "user_id": "u9", "token": "__j1__"}, "token does not allow this user_id"),
        ({"token": "__j1__"}, "give job_id and/or user_id"),
        ({"job_id": "j1", "last_event_id": "abc", "token": "__j1__"}, "last_event_id must be"),
        ({"job_id": "j\x01", "token": "__j1__"}, "job_id must be"),
    ],
)
async def test_bad_requests_are_closed_with_1008_and_a_reason(
    gateway: Gateway, bus: EventBus, params: dict[str, str], reason: str
) -> None:
    """Missing/malformed/expired/foreign tokens and bad parameters: 1008 before any event."""
    if params.get("token") == "__expired__":
        params["token"] = _expired()
    elif params.get("token") == "__j1__":
        params["token"] = token(jobs=("j1",))
    async with connect(gateway.ws(**params)) as ws:
        await bus.emit(live_progress("j1"))
        with pytest.raises(ConnectionClosed) as closed:
            await recv_json(ws)
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 1008
    assert closed.value.rcvd.reason.startswith(reason)


async def test_auth_none_needs_no_token(
    start_gateway: StartGateway, settings: Settings, bus: EventBus
) -> None:
    """WEBSOCKET_AUTH=none is an explicit opt-out: any job can be watched without a token."""
    gateway = await start_gateway(settings.model_copy(update={"websocket_auth": "none"}))
    async with connect(gateway.ws(job_id="open")) as ws:
        stream_id = await bus.emit(live_progress("open"))
        assert (await recv_json(ws))["id"] == stream_id
