"""One ``Settings`` read once at start-up from the environment and ``.env``.

Variable names are the seed's (``WEBHOOK_TIMEOUT``, ``SMTP_HOST``, ...) plus the SPEC's
(``REDIS_URL``, ``DATABASE_URL``, ...). A bad value fails at start with the variable's name.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Annotated, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from .errors import ConfigError
from .events import EventType

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def parse_duration(text: str) -> float:
    """``"5s"``, ``"30m"``, ``"2h"``, ``"250ms"`` or plain seconds -> seconds."""
    match = _DURATION.match(text)
    if not match:
        raise ValueError(f"{text!r} is not a duration (e.g. 500ms, 5s, 5m, 2h, 1d)")
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]


def _schedule(value: object) -> tuple[float, ...]:
    if isinstance(value, str):
        parts = [p for p in value.split(",") if p.strip()]
        value = tuple(parse_duration(p) for p in parts)
    if not isinstance(value, (list, tuple)) or not value:
        raise ValueError("must list at least one delay, e.g. 5s,5m,30m")
    return tuple(float(v) for v in value)


def _csv(value: object) -> list[str]:
    if isinstance(value, str):
        return [p.strip() for p in value.split(",") if p.strip()]
    return list(value)  # type: ignore[call-overload]


def _duration(value: object) -> float:
    seconds = parse_duration(value) if isinstance(value, str) else float(value)  # type: ignore[arg-type]
    if seconds <= 0:
        raise ValueError("must be a positive duration, e.g. 10s, 5m, 7d")
    return seconds


def _optional_duration(value: object) -> float | None:
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "off")):
        return None
    return _duration(value)


_SEVERITIES = ("info", "warning", "error", "critical")


def _sms_types(value: object) -> list[str]:
    """``SMS_TYPES``: event types, ``error_alert`` optionally narrowed to one severity
    (``error_alert:critical``); an entry per severity wanted."""
    entries = _csv(value)
    names = [kind.value for kind in EventType]
    for entry in entries:
        kind, colon, severity = entry.partition(":")
        if kind not in names:
            raise ValueError(f"{entry!r}: not an event type (one of {', '.join(names)})")
        if colon and (kind != EventType.ERROR_ALERT or severity not in _SEVERITIES):
            raise ValueError(
                f"{entry!r}: only error_alert takes a severity, one of {', '.join(_SEVERITIES)}"
            )
    return entries


Schedule = Annotated[tuple[float, ...], NoDecode]
Duration = Annotated[float, NoDecode]
OptionalDuration = Annotated[float | None, NoDecode]
CsvList = Annotated[list[str], NoDecode]


class Settings(BaseSettings):
    """Every knob of bookgen-events; see README's configuration table."""

    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", case_sensitive=False
    )

    # Redis and streams
    redis_url: str | None = None
    # Redis Cluster (SPEC 12): unset detects it from the node REDIS_URL names
    redis_cluster: bool | None = None
    # Partition streams events spread over by job; fixed for a deployment's life
    stream_partitions: int = Field(1, ge=1, le=1024)
    stream_prefix: str = Field("bookgen", pattern=r"^[A-Za-z0-9_.:-]+$")
    stream_maxlen: int = Field(1_000_000, ge=1000)
    max_event_bytes: int = Field(64 * 1024, ge=1024)
    # Time (SPEC 11): an id emitted again within the window appends nothing; streams, log
    # rows and dead letters older than their retention are trimmed (unset: kept)
    idempotency_window: Duration = _duration("24h")
    stream_retention: OptionalDuration = None
    log_retention: OptionalDuration = None
    dlq_retention: OptionalDuration = None
    claim_idle_ms: int = Field(60_000, ge=100)
    embedded_data_dir: str = ".bookgen"

    # Consumer runtime
    consumer_batch: int = Field(100, ge=1, le=10_000)
    consumer_concurrency: int = Field(64, ge=1, le=10_000)
    consumer_name: str | None = None
    shutdown_grace_s: float = Field(10.0, ge=0)

    # Webhooks
    webhook_timeout: float = Field(30.0, gt=0)
    webhook_max_retries: int = Field(3, ge=0, le=100)
    webhook_retry_schedule: Schedule = _schedule("5s,5m,30m,2h,5h,10h,10h")
    webhook_secret: SecretStr | None = None
    webhook_allow_private: bool = False

    # Email
    email_enabled: bool = False
    smtp_host: str = "localhost"
    smtp_port: int = Field(587, ge=1, le=65535)
    smtp_user: str | None = None
    smtp_password: SecretStr | None = None
    from_email: str = "noreply@bookgen.com"
    smtp_use_tls: bool = True
    smtp_timeout: float = Field(30.0, gt=0)
    smtp_pool_size: int = Field(5, ge=1, le=100)
    email_max_retries: int = Field(3, ge=0, le=100)
    email_retry_schedule: Schedule = _schedule("30s,5m,30m,2h,5h")
    admin_emails: CsvList = Field(default_factory=list)

    # SMS (SPEC 10): Twilio's Messages API; the sms worker runs when enabled
    sms_enabled: bool = False
    twilio_account_sid: str | None = Field(None, pattern=r"^AC[0-9a-fA-F]{32}$")
    twilio_auth_token: SecretStr | None = None
    # A sender number (E.164) or an alphanumeric sender id; or a messaging service instead
    twilio_from: str | None = Field(None, pattern=r"^(\+[1-9][0-9]{7,14}|[A-Za-z0-9 ]{1,11})$")
    twilio_messaging_service_sid: str | None = Field(None, pattern=r"^MG[0-9a-fA-F]{32}$")
    twilio_api_base: str = Field("https://api.twilio.com", pattern=r"^https?://[^\s/?#]+/?$")
    # What is texted at all (a subscriber's preferences choose within it): completions and
    # critical error alerts by default, texts cost money and attention
    sms_types: CsvList = Field(default_factory=lambda: ["completion", "error_alert:critical"])

    # WebSocket gateway and HTTP
    websocket_enabled: bool = True
    websocket_auth: Literal["jwt", "none"] = "jwt"
    websocket_jwt_secret: SecretStr | None = None
    websocket_queue_size: int = Field(1000, ge=1)
    websocket_ping_interval: float = Field(25.0, gt=0)  # Centrifugo's
    websocket_ping_timeout: float = Field(8.0, gt=0)
    websocket_allowed_origins: CsvList = Field(default_factory=list)
    websocket_resume_max: int = Field(10_000, ge=1)
    websocket_max_connections_per_user: int = Field(20, ge=1)
    websocket_token_max_ttl: Duration = _duration("7d")
    http_header_timeout: Duration = _duration("10s")

    # Endpoints (SPEC 9): the old secret keeps signing this long after a rotation
    endpoint_secret_grace: Duration = _duration("24h")
    # ... and one whose every delivery failed this long, this often, is disabled (Svix's)
    endpoint_disable_after: Duration = _duration("5d")
    endpoint_disable_min_failures: int = Field(10, ge=1)

    # Subscribers (SPEC 9): one-click unsubscribe links point at the gateway's public URL
    public_url: str | None = None  # default: the gateway's own http://HOST:PORT
    unsubscribe_secret: SecretStr | None = None
    unsubscribe_link_ttl: Duration = _duration("90d")

    # Keys of the HTTP surface (SPEC 8): producers post events, operators run the rest
    producer_api_key: SecretStr | None = None
    admin_api_key: SecretStr | None = None

    # Rate limits (per channel and recipient); channel overrides fall back to these
    notification_rate_limit_per_minute: int = Field(60, ge=0)
    notification_rate_limit_per_hour: int = Field(500, ge=0)
    email_rate_limit_per_minute: int | None = Field(None, ge=0)
    email_rate_limit_per_hour: int | None = Field(None, ge=0)
    webhook_rate_limit_per_minute: int | None = Field(None, ge=0)
    webhook_rate_limit_per_hour: int | None = Field(None, ge=0)
    websocket_rate_limit_per_minute: int | None = Field(None, ge=0)
    websocket_rate_limit_per_hour: int | None = Field(None, ge=0)
    sms_rate_limit_per_minute: int | None = Field(None, ge=0)
    sms_rate_limit_per_hour: int | None = Field(None, ge=0)

    # Logging and database
    enable_notification_logging: bool = True
    database_url: str = "sqlite:///./bookgen.db"
    log_level: str = "INFO"
    log_format: Literal["auto", "json", "console"] = "auto"

    _split_schedules = field_validator(
        "webhook_retry_schedule", "email_retry_schedule", mode="before"
    )(classmethod(lambda cls, v: _schedule(v)))
    _sms_types = field_validator("sms_types", mode="before")(
        classmethod(lambda cls, v: _sms_types(v))
    )
    _split_csv = field_validator("admin_emails", "websocket_allowed_origins", mode="before")(
        classmethod(lambda cls, v: _csv(v))
    )
    _durations = field_validator(
        "websocket_token_max_ttl", "http_header_timeout", "idempotency_window", mode="before"
    )(classmethod(lambda cls, v: _duration(v)))
    _optional_durations = field_validator(
        "stream_retention", "log_retention", "dlq_retention", mode="before"
    )(classmethod(lambda cls, v: _optional_duration(v)))

    def retry_policy(self, channel: str) -> tuple[tuple[float, ...], int]:
        """``(schedule, max_retries)`` for a channel; channels without their own use webhook's."""
        if channel == "email":
            return self.email_retry_schedule, self.email_max_retries
        return self.webhook_retry_schedule, self.webhook_max_retries

    def rate_limits(self, channel: str) -> tuple[int, int]:
        """``(per_minute, per_hour)`` for a channel; 0 means unlimited."""
        minute = getattr(self, f"{channel}_rate_limit_per_minute", None)
        hour = getattr(self, f"{channel}_rate_limit_per_hour", None)
        return (
            self.notification_rate_limit_per_minute if minute is None else minute,
            self.notification_rate_limit_per_hour if hour is None else hour,
        )


def load_settings(**overrides: object) -> Settings:
    """Read the settings, turning a validation error into a :class:`ConfigError` naming the variable."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = "; ".join(
            f"{'_'.join(str(p) for p in err['loc']).upper()}: {err['msg']}"
            for err in exc.errors(include_url=False, include_input=False)
        )
        raise ConfigError(f"bad configuration: {problems}") from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return load_settings()
