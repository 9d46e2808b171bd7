"""Fixtures shared by the logger tests (imported explicitly: this folder has no conftest).

``db_url`` runs a test on SQLite and on PostgreSQL: a throwaway ``bookgen_test_<random>``
database on 127.0.0.1:5432 for the session, dropped afterwards; the PostgreSQL variant
skips only when no server answers there.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from bookgen_events import Settings
from bookgen_events.db import Notification, dispose_engines, get_engine, init_db

PG_SERVER = "postgresql://postgres@127.0.0.1:5432/test"


@pytest.fixture(scope="session")
def pg_base() -> Iterator[str | None]:
    """A throwaway PostgreSQL database for the session (SQLAlchemy URL), or None if no server."""
    name = f"bookgen_test_{uuid.uuid4().hex[:10]}"
    try:
        with psycopg.connect(PG_SERVER, autocommit=True, connect_timeout=3) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.OperationalError:
        yield None
        return
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        dispose_engines()
        with psycopg.connect(PG_SERVER, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


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


def rows(url: str, **where: Any) -> list[Notification]:
    """Every row (optionally filtered by column values), ordered by id."""
    query = select(Notification).order_by(Notification.id)  # type: ignore[arg-type]
    for column, value in where.items():
        query = query.where(getattr(Notification, column) == value)
    with Session(get_engine(url)) as session:
        return list(session.scalars(query))


def snapshot(url: str) -> list[tuple[Any, ...]]:
    """The table's content as comparable tuples."""
    return [
        tuple(getattr(r, c) for c in Notification.__table__.columns.keys())  # type: ignore[attr-defined]
        for r in rows(url)
    ]


async def until(check: Callable[[], Awaitable[bool]], within_s: float = 10.0) -> None:
    """Wait for ``check`` to hold, polling; fails the test after ``within_s`` seconds."""
    deadline = time.monotonic() + within_s
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)
