"""SMS bodies, the phones on the envelope, the SMS settings and Twilio's error mapping: pure logic."""

from __future__ import annotations

import json

import pytest
from multidict import CIMultiDict, CIMultiDictProxy

from bookgen_events.errors import ConfigError, EventValidationError, Reject, RetryLater
from bookgen_events.events import Event, make_event
from bookgen_events.service import EventFactory
from bookgen_events.settings import load_settings
from consumers.outbound import OutboundResponse, failure_for
from consumers.sms import TextedTypes
from consumers.sms_text import GSM_SEGMENT, UCS2_SEGMENT, gsm_length, is_gsm, render, to_gsm
from consumers.sms_twilio import TwilioAccount, TwilioRefused, Unsubscribed, refine
from tests.support.twilio import error_body

LONG = "Traceback: " + "x" * 400


def _event(kind: str, data: dict, **fields: object) -> Event:
    return make_event({"type": kind, "data": data, "job_id": "42", **fields})


@pytest.mark.parametrize(
    ("kind", "data"),
    [
        ("completion", {"character_name": "Ada Lovelace", "biography_id": 7}),
        ("completion", {"character_name": "N" * 300}),
        ("error_alert", {"error": LONG, "severity": "critical"}),
        ("progress_update", {"progress": 55.5, "phase": "writing " * 40}),
        ("status_change", {"old_status": "queued", "new_status": "running" * 30}),
        ("admin_alert", {"alert_type": "disk", "message": "{[~]}|^€" * 40}),
    ],
)
def test_every_type_renders_to_one_gsm_segment(kind: str, data: dict) -> None:
    """Every type, even with long user text, is one GSM-7 segment (160 septets, extension
    characters counted twice), cut with "..." rather than spilling into a second one."""
    body = render(_event(kind, data))
    assert is_gsm(body) and gsm_length(body) <= GSM_SEGMENT
    assert body.startswith("BookGen")


def test_the_default_types_read_plainly() -> None:
    """A completion and a critical alert say what happened to which job."""
    done = render(_event("completion", {"character_name": "Ada"}))
    assert done == "BookGen: Ada's biography is ready (job 42)."
    failed = render(_event("error_alert", {"error": "GPU\nmelted", "severity": "critical"}))
    assert failed == "BookGen CRITICAL: job 42 failed: GPU melted"
    cut = render(_event("error_alert", {"error": LONG, "severity": "critical"}))
    assert cut.endswith("x...") and gsm_length(cut) == GSM_SEGMENT


def test_typographic_text_is_brought_into_gsm() -> None:
    """Smart quotes, dashes, ellipses and accents GSM lacks become their plain look-alikes;
    letters GSM has (é, ü, ñ) stay."""
    typographic = (
        "\u201cZo\u00eb\u2019s\u201d \u2013 caf\u00e9\u2026 na\u00efve \u0141\u00f3d\u017a \u00f1"
    )
    assert to_gsm(typographic) == '"Zoe\'s" - caf\u00e9... naive Lodz \u00f1'
    body = render(_event("completion", {"character_name": "Zo\u00eb \u201cZ\u201d \u0106wik"}))
    assert is_gsm(body) and body.startswith('BookGen: Zoe "Z" Cwik')


def test_text_gsm_cannot_carry_is_kept_in_one_ucs2_segment() -> None:
    """A name in another script stays as it is; the text is then UCS-2 and cut to 70 units,
    never inside a surrogate pair or before a combining mark."""
    body = render(_event("completion", {"character_name": "紫式部" * 40}))
    assert not is_gsm(body) and len(body.encode("utf-16-le")) // 2 <= UCS2_SEGMENT
    assert body.startswith("BookGen: 紫式部") and "..." in body
    emoji = render(_event("error_alert", {"error": "😀" * 100, "severity": "critical"}))
    assert len(emoji.encode("utf-16-le")) // 2 <= UCS2_SEGMENT
    emoji.encode("utf-8")  # no lone surrogate
    composed = render(_event("error_alert", {"error": "e\u0301", "severity": "critical"}))
    assert composed.endswith("failed: \u00e9") and is_gsm(composed)  # NFC: GSM's own é
    marks = render(_event("error_alert", {"error": "q\u0301" * 200, "severity": "critical"}))
    assert marks.endswith("q\u0301...")  # no letter kept without its mark


