"""Signatures, payload shape and Retry-After parsing, checked without the network.

Signatures are verified by the ``standardwebhooks`` reference package, never by our code.
"""

from __future__ import annotations

import email.utils
import json
import time

import pydantic_core
import pytest
from pydantic import SecretStr
from standardwebhooks.webhooks import Webhook, WebhookVerificationError
from structlog.testing import capture_logs

from bookgen_events.errors import ConfigError
from bookgen_events.events import Event
from consumers.signing import Signer, new_secret, parse_secrets
from consumers.webhook import encode_payload, payload, retry_after_seconds
from tests.support.webhooks import SECRET


def _event(**data: object) -> Event:
    return Event(type="completion", job_id="123", data=data or {"biography_id": 456})


def test_reference_verifier_accepts_our_signature() -> None:
    """standardwebhooks verifies the headers we build over the exact body bytes."""
    event = _event()
    body = encode_payload(event)
    headers = Signer.from_setting(SecretStr(SECRET)).headers(event.id, body)
    assert headers["webhook-id"] == event.id
    assert Webhook(SECRET).verify(body, headers)["job_id"] == "123"


def test_tampered_body_fails_reference_verification() -> None:
    """A single changed byte breaks the signature (the check can fail)."""
    event = _event()
    body = encode_payload(event)
    headers = Signer.from_setting(SecretStr(SECRET)).headers(event.id, body)
    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET).verify(body.replace(b"456", b"457"), headers)


def test_rotation_signs_with_every_secret() -> None:
    """With two secrets, receivers holding either one verify, and there are two signatures."""
    old, new = new_secret(), new_secret()
    signer = Signer.from_setting(SecretStr(f"{old} {new}"))
    body = encode_payload(_event())
    headers = signer.headers("msg_1", body)
    assert len(headers["webhook-signature"].split(" ")) == 2
    for secret in (old, new):
        Webhook(secret).verify(body, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(new_secret()).verify(body, headers)


def test_missing_secret_warns_and_still_signs_well_formed() -> None:
    """No WEBHOOK_SECRET: one loud warning and a throwaway secret; headers keep their shape."""
    with capture_logs() as logs:
        signer = Signer.from_setting(None)
    assert [entry["log_level"] for entry in logs] == ["warning"]
    assert "WEBHOOK_SECRET is not set" in logs[0]["event"]
    headers = signer.headers("msg_1", b"{}")
    version, sig = headers["webhook-signature"].split(",", 1)
    assert version == "v1" and len(sig) == 44  # base64 of 32 bytes
    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET).verify(b"{}", headers)


@pytest.mark.parametrize("bad", ["whsec_not base64!", "whsec_c2hvcnQ=", "   "])
def test_bad_secret_is_a_config_error(bad: str) -> None:
    """A malformed WEBHOOK_SECRET fails at start, naming the variable (not echoing it)."""
    with pytest.raises(ConfigError, match="WEBHOOK_SECRET") as info:
        parse_secrets(bad)
    assert bad.strip() == "" or bad not in str(info.value)


def test_payload_matches_the_seed_shape() -> None:
    """Completion: the seed's keys and types, plus event_id and the data's other fields."""
    event = Event(
        type="completion",
        job_id="123",
        data={"biography_id": 456, "status": "completed", "character_name": "Ada"},
    )
    body = json.loads(encode_payload(event))
    assert body == {
        "event": "job.completed",
        "event_id": event.id,
        "job_id": "123",
        "biography_id": 456,
        "status": "completed",
        "character_name": "Ada",
        "timestamp": event.timestamp,
        "metadata": {},
    }
    assert body["timestamp"].endswith("Z")


@pytest.mark.parametrize(
    ("type_", "data", "name", "keys"),
    [
        ("progress_update", {"progress": 50, "phase": "p", "message": "m"}, "job.progress",
         {"progress", "phase", "message"}),
        ("error_alert", {"error": "boom", "severity": "critical"}, "job.error",
         {"error", "severity"}),
        ("status_change", {"old_status": "a", "new_status": "b"}, "job.status_changed",
         {"old_status", "new_status"}),
        ("admin_alert", {"alert_type": "disk", "message": "full"}, "admin.alert",
         {"alert_type", "message"}),
    ],
)  # fmt: skip
def test_payload_event_names_and_flattened_fields(
    type_: str, data: dict[str, object], name: str, keys: set[str]
) -> None:
    """Every type gets the seed's event name and its data fields at the top level."""
    body = payload(Event(type=type_, job_id="7", user_id="u1", data=data))
    assert body["event"] == name
    assert keys <= body.keys()
    assert body["user_id"] == "u1" and body["metadata"] == {}


def test_retry_after_seconds_and_http_date() -> None:
    """Retry-After as delta-seconds or an HTTP date; garbage is ignored."""
    now = time.time()
    assert retry_after_seconds("120") == 120.0
    date = email.utils.formatdate(now + 30, usegmt=True)
    assert 28.0 <= (retry_after_seconds(date, now=now) or 0.0) <= 30.0
    assert retry_after_seconds(email.utils.formatdate(now - 60, usegmt=True), now=now) == 0.0
    assert retry_after_seconds("soon") is None
    assert retry_after_seconds(None) is None


@pytest.mark.parametrize(
    "event",
    [
        Event(type="completion", job_id="12", data={"biography_id": 12}),
        Event(type="progress_update", job_id="1", user_id="u", data={"progress": 12.5,
              "metadata": {"a": [1, "é"], "nested": {"b": None}}}),
        Event(type="status_change", data={"new_status": "x"},
              occurred_at="2026-11-29T10:00:00.123456Z"),
        Event(type="admin_alert", data={"alert_type": "a", "message": 'm\n<b>"q"'}),
    ],
)  # fmt: skip
def test_encoded_body_is_the_payload_byte_for_byte(event: Event) -> None:
    """The spliced encoding is exactly the JSON of payload(): same keys, order and text."""
    assert encode_payload(event) == pydantic_core.to_json(payload(event))
    assert json.loads(encode_payload(event))["timestamp"] == event.timestamp
