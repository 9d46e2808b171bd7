"""``/endpoints`` over HTTP on a real gateway: the admin key, the shapes, the refusals."""

from __future__ import annotations

import httpx
import pytest
from pydantic import SecretStr

from bookgen_events import Settings

ADMIN = {"Authorization": "Bearer admin-key-0123456789abcdef"}
URL = "https://hooks.example.com/in"


@pytest.fixture
async def http(start_gateway, gateway_settings: Settings):  # type: ignore[no-untyped-def]
    gateway = await start_gateway(
        gateway_settings.model_copy(update={"admin_api_key": SecretStr(ADMIN["Authorization"][7:])})
    )
    async with httpx.AsyncClient(base_url=gateway.http, headers=ADMIN) as client:
        yield client


async def test_endpoints_need_the_admin_key(http: httpx.AsyncClient) -> None:
    for method, path in [("POST", "/endpoints"), ("GET", "/endpoints"), ("GET", "/endpoints/x"),
                         ("PATCH", "/endpoints/x"), ("DELETE", "/endpoints/x"),
                         ("POST", "/endpoints/x/rotate-secret"), ("GET", "/endpoints/changes"),
                         ("GET", "/endpoints/x/attempts"), ("POST", "/endpoints/x/recover")]:  # fmt: skip
        response = await http.request(method, path, headers={"Authorization": ""})
        assert response.status_code == 401, (method, path)


async def test_create_show_update_rotate_delete(http: httpx.AsyncClient) -> None:
    """The secret is shown on creation and rotation only; every change is in the audit trail."""
    created = await http.post("/endpoints", json={"url": URL, "event_types": ["job.completed"]})
    assert created.status_code == 201
    body = created.json()
    endpoint_id, secret = body["id"], body["secret"]
    assert secret.startswith("whsec_") and body["event_types"] == ["job.completed"]

    shown = (await http.get(f"/endpoints/{endpoint_id}")).json()
    assert shown["url"] == URL and "secret" not in shown
    listed = (await http.get("/endpoints")).json()["endpoints"]
    assert [e["id"] for e in listed] == [endpoint_id] and "secret" not in listed[0]

    patched = await http.patch(f"/endpoints/{endpoint_id}", json={"disabled": True})
    assert patched.status_code == 200 and patched.json()["disabled"] is True
    rotated = (await http.post(f"/endpoints/{endpoint_id}/rotate-secret")).json()
    assert rotated["secret"] != secret and rotated["previous_secret_until"] > rotated["updated_at"]

    assert (await http.delete(f"/endpoints/{endpoint_id}")).status_code == 204
    assert (await http.get(f"/endpoints/{endpoint_id}")).status_code == 404
    trail = (await http.get("/endpoints/changes")).json()["changes"]
    assert [c["op"] for c in trail] == ["deleted", "rotated", "disabled", "created"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"url": "http://127.1/"}, "url"),
        ({"url": "http://a:b@hooks.example.com/"}, "url"),
        ({"url": URL, "event_types": ["nope"]}, "event_types"),
        ({"url": URL, "headers": {"Content-Length": "1"}}, "headers"),
        ({}, "url"),
    ],
)
async def test_bad_input_is_a_422_naming_the_field(
    http: httpx.AsyncClient, body: dict, field: str
) -> None:
    response = await http.post("/endpoints", json=body)
    assert response.status_code == 422
    assert field in [e["field"] for e in response.json()["errors"]]
    assert (await http.get("/endpoints")).json()["endpoints"] == []


async def test_malformed_bodies_and_unknown_ids(http: httpx.AsyncClient) -> None:
    assert (await http.post("/endpoints", content=b"[1]")).status_code == 422
    assert (await http.post("/endpoints", content=b"{nope")).status_code == 422
    deep = b'{"url":' + b"[" * 50 + b"]" * 50 + b"}"
    assert (await http.post("/endpoints", content=deep)).status_code == 422
    assert (await http.patch("/endpoints/ep_nope", json={"disabled": True})).status_code == 404
    assert (await http.post("/endpoints/ep_nope/rotate-secret")).status_code == 404
    assert (await http.delete("/endpoints/ep_nope")).status_code == 404


async def test_attempts_and_recover_routes(http: httpx.AsyncClient) -> None:
    """Shapes and refusals; what they return is proved against a real dispatcher in
    tests/consumers/test_webhook_endpoints.py."""
    endpoint_id = (await http.post("/endpoints", json={"url": URL})).json()["id"]
    r = await http.get(f"/endpoints/{endpoint_id}/attempts")
    assert r.status_code == 200, (r.status_code, r.text)
    assert r.json() == {"attempts": []}
    assert (await http.get(f"/endpoints/{endpoint_id}/attempts?limit=0")).status_code == 400
    assert (await http.get("/endpoints/ep_nope/attempts")).status_code == 404
    since = {"since": "2026-01-01T00:00:00Z"}
    recovered = await http.post(f"/endpoints/{endpoint_id}/recover", json=since)
    assert recovered.json() == {"redriven": 0, "poison_skipped": 0}
    bad = await http.post(f"/endpoints/{endpoint_id}/recover", json={"since": "yesterday"})
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "since"
    assert (await http.post("/endpoints/ep_nope/recover", json=since)).status_code == 404
