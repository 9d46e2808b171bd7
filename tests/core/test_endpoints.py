"""The endpoint registry (SPEC 9) and a dispatcher's view of it, on a real Redis."""

from __future__ import annotations

import asyncio
import base64
import time

import pytest
from redis.asyncio import Redis

from bookgen_events.endpoint_index import EndpointIndex
from bookgen_events.endpoints import (
    EndpointNotFound,
    EndpointRegistry,
    InvalidEndpoint,
    endpoint_recipient,
)
from bookgen_events.events import make_event

URL = "https://hooks.example.com/in"


@pytest.fixture
def registry(redis: Redis, prefix: str) -> EndpointRegistry:
    return EndpointRegistry.for_prefix(redis, prefix)


def event(type_: str = "completion", job_id: str | None = "1", user_id: str | None = None):  # type: ignore[no-untyped-def]
    data = {
        "completion": {"biography_id": 1, "character_name": "Ada", "status": "completed"},
        "progress_update": {"progress": 10},
        "error_alert": {"error": "x", "severity": "critical"},
    }[type_]
    return make_event({"type": type_, "job_id": job_id, "user_id": user_id, "data": data})


async def test_create_generates_a_secret_and_keeps_the_endpoint(registry: EndpointRegistry) -> None:
    """A new endpoint gets an id and a whsec_ secret of 32 random bytes; reads return it whole."""
    created = await registry.create({"url": URL, "event_types": ["job.completed"]})
    assert created.id.startswith("ep_") and created.secret.startswith("whsec_")
    assert len(base64.b64decode(created.secret[6:])) == 32
    assert await registry.get(created.id) == created
    assert [e.id for e in await registry.all()] == [created.id]
    assert "secret" not in created.public() and "previous_secret" not in created.public()


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"url": "http://2130706433/"}, "url"),
        ({"url": "http://user@hooks.example.com/"}, "url"),
        ({"url": "ftp://hooks.example.com/"}, "url"),
        ({"url": URL, "event_types": ["job.exploded"]}, "event_types"),
        ({"url": URL, "headers": {"webhook-signature": "x"}}, "headers"),
        ({"url": URL, "headers": {"Host": "evil"}}, "headers"),
        ({"url": URL, "headers": {"X-A": "a\r\nX-B: b"}}, "headers"),
        ({"url": URL, "type": "teams"}, "type"),
        ({"url": URL, "rate_limit_per_minute": 0}, "rate_limit_per_minute"),
        ({"url": URL, "secret": "nope"}, "secret"),
        ({"url": URL, "secret": "whsec_" + base64.b64encode(b"short").decode()}, "secret"),
        ({"url": URL, "colour": "red"}, "colour"),
    ],
)
async def test_bad_fields_are_refused_naming_the_field_and_nothing_is_written(
    registry: EndpointRegistry, fields: dict, field: str
) -> None:
    with pytest.raises(InvalidEndpoint) as info:
        await registry.create(fields)
    assert field in [f for f, _ in info.value.errors], info.value.errors
    assert await registry.all() == [] and await registry.changes() == []


async def test_every_change_is_audited_without_secrets(registry: EndpointRegistry) -> None:
    """Create, update, disable, enable, rotate, delete: six entries, newest first, no secret."""
    created = await registry.create({"url": URL})
    await registry.update(created.id, {"description": "billing"})
    await registry.update(created.id, {"disabled": True})
    await registry.update(created.id, {"disabled": False})
    rotated = await registry.rotate_secret(created.id, grace_s=60)
    await registry.delete(created.id)
    trail = await registry.changes()
    assert [c["op"] for c in trail] == [
        "deleted", "rotated", "enabled", "disabled", "updated", "created",
    ]  # fmt: skip
    assert {c["record_id"] for c in trail} == {created.id}
    text = str(await registry.store.redis.xrange(registry.store.changes_key))
    assert created.secret not in text and rotated.secret not in text
    with pytest.raises(EndpointNotFound):
        await registry.get(created.id)


