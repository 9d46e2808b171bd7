"""The notifications table as tests read it, and throwaway PostgreSQL databases."""

from __future__ import annotations

import uuid
from typing import Any

import psycopg
from sqlalchemy import select
from sqlalchemy.orm import Session

from bookgen_events.db import Notification, get_engine

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


class PgDatabase:
    """A throwaway PostgreSQL database on 127.0.0.1:5432 that can be made unavailable and
    available again. ``create`` raises ``psycopg.OperationalError`` when no server answers."""

    def __init__(self, prefix: str = "bookgen_test") -> None:
        self.name = f"{prefix}_{uuid.uuid4().hex[:10]}"
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{self.name}"

    def _admin(self, *statements: str) -> None:
        with psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=3) as conn:
            for statement in statements:
                conn.execute(statement)  # type: ignore[arg-type]

    def create(self) -> PgDatabase:
        self._admin(f'CREATE DATABASE "{self.name}"')
        return self

    def drop(self) -> None:
        self._admin(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')

    def block(self) -> None:
        """Refuse new connections and end every open one, as an outage would."""
        self._admin(
            f'ALTER DATABASE "{self.name}" ALLOW_CONNECTIONS false',
            f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{self.name}'",
        )

    def unblock(self) -> None:
        self._admin(f'ALTER DATABASE "{self.name}" ALLOW_CONNECTIONS true')


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
