"""``/subscribers`` (admin key) and one-click ``/unsubscribe`` (the signed link) on a real gateway."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from pydantic import SecretStr

from bookgen_events import EventBus, Settings
from bookgen_events.events import EventType
from bookgen_events.subscribers import SubscriberRegistry
from bookgen_events.unsubscribe import make_token
from tests.support.gateway import ADMIN_KEY, StartGateway

UNSUBSCRIBE_SECRET = "unsubscribe-secret-0123456789abcdef"


@pytest.fixture
async def http(
    start_gateway: StartGateway, gateway_settings: Settings
) -> AsyncIterator[httpx.AsyncClient]:
    gateway = await start_gateway(
        gateway_settings.model_copy(
            update={
                "admin_api_key": SecretStr(ADMIN_KEY),
                "unsubscribe_secret": SecretStr(UNSUBSCRIBE_SECRET),
            }
        )
    )
    async with httpx.AsyncClient(base_url=gateway.http) as client:
        yield client


ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}


async def test_put_get_delete_a_subscriber(http: httpx.AsyncClient) -> None:
    profile = {"email": "ada@example.com", "phone": "+33612345678",
               "preferences": {"sms": {"enabled": False}}}  # fmt: skip
    assert (await http.put("/subscribers/u1", json=profile)).status_code == 401
    stored = await http.put("/subscribers/u1", json=profile, headers=ADMIN)
    assert stored.status_code == 200 and stored.json()["phone"] == "+33612345678"
    assert (await http.get("/subscribers/u1", headers=ADMIN)).json()["email"] == "ada@example.com"
    bad = await http.put("/subscribers/u1", json={"phone": "12"}, headers=ADMIN)
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "phone"
    assert (await http.get("/subscribers/u1", headers=ADMIN)).json()["phone"] == "+33612345678"
    assert (await http.delete("/subscribers/u1", headers=ADMIN)).status_code == 204
    assert (await http.get("/subscribers/u1", headers=ADMIN)).status_code == 404
    assert (await http.delete("/subscribers/u1", headers=ADMIN)).status_code == 404


async def test_one_click_unsubscribe_sets_the_preference_and_get_does_not(
    http: httpx.AsyncClient, bus: EventBus
) -> None:
    """RFC 8058: the POST turns that type off on that channel; a GET (a mail scanner) does not."""
    registry = SubscriberRegistry.for_prefix(bus.redis, bus.names.prefix)
    await registry.put("u1", {"email": "ada@example.com"})
    token = make_token(
        UNSUBSCRIBE_SECRET, user_id="u1", channel="email", kind=EventType.PROGRESS_UPDATE,
        ttl_s=600,
    )  # fmt: skip
    page = await http.get("/unsubscribe", params={"token": token})
    assert page.status_code == 200 and "<form method=post>" in page.text
    assert (await registry.get("u1")).wants("email", EventType.PROGRESS_UPDATE)

    done = await http.post(
        "/unsubscribe", params={"token": token}, content=b"List-Unsubscribe=One-Click",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )  # fmt: skip
    assert done.status_code == 200
    after = await registry.get("u1")
    assert not after.wants("email", EventType.PROGRESS_UPDATE)
    assert after.wants("email", EventType.COMPLETION)
    assert (await registry.store.changes())[0]["op"] == "preference"  # recorded


async def test_a_forged_link_changes_nothing(http: httpx.AsyncClient, bus: EventBus) -> None:
    registry = SubscriberRegistry.for_prefix(bus.redis, bus.names.prefix)
    await registry.put("u2", {"email": "bob@example.com"})
    forged = make_token(
        "not-the-secret-0123456789abcdef0123", user_id="u2", channel="email",
        kind=EventType.COMPLETION, ttl_s=600,
    )  # fmt: skip
    for token in (forged, "junk", ""):
        response = await http.post("/unsubscribe", params={"token": token})
        assert response.status_code == 400
    assert (await registry.get("u2")).wants("email", EventType.COMPLETION)