async def test_rotation_signs_with_both_secrets_during_the_grace_window(
    registry: EndpointRegistry,
) -> None:
    created = await registry.create({"url": URL})
    rotated = await registry.rotate_secret(created.id, grace_s=60)
    now = time.time()
    assert rotated.secret != created.secret
    assert rotated.secrets_at(now) == [rotated.secret, created.secret]
    assert rotated.secrets_at(now + 61) == [rotated.secret]


async def test_a_patch_is_validated_whole_and_secrets_change_only_by_rotation(
    registry: EndpointRegistry,
) -> None:
    created = await registry.create({"url": URL, "job_ids": ["1"]})
    with pytest.raises(InvalidEndpoint):
        await registry.update(created.id, {"url": "http://0x7f.1/"})
    with pytest.raises(InvalidEndpoint, match="rotate"):
        await registry.update(created.id, {"secret": created.secret})
    assert await registry.get(created.id) == created
    with pytest.raises(EndpointNotFound):
        await registry.update("ep_nope", {"description": "x"})


async def test_the_index_routes_by_type_and_filters_and_follows_changes(
    registry: EndpointRegistry,
) -> None:
    """A second view (another replica) sees creations, filters, disabling and deletion."""
    view = EndpointIndex(registry)
    await view.load()
    everything = await registry.create({"url": URL})
    done = await registry.create({"url": URL, "event_types": ["job.completed"]})
    job7 = await registry.create({"url": URL, "job_ids": ["7"]})
    user = await registry.create({"url": URL, "user_ids": ["u1"]})
    assert await view.refresh() == 4

    def ids(e: object) -> set[str]:
        return {r.split(" ")[0] for r in view.recipients(e, "webhook")}  # type: ignore[arg-type]

    assert ids(event("completion", "1")) == {everything.id, done.id}
    assert ids(event("progress_update", "7")) == {everything.id, job7.id}
    assert ids(event("progress_update", "1", "u1")) == {everything.id, user.id}

    await registry.update(everything.id, {"disabled": True})
    await registry.delete(done.id)
    await view.refresh()
    assert ids(event("completion", "1")) == set()

    fresh = EndpointIndex(registry)  # a restarted replica
    await fresh.load()
    assert len(fresh) == 3 and {
        r.split(" ")[0] for r in fresh.recipients(event("completion", "7"), "webhook")
    } == {job7.id}


async def test_the_index_routes_job_and_user_filters_exactly_as_a_scan(
    registry: EndpointRegistry,
) -> None:
    """Every combination of job and user filters, routed by the index's lookups, gives what
    checking every endpoint's filters gives."""
    filters = [{}, {"job_ids": ["1", "2"]}, {"user_ids": ["u1"]}, {"job_ids": ["2"], "user_ids": ["u2"]},
               {"job_ids": ["1"], "user_ids": ["u1", "u2"]}, {"event_types": ["job.error"]}]  # fmt: skip
    for fields in filters:
        await registry.create({"url": URL, **fields})
    view = EndpointIndex(registry)
    await view.load()
    everyone = await registry.all()
    for kind in ("completion", "error_alert"):
        for job in ("1", "2", "3", None):
            for user in ("u1", "u2", "u3", None):
                e = event(kind, job, user)
                scanned = {endpoint_recipient(x) for x in everyone if x.wants(e)}
                routed = view.recipients(e, "webhook")
                assert sorted(routed) == sorted(scanned), (kind, job, user)
                assert len(routed) == len(set(routed))


async def test_follow_sees_a_change_within_its_poll(registry: EndpointRegistry) -> None:
    view = EndpointIndex(registry)
    await view.load()
    stop = asyncio.Event()
    task = asyncio.create_task(view.follow(stop, block_ms=200))
    try:
        created = await registry.create({"url": URL})
        started = time.monotonic()
        while not view.recipients(event(), "webhook"):
            assert time.monotonic() - started < 2, "the change did not arrive within 2 s"
            await asyncio.sleep(0.01)
        assert view.recipients(event(), "webhook") == [endpoint_recipient(created)]
    finally:
        stop.set()
        await task
