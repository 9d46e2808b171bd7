"""``bookgen-events verify``: check Redis, the database, SMTP and a webhook target, and say
plainly what is wrong with each (the seed's ``verify_notifications.py``)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from sqlalchemy import text

from consumers.mailer import SMTPMailer
from consumers.webhook import open_channel

from ..bus import EventBus
from ..db import init_db
from ..errors import ConfigError, Reject, RetryLater
from ..events import make_event
from ..settings import Settings

MIN_REDIS = (6, 2)


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    skipped: bool = False


async def check_redis(bus: EventBus) -> Check:
    try:
        info = await asyncio.wait_for(bus.redis.info("server"), timeout=5)
    except Exception as exc:
        return Check("redis", False, f"cannot reach Redis: {exc}")
    version = str(info.get("valkey_version") or info.get("redis_version") or "0")
    parsed = tuple(int(p) for p in version.split(".")[:2] if p.isdigit())
    if parsed < MIN_REDIS:
        return Check("redis", False, f"version {version} is too old: Streams need 6.2+")
    aof = (await bus.redis.config_get("appendonly")).get("appendonly", "?")
    note = "" if aof == "yes" else " (appendonly is off: a restart loses unacknowledged work)"
    return Check("redis", True, f"version {version}, appendonly={aof}{note}")


async def check_database(settings: Settings) -> Check:
    if not settings.enable_notification_logging:
        return Check("database", True, "ENABLE_NOTIFICATION_LOGGING=false", skipped=True)

    def probe() -> str:

        engine = init_db(settings.database_url)
        with engine.connect() as conn:
            count = conn.execute(text("SELECT COUNT(*) FROM notifications")).scalar_one()
        return f"{engine.dialect.name}, notifications table has {count} rows"

    try:
        return Check("database", True, await asyncio.to_thread(probe))
    except Exception as exc:
        return Check("database", False, f"{type(exc).__name__}: {exc}".splitlines()[0])


async def check_smtp(settings: Settings) -> Check:
    if not settings.email_enabled:
        return Check("smtp", True, "EMAIL_ENABLED=false", skipped=True)

    where = f"{settings.smtp_host}:{settings.smtp_port}"
    mailer = SMTPMailer.from_settings(settings)
    try:
        await asyncio.wait_for(mailer.check(), timeout=settings.smtp_timeout + 5)
    except (RetryLater, Reject) as exc:
        return Check("smtp", False, f"{where}: {exc}")
    except Exception as exc:
        return Check("smtp", False, f"{where}: {type(exc).__name__}: {exc}")
    finally:
        await mailer.aclose()
    tls = "STARTTLS" if settings.smtp_use_tls else "no TLS"
    auth = "authenticated" if settings.smtp_user else "no AUTH"
    return Check("smtp", True, f"{where} answered ({tls}, {auth}); no mail sent")


async def check_webhook(settings: Settings, url: str | None) -> Check:
    if not url:
        return Check("webhook", True, "no --webhook-url given", skipped=True)

    try:
        event = make_event(
            {
                "type": "admin_alert",
                "data": {"alert_type": "verify", "message": "bookgen-events verify ping"},
                "webhook_url": url,
            }
        )
    except ValueError as exc:
        return Check("webhook", False, str(exc))
    async with open_channel(settings) as channel:
        try:
            status = await channel.deliver(event, url)
        except (RetryLater, Reject) as exc:
            kind = "would be retried" if isinstance(exc, RetryLater) else "permanent"
            return Check("webhook", False, f"{url}: {exc} ({kind})")
    secret = "signed with WEBHOOK_SECRET" if settings.webhook_secret else "WEBHOOK_SECRET unset!"
    return Check("webhook", True, f"{url} answered {status} to a signed test ping ({secret})")


async def check_sms(settings: Settings) -> Check:
    if not settings.sms_enabled:
        return Check("sms", True, "SMS_ENABLED=false", skipped=True)
    from consumers.sms import check_account

    where = settings.twilio_api_base
    try:
        detail = await check_account(settings)
    except (RetryLater, Reject, ConfigError) as exc:
        return Check("sms", False, f"{where}: {exc}")
    except Exception as exc:
        return Check("sms", False, f"{where}: {type(exc).__name__}: {exc}")
    return Check("sms", True, f"{where}: {detail}")


async def verify(bus: EventBus, settings: Settings, webhook_url: str | None) -> list[Check]:
    """Run every check; none stops the others."""
    checks: list[Callable[[], Awaitable[Check]]] = [
        lambda: check_redis(bus),
        lambda: check_database(settings),
        lambda: check_smtp(settings),
        lambda: check_webhook(settings, webhook_url),
        lambda: check_sms(settings),
    ]
    return [await check() for check in checks]
