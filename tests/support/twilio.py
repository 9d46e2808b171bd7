"""A Twilio-shaped receiver: the part of Twilio's REST API the SMS channel uses, on loopback.

``POST /2010-04-01/Accounts/{sid}/Messages.json`` checks HTTP Basic auth (the account SID and
auth token it was made with) and the form (``To`` in E.164, exactly one of ``From`` and
``MessagingServiceSid``, a non-empty ``Body``), records each accepted message and answers 201
with a Twilio-like message JSON. Per phone, answers can be scripted: a Twilio error
(``refuse(phone, 21211)`` -> 400 with Twilio's error JSON), ``429`` with ``Retry-After``, or
a stall. ``GET /2010-04-01/Accounts/{sid}.json`` answers the account (what ``verify`` asks).
A request with wrong credentials gets 401 and Twilio's 20003 error and is counted in
``unauthorized``; a malformed form gets 400 and 21602/21604/21201 and lands in ``malformed``.
"""

from __future__ import annotations

import asyncio
import base64
import re
import socket
import time
import uuid
from collections import defaultdict, deque
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp import web

SID = "AC" + "0123456789abcdef" * 2
TOKEN = "test-auth-token-not-a-secret"
FROM = "+15005550006"  # Twilio's magic test "From" number
SERVICE_SID = "MG" + "fedcba9876543210" * 2
_E164 = re.compile(r"^\+[1-9][0-9]{7,14}$")
ERRORS = {
    20003: (401, "Authenticate"),
    20429: (429, "Too Many Requests"),
    21201: (400, "No 'To' number is specified"),
    21211: (400, "The 'To' number {to} is not a valid phone number."),
    21602: (400, "Message body is required."),
    21604: (400, "A 'From' phone number is required."),
    21610: (400, "Attempt to send to unsubscribed recipient"),
}


@dataclass(frozen=True)
class Message:
    """One message as it arrived."""

    to: str
    sender: str | None
    service: str | None
    body: str
    at: float  # time.monotonic()


@dataclass(frozen=True)
class Answer:
    """One scripted answer: a Twilio error code (None: accept), or a bare status."""

    code: int | None = None
    status: int | None = None
    retry_after: str | None = None
    delay: float = 0.0


def error_body(code: int, **values: str) -> dict[str, Any]:
    status, message = ERRORS[code]
    return {
        "code": code,
        "message": message.format(**values),
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": status,
    }


class TwilioReceiver:
    """Records accepted messages; answers as scripted per phone."""

    def __init__(self, sid: str = SID, token: str = TOKEN) -> None:
        self.sid = sid
        self.token = token
        self.base_url = ""
        self.messages: list[Message] = []
        self.attempts: list[str] = []  # every well-formed, authorised request's To
        self.unauthorized = 0
        self.malformed: list[dict[str, str]] = []
        self.delay = 0.0
        self._scripts: dict[str, deque[Answer]] = defaultdict(deque)
        self._always: dict[str, Answer] = {}
        self._runner: web.AppRunner | None = None
        app = web.Application()
        app.router.add_post("/2010-04-01/Accounts/{sid}/Messages.json", self._message)
        app.router.add_get("/2010-04-01/Accounts/{sid}.json", self._account)
        self.app = app

    def to(self, phone: str) -> list[Message]:
        return [m for m in self.messages if m.to == phone]

    def script(self, phone: str, *answers: Answer) -> None:
        """Answer the next requests to ``phone`` with ``answers``, then accept."""
        self._scripts[phone].extend(answers)

    def refuse(self, phone: str, code: int) -> None:
        """Answer every request to ``phone`` with Twilio error ``code``."""
        self._always[phone] = Answer(code=code)

    def accept(self, phone: str) -> None:
        """Stop refusing ``phone``."""
        self._always.pop(phone, None)

    def _authorised(self, request: web.Request) -> bool:
        expected = base64.b64encode(f"{self.sid}:{self.token}".encode()).decode()
        return (
            request.match_info["sid"] == self.sid
            and request.headers.get("Authorization") == f"Basic {expected}"
        )

    @staticmethod
    def _error(code: int, status: int | None = None, **values: str) -> web.Response:
        body = error_body(code, **values)
        return web.json_response(body, status=status or body["status"])

    async def _account(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            self.unauthorized += 1
            return self._error(20003)
        return web.json_response(
            {"sid": self.sid, "friendly_name": "test account", "status": "active", "type": "Full"}
        )

    async def _message(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            self.unauthorized += 1
            return self._error(20003)
        if request.content_type != "application/x-www-form-urlencoded":
            self.malformed.append({"content-type": request.content_type})
            return self._error(21602)
        form = {k: str(v) for k, v in (await request.post()).items()}
        to, body = form.get("To", ""), form.get("Body", "")
        sender, service = form.get("From"), form.get("MessagingServiceSid")
        problem = None
        if not to:
            problem = 21201
        elif not body:
            problem = 21602
        elif (sender is None) == (service is None):
            problem = 21604
        if problem is not None:
            self.malformed.append(form)
            return self._error(problem)
        if not _E164.match(to):
            return self._error(21211, to=to)
        self.attempts.append(to)
        script = self._scripts[to]
        answer = script.popleft() if script else self._always.get(to, Answer())
        if self.delay or answer.delay:
            await asyncio.sleep(self.delay + answer.delay)
        if answer.code is not None:
            return self._error(answer.code, answer.status, to=to)
        if answer.status is not None:
            headers = {"Retry-After": answer.retry_after} if answer.retry_after else {}
            return web.Response(status=answer.status, headers=headers, text="busy")
        self.messages.append(Message(to, sender, service, body, time.monotonic()))
        return web.json_response(
            {
                "sid": "SM" + uuid.uuid4().hex,
                "account_sid": self.sid,
                "to": to,
                "from": sender,
                "messaging_service_sid": service,
                "body": body,
                "status": "queued",
                "num_segments": "1",
                "direction": "outbound-api",
                "api_version": "2010-04-01",
                "error_code": None,
                "error_message": None,
            },
            status=201,
        )

    async def start(self) -> TwilioReceiver:
        """Serve on a free loopback port (bound before the site starts, so no race)."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        await web.SockSite(self._runner, sock).start()
        self.base_url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


@pytest.fixture
async def twilio() -> AsyncIterator[TwilioReceiver]:
    """A :class:`TwilioReceiver` on a free loopback port for one test."""
    receiver = await TwilioReceiver().start()
    try:
        yield receiver
    finally:
        await receiver.stop()
