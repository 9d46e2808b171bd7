"""Fixtures of the channel tests: real SMTP servers, and the logger's databases.

``db_url`` runs a test on SQLite and on PostgreSQL: a throwaway ``bookgen_test_<random>``
database on 127.0.0.1:5432 for the session, dropped afterwards; the PostgreSQL variant
skips only when no server answers there.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from bookgen_events import Settings
from bookgen_events.db import Notification, dispose_engines, get_engine, init_db
from tests.support.database import PgDatabase
from tests.support.smtp import (
    auth_server,
    ca,
    client_tls,
    server_tls,
    smtp_server,
    starttls_server,
)

__all__ = ["auth_server", "ca", "client_tls", "server_tls", "smtp_server", "starttls_server"]


@pytest.fixture(scope="session")
def pg_base() -> Iterator[str | None]:
    """A throwaway PostgreSQL database for the session (SQLAlchemy URL), or None if no server."""
    try:
        database = PgDatabase("bookgen_test").create()
    except psycopg.OperationalError:
        yield None
        return
    try:
        yield database.url
    finally:
        dispose_engines()
        database.drop()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path, pg_base: str | None) -> Iterator[str]:
    """An empty notifications table on SQLite or PostgreSQL."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'log.db'}"
    else:
        if pg_base is None:
            pytest.skip("no PostgreSQL server answers on 127.0.0.1:5432")
        url = pg_base
        engine = get_engine(url)
        Notification.__table__.drop(engine, checkfirst=True)  # type: ignore[attr-defined]
    dispose_engines()
    init_db(url)
    yield url
    dispose_engines()


@pytest.fixture
def log_settings(settings: Settings, db_url: str) -> Settings:
    """The test's settings on ``db_url``, with every channel's rows."""
    return settings.model_copy(update={"database_url": db_url, "email_enabled": True})
