"""Fixtures of the gateway's tests."""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from bookgen_events import Settings
from tests.support.gateway import ADMIN_KEY, API_KEY, JWT_SECRET


@pytest.fixture
def admin_settings(webhook_settings: Settings) -> Settings:
    """Webhooks to loopback, the gateway's keys, and the admin key (``ADMIN_KEY``)."""
    return webhook_settings.model_copy(
        update={
            "websocket_jwt_secret": SecretStr(JWT_SECRET),
            "producer_api_key": SecretStr(API_KEY),
            "admin_api_key": SecretStr(ADMIN_KEY),
        }
    )
