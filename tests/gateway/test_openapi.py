"""``/openapi.json`` against the real gateway: it names every route, and schemathesis, driving
a real uvicorn on real Redis with both keys configured, finds no 500 and no answer outside
the document (status code, content type, body schema)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from pydantic import SecretStr
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from starlette.routing import Route

from bookgen_events import EventBus, Settings
from gateway.app import create_app
from gateway.openapi import document
from tests.support.gateway import ADMIN_KEY, API_KEY, StartGateway


def _load_schemathesis_now() -> None:
    """Import schemathesis's lazily loaded OpenAPI machinery at collection, on a shallow stack.

    pytest rewrites a plugin's modules as they are imported, and CPython 3.11.7's ast.parse
    can fail ("AST constructor recursion depth mismatch") when that happens deep inside a
    running async test; loading them here keeps the test about our gateway."""
    schema = schemathesis.openapi.from_dict(
        {
            "openapi": "3.1.0",
            "info": {"title": "warm-up", "version": "1"},
            "paths": {
                "/a": {
                    "post": {
                        "requestBody": {"content": {"application/json": {"schema": {
                            "type": "object", "properties": {"n": {"type": "integer"}},
                        }}}},
                        "responses": {"200": {"description": "ok"}},
                    }
                }
            },
        }
    )  # fmt: skip
    for operation in schema.get_all_operations():
        operation.ok().as_strategy()


_load_schemathesis_now()
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]


@pytest.fixture
def keyed_settings(gateway_settings: Settings) -> Settings:
    return gateway_settings.model_copy(
        update={
            "admin_api_key": SecretStr(ADMIN_KEY),
            "unsubscribe_secret": SecretStr("unsubscribe-secret-0123456789abcdef"),
        }
    )


async def test_the_document_names_every_route_with_its_methods(
    bus: EventBus, keyed_settings: Settings
) -> None:
    """Every HTTP route of the app, with each of its methods, is described (no drift)."""
    app = create_app(bus, keyed_settings)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://t"
    ) as client:
        document = (await client.get("/openapi.json")).json()
    described = {
        (path, method.upper())
        for path, item in document["paths"].items()
        for method in item
        if method != "parameters"
    }
    served = {
        (route.path, method)
        for route in app.routes
        if isinstance(route, Route)
        for method in route.methods or ()
        if method != "HEAD"
    }
    assert served == described
    schemes = document["components"]["securitySchemes"]
    assert {schemes[k]["description"] for k in schemes} == {"ADMIN_API_KEY", "PRODUCER_API_KEY"}


def checker(
    operation: schemathesis.APIOperation,
    mode: GenerationMode,
    base_url: str,
    headers: dict[str, str],
    examples: int,
) -> Callable[[], None]:
    """A hypothesis test sending ``examples`` generated cases of ``operation``."""

    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def check(case: schemathesis.Case) -> None:
        case.call_and_validate(base_url=base_url, headers=headers, checks=CHECKS)

    return check  # type: ignore[no-any-return]


def fuzz(base_url: str, examples: int) -> None:
    """Each operation, valid and invalid inputs, with the key it needs (blocking)."""
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json")
    keys = {"producerKey": API_KEY, "adminKey": ADMIN_KEY}
    for result in schema.get_all_operations():
        operation = result.ok()
        item = document()["paths"][operation.path]
        described = item[operation.method.lower()]
        needed = [k for entry in described["security"] for k in entry]
        headers = {"Authorization": f"Bearer {keys[needed[0]]}"} if needed else {}
        inputs = "requestBody" in described or "parameters" in described or "parameters" in item
        modes = [GenerationMode.POSITIVE] + ([GenerationMode.NEGATIVE] if inputs else [])
        for mode in modes:  # nothing to make invalid where there is no input
            checker(operation, mode, base_url, headers, examples)()


async def test_schemathesis_finds_no_500_and_nothing_outside_the_schema(
    start_gateway: StartGateway, keyed_settings: Settings
) -> None:
    """A few examples per operation in the default run; ``-m slow`` runs many more."""
    gateway = await start_gateway(keyed_settings)
    await asyncio.to_thread(fuzz, gateway.http, 5)


@pytest.mark.slow
@pytest.mark.timeout(900)
async def test_schemathesis_at_length(
    start_gateway: StartGateway, keyed_settings: Settings
) -> None:
    gateway = await start_gateway(keyed_settings)
    await asyncio.to_thread(fuzz, gateway.http, 60)
