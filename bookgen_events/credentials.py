"""Credentials ``up`` generates once and keeps in the data directory (SPEC 8).

With no ``WEBSOCKET_JWT_SECRET``, ``ADMIN_API_KEY``, ``PRODUCER_API_KEY`` or
``WEBHOOK_SECRET`` in the environment, ``up`` makes each one on its first start and keeps it
in its own file in ``EMBEDDED_DATA_DIR`` (the directory 0700, each file 0600), so the next
start, and every other command run from the same folder (``token``, ``emit``, ``demo``...),
uses the same values. A value set in the environment always wins and is never written.

Files are created whole or not at all: written under a temporary name opened with
``O_CREAT | O_EXCL`` and mode 0600, then hard-linked into place, so two processes starting
at once agree on one value and none ever reads a half-written file.
"""

from __future__ import annotations

import base64
import contextlib
import os
import secrets
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from pydantic import SecretStr

from .errors import ConfigError
from .settings import Settings


def _urlsafe(nbytes: int) -> Callable[[], str]:
    return lambda: secrets.token_urlsafe(nbytes)


def _whsec() -> str:
    # Standard Webhooks' form: whsec_ + base64 of the raw key (Svix uses 24 bytes; 32 here).
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


@dataclass(frozen=True)
class Credential:
    """One generated setting: its field, its variable and the file that keeps it."""

    setting: str
    generate: Callable[[], str]

    @property
    def variable(self) -> str:
        return self.setting.upper()

    @property
    def filename(self) -> str:
        return self.setting


CREDENTIALS = (
    # 48 random bytes, well over the 32 an HS256 key needs (RFC 7518 3.2).
    Credential("websocket_jwt_secret", _urlsafe(48)),
    Credential("admin_api_key", _urlsafe(32)),
    Credential("producer_api_key", _urlsafe(32)),
    Credential("webhook_secret", _whsec),
    # Signs one-click unsubscribe links (its own key: a leaked link grants nothing else).
    Credential("unsubscribe_secret", _urlsafe(32)),
)
#: The embedded server's password file, beside the credentials (see :mod:`.embedded`).
REDIS_PASSWORD_FILE = "redis_password"


# -- private files ---------------------------------------------------------------------------


def private_dir(path: str | Path) -> Path:
    """``path`` (created if missing) as an absolute directory only its owner can enter."""
    directory = Path(path).expanduser().resolve()
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    if stat.S_IMODE(directory.stat().st_mode) != 0o700:
        directory.chmod(0o700)  # made by an earlier release, or by hand
    return directory


def read_secret(path: Path) -> str | None:
    """The file's value (stripped), or None if it is missing, empty or unreadable."""
    try:
        value = path.read_text(encoding="utf-8").strip()
    except OSError:
        return None
    if value:
        with contextlib.suppress(OSError):
            if stat.S_IMODE(path.stat().st_mode) & 0o077:
                path.chmod(0o600)
    return value or None


def _write_new(path: Path, value: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as file:
        file.write(value + "\n")
        file.flush()
        os.fsync(file.fileno())


def read_or_create(path: Path, generate: Callable[[], str]) -> str:
    """The value kept in ``path``; made with ``generate`` and written 0600 if there is none."""
    existing = read_secret(path)
    if existing is not None:
        return existing
    value = generate()
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    _write_new(temporary, value)
    try:
        os.link(temporary, path)
    except FileExistsError:
        pass  # another process got there first: its value is the one
    except OSError:  # a filesystem without hard links: create it in place
        with contextlib.suppress(FileExistsError):
            _write_new(path, value)
    finally:
        with contextlib.suppress(OSError):
            temporary.unlink()
    kept = read_secret(path)
    if kept is None:
        raise OSError(f"{path} is empty or unreadable: delete it to have a new one made")
    return kept


# -- settings --------------------------------------------------------------------------------


def credential_path(settings: Settings, credential: Credential) -> Path:
    return Path(settings.embedded_data_dir).expanduser().resolve() / credential.filename


def missing_credentials(settings: Settings) -> list[Credential]:
    """Credentials the environment does not set."""
    return [c for c in CREDENTIALS if getattr(settings, c.setting) is None]


def ensure_credentials(settings: Settings) -> Settings:
    """``settings`` with every missing credential read from its file, generated if it has none.

    Creates the data directory (0700). Values set in the environment are left alone.
    """
    missing = missing_credentials(settings)
    if not missing:
        return settings
    try:
        directory = private_dir(settings.embedded_data_dir)
        update = {
            c.setting: SecretStr(read_or_create(directory / c.filename, c.generate))
            for c in missing
        }
    except OSError as exc:
        raise ConfigError(
            f"cannot keep credentials in {settings.embedded_data_dir} (EMBEDDED_DATA_DIR): {exc}"
        ) from None
    return settings.model_copy(update=update)


def known_credentials(settings: Settings) -> Settings:
    """``settings`` with missing credentials read from files ``up`` already wrote; none made."""
    update = {}
    for credential in missing_credentials(settings):
        value = read_secret(credential_path(settings, credential))
        if value is not None:
            update[credential.setting] = SecretStr(value)
    return settings.model_copy(update=update) if update else settings


def credentials_notice(env_settings: Settings) -> str | None:
    """Where ``up`` keeps what the environment did not set (paths only, never values)."""
    missing = missing_credentials(env_settings)
    if not missing:
        return None
    width = max(len(c.variable) for c in missing)
    lines = [
        "credentials not set in the environment are kept here (read them from these files; "
        "commands run from this folder use them):"
    ]
    lines += [f"  {c.variable:<{width}}  {credential_path(env_settings, c)}" for c in missing]
    return "\n".join(lines)


# -- URLs ------------------------------------------------------------------------------------


def redact_url(url: str) -> str:
    """``url`` with any password replaced by ``***`` (``redis://:***@127.0.0.1:6399/0``)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "(unparseable URL)"
    if parts.password is None:
        return url
    userinfo, _, hostport = parts.netloc.rpartition("@")
    user = userinfo.split(":", 1)[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{hostport}"))
