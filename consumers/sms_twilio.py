"""Twilio's Messages API as the SMS channel speaks it: the account, the request, the errors.

``POST {TWILIO_API_BASE}/2010-04-01/Accounts/{sid}/Messages.json`` with form fields ``To``,
``From`` (or ``MessagingServiceSid``) and ``Body``, HTTP Basic auth (account SID, auth
token); 201 with the message's JSON on success. A refusal is JSON too::

    {"code": 21211, "message": "The 'To' number +1555 is not a valid phone number.",
     "more_info": "https://www.twilio.com/docs/errors/21211", "status": 400}

What it means for a delivery (:func:`refine`, on top of the one HTTP mapping of
:mod:`consumers.outbound`): 429 and 5xx are retried (Twilio's ``Retry-After`` honoured);
21211 (invalid ``To`` number) and every other 4xx are final; 21610 (the recipient replied
STOP) is final and raised as :class:`Unsubscribed`, so the channel turns that subscriber's
SMS off. 401/20003 (bad credentials) is final too, naming the variables to check: the
dead letters can be redriven once they are fixed.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from urllib.parse import urlencode

from bookgen_events.errors import ConfigError, Reject
from bookgen_events.settings import Settings

from .outbound import Failure, OutboundResponse

__all__ = [
    "INVALID_NUMBER",
    "UNSUBSCRIBED",
    "TwilioAccount",
    "TwilioRefused",
    "Unsubscribed",
    "refine",
    "twilio_error",
]

INVALID_NUMBER = 21211
UNSUBSCRIBED = 21610
_AUTH_FAILED = 20003
API_VERSION = "2010-04-01"


class TwilioRefused(Reject):
    """A final refusal by Twilio, with its error ``code`` (None when the body had none)."""

    def __init__(self, reason: str, *, code: int | None, status_code: int) -> None:
        super().__init__(reason, status_code=status_code)
        self.code = code


class Unsubscribed(TwilioRefused):
    """21610: the recipient replied STOP; Twilio refuses every message to them."""


@dataclass(frozen=True)
class TwilioAccount:
    """Where and as whom messages are sent; the auth token never appears in its repr."""

    sid: str
    token: str = field(repr=False)
    sender: str | None = None  # TWILIO_FROM: a number or an alphanumeric sender id
    messaging_service_sid: str | None = None
    api_base: str = "https://api.twilio.com"

    @classmethod
    def from_settings(cls, settings: Settings) -> TwilioAccount:
        """The account ``SMS_ENABLED`` needs; :class:`ConfigError` naming what is missing."""
        missing = [
            name
            for name, value in (
                ("TWILIO_ACCOUNT_SID", settings.twilio_account_sid),
                ("TWILIO_AUTH_TOKEN", settings.twilio_auth_token),
            )
            if not value
        ]
        if not settings.twilio_from and not settings.twilio_messaging_service_sid:
            missing.append("TWILIO_FROM (or TWILIO_MESSAGING_SERVICE_SID)")
        if missing:
            raise ConfigError(f"SMS needs {', '.join(missing)}")
        assert settings.twilio_account_sid and settings.twilio_auth_token  # checked above
        return cls(
            settings.twilio_account_sid,
            settings.twilio_auth_token.get_secret_value(),
            settings.twilio_from,
            settings.twilio_messaging_service_sid,
            settings.twilio_api_base.rstrip("/"),
        )

    @property
    def messages_url(self) -> str:
        return f"{self.api_base}/{API_VERSION}/Accounts/{self.sid}/Messages.json"

    @property
    def account_url(self) -> str:
        """The account resource: what ``verify`` fetches to check the credentials."""
        return f"{self.api_base}/{API_VERSION}/Accounts/{self.sid}.json"

    def headers(self) -> dict[str, str]:
        credentials = base64.b64encode(f"{self.sid}:{self.token}".encode()).decode("ascii")
        return {
            "authorization": f"Basic {credentials}",
            "content-type": "application/x-www-form-urlencoded",
            "accept": "application/json",
        }

    def form(self, to: str, body: str) -> bytes:
        """The request body of one message (UTF-8, form-encoded)."""
        fields = {"To": to, "Body": body}
        if self.messaging_service_sid:
            fields["MessagingServiceSid"] = self.messaging_service_sid
        else:
            fields["From"] = self.sender or ""
        return urlencode(fields).encode("ascii")


def twilio_error(body: bytes) -> tuple[int | None, str]:
    """``(code, message)`` of Twilio's error JSON; ``(None, "")`` when it is not that."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None, ""
    if not isinstance(data, dict):
        return None, ""
    code = data.get("code")
    message = data.get("message")
    return (
        code if isinstance(code, int) and not isinstance(code, bool) else None,
        " ".join(message.split())[:300] if isinstance(message, str) else "",
    )


def refine(response: OutboundResponse, failure: Failure) -> Failure:
    """Twilio's error code on top of the HTTP mapping (the ``refine`` hook of ``post``)."""
    code, message = twilio_error(response.body)
    said = f"Twilio {code}: {message}" if code is not None else f"HTTP {response.status}"
    if code == UNSUBSCRIBED:
        return Unsubscribed(
            f"{said} (the recipient replied STOP)", code=code, status_code=response.status
        )
    if not isinstance(failure, Reject):  # 429, 5xx: retried, Retry-After kept
        failure.reason = f"{failure.reason}: {said}" if code is not None else failure.reason
        return failure
    if code == INVALID_NUMBER:
        said += " (invalid 'To' number)"
    elif response.status in (401, 403) or code == _AUTH_FAILED:
        said += " (check TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN; redrive once fixed)"
    return TwilioRefused(said, code=code, status_code=response.status)
