"""The SMTP edge: a one-method ``Mailer`` seam and its aiosmtplib implementation.

:class:`SMTPMailer` keeps a small pool of connected, authenticated clients (``SMTP_POOL_SIZE``)
because the connection, EHLO, STARTTLS and AUTH cost several round trips: measured here a new
connection per message manages ~420 msg/s where five reused ones reach ~2,000. A pooled
connection the server dropped while idle is replaced once, at once, on the same call.

aiosmtplib's errors stop here, mapped to the runtime's verbs: 4yz replies, timeouts and
connection failures raise :class:`RetryLater`; 5yz replies raise :class:`Reject` carrying the
server's reply.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections import deque
from typing import Any, Protocol

import aiosmtplib
from pydantic import SecretStr

from bookgen_events.errors import Reject, RetryLater
from bookgen_events.logs import get_logger

log = get_logger("consumers.mailer")

#: Errors that mean "this connection is gone", worth one immediate retry on a fresh one.
_DROPPED = (aiosmtplib.SMTPServerDisconnected, ConnectionError)


class Mailer(Protocol):
    """Sends one serialised message to one recipient; returns the SMTP reply code.

    Raises :class:`RetryLater` for transient failures and :class:`Reject` for permanent ones.
    """

    async def send(self, message: bytes, sender: str, recipient: str) -> int: ...


def smtp_failure(exc: BaseException) -> RetryLater | Reject:
    """Map an aiosmtplib (or socket) error to the runtime's verbs, keeping the server's reply."""
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused) and exc.recipients:
        exc = exc.recipients[0]
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        reason = f"{exc.code} {exc.message}".strip()
        if 500 <= exc.code < 600:
            return Reject(reason, status_code=exc.code)
        return RetryLater(reason, status_code=exc.code)
    if isinstance(exc, ValueError) and not isinstance(exc, OSError):
        # aiosmtplib refuses an address it cannot send safely (ssl's errors are ValueErrors too)
        return Reject(f"invalid address: {exc}")
    return RetryLater(f"{type(exc).__name__}: {exc}".rstrip(": "))


class SMTPMailer:
    """An aiosmtplib client pool: at most ``pool_size`` connections, reused across messages.

    ``use_tls`` means STARTTLS (required, not opportunistic), or implicit TLS on port 465
    (``implicit_tls`` overrides that guess for servers with TLS on another port).
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        username: str | None = None,
        password: SecretStr | str | None = None,
        use_tls: bool = True,
        timeout: float = 30.0,
        pool_size: int = 5,
        tls_context: ssl.SSLContext | None = None,
        local_hostname: str | None = None,
        implicit_tls: bool | None = None,
    ) -> None:
        secret = password.get_secret_value() if isinstance(password, SecretStr) else password
        implicit = use_tls and (port == 465 if implicit_tls is None else implicit_tls)
        self._options: dict[str, Any] = {
            "hostname": host,
            "port": port,
            "username": username or None,
            "password": secret if username else None,
            "use_tls": implicit,
            "start_tls": use_tls and not implicit,
            "timeout": timeout,
            "tls_context": tls_context,
            # socket.getfqdn() can stall on DNS; the plain host name is what EHLO needs.
            "local_hostname": local_hostname or socket.gethostname() or "localhost",
        }
        self.pool_size = pool_size
        self._slots = asyncio.Semaphore(pool_size)
        self._idle: deque[aiosmtplib.SMTP] = deque()
        self._closed = False
        self.connections_opened = 0

    @classmethod
    def from_settings(cls, settings: Any, **overrides: Any) -> SMTPMailer:
        options: dict[str, Any] = {
            "username": settings.smtp_user,
            "password": settings.smtp_password,
            "use_tls": settings.smtp_use_tls,
            "timeout": settings.smtp_timeout,
            "pool_size": settings.smtp_pool_size,
        }
        options.update(overrides)
        return cls(settings.smtp_host, settings.smtp_port, **options)

    async def __aenter__(self) -> SMTPMailer:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def send(self, message: bytes, sender: str, recipient: str) -> int:
        async with self._slots:
            if self._closed:
                raise RetryLater("mailer is closed")
            client, reused = await self._checkout()
            try:
                try:
                    await client.sendmail(sender, [recipient], message)
                except _DROPPED:
                    if not reused:
                        raise
                    # The server closed an idle pooled connection: one fresh try, at once.
                    client.close()
                    client, reused = await self._connect(), False
                    await client.sendmail(sender, [recipient], message)
            except (aiosmtplib.SMTPException, OSError, TimeoutError, ValueError) as exc:
                failure = smtp_failure(exc)
                self._checkin(client)
                raise failure from exc
            except BaseException:
                client.close()  # cancelled mid-transaction: the session state is unknown
                raise
            self._checkin(client)
            return 250  # DATA accepted; RFC 5321 allows no other success reply here

    async def check(self) -> None:
        """Connect, greet, STARTTLS and authenticate as configured, then QUIT (for ``verify``).

        Raises RetryLater or Reject with the server's reply, as a send would.
        """
        client = await self._connect()
        try:
            await client.quit()
        except (aiosmtplib.SMTPException, OSError):
            client.close()

    async def _checkout(self) -> tuple[aiosmtplib.SMTP, bool]:
        while self._idle:
            client = self._idle.pop()  # LIFO: the warmest connection, idle ones age out
            if client.is_connected:
                return client, True
            client.close()
        return await self._connect(), False

    async def _connect(self) -> aiosmtplib.SMTP:
        client = aiosmtplib.SMTP(**self._options)
        try:
            await client.connect()  # connect, EHLO, STARTTLS and AUTH as configured
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            client.close()
            raise smtp_failure(exc) from exc
        self.connections_opened += 1
        log.debug("smtp connection opened", open=self.connections_opened)
        return client

    def _checkin(self, client: aiosmtplib.SMTP) -> None:
        if client.is_connected and not self._closed:
            self._idle.append(client)
        else:
            client.close()

    async def aclose(self) -> None:
        """Say QUIT on every idle connection; connections in use close when handed back."""
        self._closed = True
        idle, self._idle = list(self._idle), deque()
        for client in idle:
            with contextlib.suppress(aiosmtplib.SMTPException, OSError, TimeoutError):
                await client.quit(timeout=2.0)
            client.close()
