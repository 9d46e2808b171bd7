"""SMTPMailer against a real aiosmtpd server: pooling, reconnects, STARTTLS, AUTH, error mapping."""

from __future__ import annotations

import asyncio
import ssl

import pytest

from bookgen_events import Reject, RetryLater
from consumers.mailer import SMTPMailer
from tests.support.ports import free_port
from tests.support.smtp import PASSWORD, USER, SmtpServer

MESSAGE = b"From: noreply@bookgen.com\r\nTo: a@example.com\r\nSubject: hi\r\n\r\nhello\r\n"


def plain_mailer(port: int, **options: object) -> SMTPMailer:
    return SMTPMailer("127.0.0.1", port, use_tls=False, timeout=5.0, **options)  # type: ignore[arg-type]


async def test_plain_send_reaches_the_server(smtp_server: SmtpServer) -> None:
    """A message handed to the mailer arrives with its envelope sender and recipient."""
    async with plain_mailer(smtp_server.port) as mailer:
        code = await mailer.send(MESSAGE, "noreply@bookgen.com", "a@example.com")
    assert code == 250
    [got] = smtp_server.handler.received
    assert (got.mail_from, got.rcpt_tos, got.tls) == (
        "noreply@bookgen.com",
        ["a@example.com"],
        False,
    )
    assert got.message()["Subject"] == "hi"


async def test_connections_are_pooled_and_reused(smtp_server: SmtpServer) -> None:
    """Forty concurrent sends through a pool of two use exactly two connections."""
    async with plain_mailer(smtp_server.port, pool_size=2) as mailer:
        await asyncio.gather(
            *(mailer.send(MESSAGE, "noreply@bookgen.com", f"u{i}@example.com") for i in range(40))
        )
        assert mailer.connections_opened == 2
    assert len(smtp_server.handler.received) == 40
    assert len(smtp_server.handler.peers) == 2


async def test_a_dropped_connection_is_replaced_transparently(smtp_server: SmtpServer) -> None:
    """When the server closes an idle pooled connection, the next send reconnects and succeeds."""
    async with plain_mailer(smtp_server.port, pool_size=1) as mailer:
        await mailer.send(MESSAGE, "noreply@bookgen.com", "a@example.com")
        smtp_server.drop_connections()
        assert await mailer.send(MESSAGE, "noreply@bookgen.com", "b@example.com") == 250
        assert mailer.connections_opened == 2
    assert [r.rcpt_tos for r in smtp_server.handler.received] == [
        ["a@example.com"],
        ["b@example.com"],
    ]


async def test_no_server_is_a_transient_failure() -> None:
    """A refused connection is RetryLater, not a crash or a rejection."""
    async with plain_mailer(free_port()) as mailer:
        with pytest.raises(RetryLater):
            await mailer.send(MESSAGE, "noreply@bookgen.com", "a@example.com")


async def test_starttls_upgrades_before_mail(
    starttls_server: SmtpServer, client_tls: ssl.SSLContext
) -> None:
    """With SMTP_USE_TLS the session is upgraded with STARTTLS (verified certificate) before MAIL."""
    mailer = SMTPMailer(
        "127.0.0.1", starttls_server.port, use_tls=True, timeout=5.0, tls_context=client_tls
    )
    async with mailer:
        assert await mailer.send(MESSAGE, "noreply@bookgen.com", "a@example.com") == 250
    [got] = starttls_server.handler.received
    assert got.tls


async def test_implicit_tls_speaks_tls_from_the_first_byte(
    server_tls: ssl.SSLContext, client_tls: ssl.SSLContext
) -> None:
    """The port 465 style: TLS before the greeting, no STARTTLS."""
    server = await SmtpServer(ssl=server_tls).start()
    try:
        mailer = SMTPMailer(
            "127.0.0.1",
            server.port,
            use_tls=True,
            implicit_tls=True,
            timeout=5.0,
            tls_context=client_tls,
        )
        async with mailer:
            assert await mailer.send(MESSAGE, "noreply@bookgen.com", "a@example.com") == 250
    finally:
        await server.stop()
    assert [r.rcpt_tos for r in server.handler.received] == [["a@example.com"]]


async def test_starttls_refuses_an_untrusted_certificate(starttls_server: SmtpServer) -> None:
    """Certificates are verified: a self-signed one not in the trust store is a transient failure."""
    async with SMTPMailer("127.0.0.1", starttls_server.port, use_tls=True, timeout=5.0) as mailer:
        with pytest.raises(RetryLater, match="CERTIFICATE_VERIFY_FAILED"):
            await mailer.send(MESSAGE, "noreply@bookgen.com", "a@example.com")
    assert starttls_server.handler.received == []


async def test_auth_logs_in_with_the_configured_credentials(
    auth_server: SmtpServer, client_tls: ssl.SSLContext
) -> None:
    """SMTP_USER/SMTP_PASSWORD authenticate the pooled connection once, over TLS."""
    from pydantic import SecretStr

    mailer = SMTPMailer(
        "127.0.0.1",
        auth_server.port,
        username=USER,
        password=SecretStr(PASSWORD),
        use_tls=True,
        timeout=5.0,
        tls_context=client_tls,
    )
    async with mailer:
        for rcpt in ("a@example.com", "b@example.com"):
            await mailer.send(MESSAGE, "noreply@bookgen.com", rcpt)
        assert mailer.connections_opened == 1
    assert [(r.login, r.tls) for r in auth_server.handler.received] == [(USER.encode(), True)] * 2


async def test_a_wrong_password_is_the_servers_5yz(
    auth_server: SmtpServer, client_tls: ssl.SSLContext
) -> None:
    """A refused AUTH is mapped like any 5yz reply: Reject carrying the server's reply."""
    mailer = SMTPMailer(
        "127.0.0.1",
        auth_server.port,
        username=USER,
        password="wrong",
        use_tls=True,
        timeout=5.0,
        tls_context=client_tls,
    )
    async with mailer:
        with pytest.raises(Reject) as info:
            await mailer.send(MESSAGE, "noreply@bookgen.com", "a@example.com")
    assert info.value.status_code == 535
    assert "535" in info.value.reason
    assert auth_server.handler.received == []


async def test_reply_codes_map_to_retry_or_reject(smtp_server: SmtpServer) -> None:
    """4yz replies are RetryLater and 5yz Reject, both with the reply; the connection survives."""
    smtp_server.handler.rcpt_replies["gone@example.com"] = "550 5.1.1 mailbox unavailable"
    smtp_server.handler.data_replies.append("451 4.3.0 try again later")
    async with plain_mailer(smtp_server.port, pool_size=1) as mailer:
        with pytest.raises(RetryLater) as later:
            await mailer.send(MESSAGE, "noreply@bookgen.com", "a@example.com")
        with pytest.raises(Reject) as rejected:
            await mailer.send(MESSAGE, "noreply@bookgen.com", "gone@example.com")
        assert await mailer.send(MESSAGE, "noreply@bookgen.com", "a@example.com") == 250
        assert mailer.connections_opened == 1
    assert (later.value.status_code, later.value.reason) == (451, "451 4.3.0 try again later")
    assert rejected.value.status_code == 550
    assert "mailbox unavailable" in rejected.value.reason
