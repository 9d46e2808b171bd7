"""Credentials `up` makes once: owner-only files in the data directory, reused, never shown."""

from __future__ import annotations

import base64
import stat
import threading
from pathlib import Path

import pytest
from pydantic import SecretStr

from bookgen_events import load_settings
from bookgen_events.credentials import (
    CREDENTIALS,
    credentials_notice,
    ensure_credentials,
    known_credentials,
    read_or_create,
    redact_url,
)
from bookgen_events.errors import ConfigError
from bookgen_events.settings import Settings

NAMES = [c.setting for c in CREDENTIALS]


def bare(data_dir: Path, **overrides: object) -> Settings:
    """Settings as a newcomer has them: no credential in the environment."""
    values: dict[str, object] = dict.fromkeys(NAMES)
    values.update(embedded_data_dir=str(data_dir), _env_file=None, **overrides)
    return load_settings(**values)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_up_makes_each_missing_credential_once_in_owner_only_files(tmp_path: Path) -> None:
    """Each credential is generated in its own 0600 file in a 0700 directory, in the SPEC's
    forms, and the next start reads back the same values."""
    data = tmp_path / ".bookgen"
    first = ensure_credentials(bare(data))
    assert mode(data) == 0o700
    for name in NAMES:
        assert mode(data / name) == 0o600, name
        value = getattr(first, name).get_secret_value()
        assert (data / name).read_text().strip() == value
    assert len(first.websocket_jwt_secret.get_secret_value().encode()) >= 32
    webhook = first.webhook_secret.get_secret_value()
    assert webhook.startswith("whsec_")
    assert 24 <= len(base64.b64decode(webhook.removeprefix("whsec_"))) <= 32
    assert first.admin_api_key != first.producer_api_key
    again = ensure_credentials(bare(data))
    assert [getattr(again, n) for n in NAMES] == [getattr(first, n) for n in NAMES]
    assert sorted(p.name for p in data.iterdir()) == sorted(NAMES)  # no temporary left


def test_values_from_the_environment_win_and_are_not_written(tmp_path: Path) -> None:
    """A credential set in the environment is used as is and never kept in a file."""
    data = tmp_path / "d"
    settings = ensure_credentials(bare(data, admin_api_key=SecretStr("from-env")))
    assert settings.admin_api_key.get_secret_value() == "from-env"
    assert not (data / "admin_api_key").exists()
    notice = credentials_notice(bare(data, admin_api_key=SecretStr("from-env")))
    assert "ADMIN_API_KEY" not in notice and str(data / "producer_api_key") in notice


def test_notice_names_paths_never_values(tmp_path: Path) -> None:
    """What `up` prints says where each credential is kept, without its value."""
    settings = ensure_credentials(bare(tmp_path))
    notice = credentials_notice(bare(tmp_path))
    for credential in CREDENTIALS:
        assert credential.variable in notice
        assert str(tmp_path.resolve() / credential.filename) in notice
        assert getattr(settings, credential.setting).get_secret_value() not in notice


def test_other_commands_read_what_up_made_and_make_nothing(tmp_path: Path) -> None:
    """known_credentials fills only from existing files; with none it creates nothing."""
    data = tmp_path / "d"
    assert known_credentials(bare(data)).websocket_jwt_secret is None
    assert not data.exists()
    made = ensure_credentials(bare(data))
    known = known_credentials(bare(data))
    assert known.websocket_jwt_secret == made.websocket_jwt_secret
    assert known.webhook_secret == made.webhook_secret


def test_modes_left_too_open_are_tightened(tmp_path: Path) -> None:
    """A data directory or credential file readable by others (an earlier release, a hand
    edit) is made owner-only again."""
    data = tmp_path / "d"
    data.mkdir(mode=0o755)
    data.chmod(0o755)
    (data / "admin_api_key").write_text("kept-key\n")
    (data / "admin_api_key").chmod(0o644)
    settings = ensure_credentials(bare(data))
    assert settings.admin_api_key.get_secret_value() == "kept-key"
    assert mode(data) == 0o700 and mode(data / "admin_api_key") == 0o600


def test_racing_starts_agree_on_one_value(tmp_path: Path) -> None:
    """Two processes starting at once keep one value: the file is created whole, once."""
    path = tmp_path / "secret"
    values: list[str] = []
    counter = iter(range(100))
    barrier = threading.Barrier(8)

    def start() -> None:
        barrier.wait()
        values.append(read_or_create(path, lambda: f"value-{next(counter)}"))

    threads = [threading.Thread(target=start) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(values)) == 1 and path.read_text().strip() == values[0]


def test_an_unwritable_data_directory_is_one_clear_error(tmp_path: Path) -> None:
    """A data directory that cannot be made says so, naming EMBEDDED_DATA_DIR."""
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(ConfigError, match="EMBEDDED_DATA_DIR"):
        ensure_credentials(bare(blocker / "sub"))


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:s3cret@127.0.0.1:6399/0", "redis://:***@127.0.0.1:6399/0"),
        ("postgresql+psycopg://u:pw@db:5432/x", "postgresql+psycopg://u:***@db:5432/x"),
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
        ("sqlite:///./bookgen.db", "sqlite:///./bookgen.db"),
    ],
)
def test_redact_url(url: str, shown: str) -> None:
    """Passwords in URLs are masked before a URL is printed."""
    assert redact_url(url) == shown