def test_phones_on_the_envelope_are_e164_bounded_and_unique() -> None:
    """Phones are validated (the error names the field), de-duplicated in order, at most 20;
    NotificationService puts user_phone there."""
    event = _event("completion", {}, phones=["+33612345678", "+15551230001", "+33612345678"])
    assert event.phones == ["+33612345678", "+15551230001"]
    for phones, field in [
        (["0612345678"], "phones.0"),
        (["+33 6 12 34 56 78"], "phones.0"),
        (["+1234567"], "phones.0"),
        (["+1" + "2" * 15], "phones.0"),
        ([f"+155512{i:05d}" for i in range(21)], "phones"),
        ("+33612345678", "phones"),
    ]:
        with pytest.raises(EventValidationError) as info:
            _event("completion", {}, phones=phones)
        assert field in [f for f, _ in info.value.errors] and field in str(info.value)
    made = EventFactory().completion("1", user_phone="+33612345678", user_id="u1")
    assert made.phones == ["+33612345678"] and made.user_id == "u1"
    with pytest.raises(EventValidationError, match=r"phones\.0"):
        EventFactory().error_alert("1", "x", user_phone="12")


def test_sms_settings_name_the_variable() -> None:
    """SMS_TYPES takes event types and error_alert:<severity>; a bad entry, SID or sender
    fails naming its variable; SMS_ENABLED without credentials names what is missing."""
    settings = load_settings(_env_file=None)
    assert settings.sms_types == ["completion", "error_alert:critical"] and not settings.sms_enabled
    texted = TextedTypes(settings.sms_types)
    assert _event("completion", {}) in texted
    assert _event("error_alert", {"error": "x", "severity": "critical"}) in texted
    assert _event("error_alert", {"error": "x", "severity": "error"}) not in texted
    assert _event("progress_update", {"progress": 1}) not in texted
    wider = TextedTypes(
        load_settings(_env_file=None, sms_types="error_alert,status_change").sms_types
    )
    assert _event("error_alert", {"error": "x", "severity": "info"}) in wider
    for name, value in [
        ("sms_types", "completion,nope"),
        ("sms_types", "completion:critical"),
        ("twilio_account_sid", "AC123"),
        ("twilio_from", "+0612"),
        ("twilio_api_base", "https://api.twilio.com/path"),
    ]:
        with pytest.raises(ConfigError, match=name.upper()):
            load_settings(_env_file=None, **{name: value})
    with pytest.raises(ConfigError) as info:
        TwilioAccount.from_settings(load_settings(_env_file=None, sms_enabled=True))
    assert "TWILIO_ACCOUNT_SID" in str(info.value) and "TWILIO_FROM" in str(info.value)


def _answer(status: int, body: dict | str, **headers: str) -> OutboundResponse:
    raw = body.encode() if isinstance(body, str) else json.dumps(body).encode()
    return OutboundResponse(status, CIMultiDictProxy(CIMultiDict(headers)), raw)


def test_twilio_errors_map_to_retry_or_final() -> None:
    """429 and 5xx retry (Retry-After kept); 21211 and other 4xx are final; 21610 is final
    as Unsubscribed; a body that is not Twilio's JSON still maps by status."""

    def mapped(status: int, body: dict | str, **headers: str) -> RetryLater | Reject:
        answer = _answer(status, body, **headers)
        return refine(answer, failure_for(status, answer.headers))

    throttled = mapped(429, error_body(20429), **{"Retry-After": "7"})
    assert isinstance(throttled, RetryLater) and throttled.delay == 7.0
    assert "20429" in throttled.reason
    assert isinstance(mapped(503, "<html>busy</html>"), RetryLater)
    invalid = mapped(400, error_body(21211, to="+1555"))
    assert isinstance(invalid, TwilioRefused) and not isinstance(invalid, Unsubscribed)
    assert invalid.code == 21211 and "invalid 'To' number" in invalid.reason
    stop = mapped(400, error_body(21610))
    assert isinstance(stop, Unsubscribed) and stop.code == 21610
    auth = mapped(401, error_body(20003))
    assert isinstance(auth, Reject) and "TWILIO_AUTH_TOKEN" in auth.reason
    odd = mapped(400, "not json")
    assert isinstance(odd, TwilioRefused) and odd.code is None and "HTTP 400" in odd.reason


def test_the_request_form_and_auth() -> None:
    """The form carries To, From (or MessagingServiceSid) and Body; Basic auth; the token
    never shows in the account's repr."""
    account = TwilioAccount("AC" + "0" * 32, "s3cret", "+15005550006")
    assert account.form("+33612345678", "Hi & bye") == (
        b"To=%2B33612345678&Body=Hi+%26+bye&From=%2B15005550006"
    )
    assert account.headers()["authorization"].startswith("Basic ")
    assert "s3cret" not in repr(account)
    service = TwilioAccount("AC" + "0" * 32, "s3cret", None, "MG" + "1" * 32)
    assert b"MessagingServiceSid=MG" in service.form("+33612345678", "x")
    assert b"From=" not in service.form("+33612345678", "x")
