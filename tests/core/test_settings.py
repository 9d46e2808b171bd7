"""Settings: the seed's variable names, clear errors, secrets kept secret."""

from __future__ import annotations

import pytest

from bookgen_events import ConfigError, load_settings
from bookgen_events.settings import parse_duration


def test_defaults_match_the_spec(monkeypatch: pytest.MonkeyPatch) -> None:
    """Defaults are the SPEC's: Svix schedule, 3 retries, 30 s timeout, 60/500 limits."""
    monkeypatch.chdir("/")
    s = load_settings(_env_file=None)
    assert s.webhook_retry_schedule == (5, 300, 1800, 7200, 18000, 36000, 36000)
    assert s.webhook_max_retries == 3 and s.webhook_timeout == 30
    assert s.rate_limits("email") == (60, 500)
    assert s.stream_prefix == "bookgen" and s.stream_maxlen == 1_000_000
    assert s.max_event_bytes == 65536


def test_environment_variables_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    """Seed names are read from the environment, lists comma-separated."""
    monkeypatch.setenv("ADMIN_EMAILS", "admin1@example.com, admin2@example.com")
    monkeypatch.setenv("WEBHOOK_RETRY_SCHEDULE", "1s,250ms,2m")
    monkeypatch.setenv("EMAIL_RATE_LIMIT_PER_MINUTE", "3")
    monkeypatch.setenv("NOTIFICATION_RATE_LIMIT_PER_HOUR", "7")
    s = load_settings(_env_file=None)
    assert s.admin_emails == ["admin1@example.com", "admin2@example.com"]
    assert s.webhook_retry_schedule == (1.0, 0.25, 120.0)
    assert s.rate_limits("email") == (3, 7)
    assert s.rate_limits("webhook") == (60, 7)


def test_dotenv_file_is_read(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A .env file in the working directory configures the process."""
    (tmp_path / ".env").write_text("WEBHOOK_TIMEOUT=12\nSMTP_HOST=mail.example.com\n")
    monkeypatch.chdir(tmp_path)
    s = load_settings()
    assert s.webhook_timeout == 12 and s.smtp_host == "mail.example.com"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("WEBHOOK_TIMEOUT", "soon"),
        ("WEBHOOK_RETRY_SCHEDULE", "5 fortnights"),
        ("SMTP_PORT", "70000"),
        ("WEBSOCKET_AUTH", "maybe"),
        ("STREAM_MAXLEN", "-1"),
    ],
)
def test_bad_values_fail_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    """A malformed variable fails at start with its name in the message."""
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=name):
        load_settings(_env_file=None)


def test_secrets_are_never_printed(monkeypatch: pytest.MonkeyPatch) -> None:
    """Passwords and keys are SecretStr: not in repr, str or a config error's message."""
    monkeypatch.setenv("SMTP_PASSWORD", "hunter2-secret")
    monkeypatch.setenv("WEBHOOK_SECRET", "whsec_c2VjcmV0")
    s = load_settings(_env_file=None)
    assert "hunter2" not in repr(s) and "hunter2" not in str(s.model_dump())
    assert "c2VjcmV0" not in repr(s)
    monkeypatch.setenv("SMTP_PORT", "bad")
    with pytest.raises(ConfigError) as info:
        load_settings(_env_file=None)
    assert "hunter2" not in str(info.value)


@pytest.mark.parametrize(
    ("text", "seconds"), [("5s", 5), ("5m", 300), ("2h", 7200), ("250ms", 0.25), ("1.5", 1.5)]
)
def test_durations(text: str, seconds: float) -> None:
    """Durations accept ms/s/m/h/d suffixes and bare seconds."""
    assert parse_duration(text) == seconds
