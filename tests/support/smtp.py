"""A real aiosmtpd server on loopback, running in the test's own loop, and its fixtures.

The handler records every transaction and can be told to refuse a recipient or a DATA with a
given reply, or to take ``delay`` seconds per DATA, so failure paths meet a real server. The
fixtures reach the email tests through ``tests/consumers/conftest.py``.
"""

from __future__ import annotations

import asyncio
import email
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from email import policy
from email.message import EmailMessage
from typing import Any

import pytest
import trustme
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

USER, PASSWORD = "bookgen", "s3cret-pass"


@dataclass
class Received:
    """One accepted transaction as the server saw it."""

    mail_from: str
    rcpt_tos: list[str]
    data: bytes
    peer: Any
    tls: bool
    login: bytes | None

    def message(self) -> EmailMessage:
        return email.message_from_bytes(self.data, policy=policy.default)  # type: ignore[return-value]


@dataclass
class Recorder:
    """aiosmtpd handler: records transactions, refuses on demand, stalls each DATA ``delay`` s
    (so a kill can land mid-delivery)."""

    received: list[Received] = field(default_factory=list)
    mail_commands: int = 0
    peers: set[Any] = field(default_factory=set)
    rcpt_replies: dict[str, str] = field(default_factory=dict)  # address -> refusal reply
    data_replies: list[str] = field(default_factory=list)  # replies for the next DATAs
    delay: float = 0.0

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        self.mail_commands += 1
        self.peers.add(session.peer)
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if address in self.rcpt_replies:
            return self.rcpt_replies[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.data_replies:
            return self.data_replies.pop(0)
        login = session.auth_data if session.authenticated else None
        self.received.append(
            Received(
                str(envelope.mail_from),
                list(envelope.rcpt_tos),
                bytes(envelope.original_content or b""),
                session.peer,
                session.ssl is not None,
                login,
            )
        )
        return "250 2.0.0 Message accepted"


def check_password(
    server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
) -> AuthResult:
    ok = isinstance(auth_data, LoginPassword) and auth_data == (USER.encode(), PASSWORD.encode())
    # handled=False: aiosmtpd itself then replies 535 to a failed login.
    return AuthResult(success=ok, handled=False, auth_data=auth_data.login if ok else None)


class SmtpServer:
    """Start, stop (dropping live connections) and restart an aiosmtpd server on one port."""

    def __init__(self, port: int = 0, *, ssl: ssl.SSLContext | None = None, **smtp_options: Any):
        self.port = port
        self.ssl = ssl  # implicit TLS from the first byte (the port 465 style)
        self.handler = Recorder()
        self.options = smtp_options
        self._server: asyncio.Server | None = None
        self._sessions: list[SMTP] = []

    async def start(self) -> SmtpServer:
        loop = asyncio.get_running_loop()

        def factory() -> SMTP:
            protocol = SMTP(self.handler, hostname="localhost", loop=loop, **self.options)
            self._sessions.append(protocol)
            return protocol

        self._server = await loop.create_server(factory, "127.0.0.1", self.port, ssl=self.ssl)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def drop_connections(self) -> None:
        """Close every live session, as a server restart or idle timeout would."""
        for session in self._sessions:
            if session.transport is not None:
                session.transport.close()
        self._sessions.clear()

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self.drop_connections()
            await self._server.wait_closed()
            self._server = None
        await asyncio.sleep(0)  # let the closed sessions' callbacks run


@pytest.fixture(scope="session")
def ca() -> trustme.CA:
    """A throw-away certificate authority for the STARTTLS tests."""
    return trustme.CA()


@pytest.fixture
def server_tls(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    return context


@pytest.fixture
def client_tls(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


@pytest.fixture
async def smtp_server() -> AsyncIterator[SmtpServer]:
    """A plain SMTP server (no TLS, no AUTH) on a free loopback port."""
    server = await SmtpServer().start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
async def starttls_server(server_tls: ssl.SSLContext) -> AsyncIterator[SmtpServer]:
    """A server that refuses mail until the client has said STARTTLS."""
    server = await SmtpServer(tls_context=server_tls, require_starttls=True).start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
async def auth_server(server_tls: ssl.SSLContext) -> AsyncIterator[SmtpServer]:
    """A server that requires STARTTLS and then AUTH with ``USER``/``PASSWORD``."""
    server = await SmtpServer(
        tls_context=server_tls,
        require_starttls=True,
        auth_required=True,
        authenticator=check_password,
    ).start()
    try:
        yield server
    finally:
        await server.stop()
