"""The seed's ``notifications`` table, its engine and session, and its idempotent upserts.

Idempotency without a column the seed does not have: ``id`` is not a counter but a key
derived from what a notification *is* — the first 63 bits of BLAKE2b over (event id,
channel, recipient). Every write is then an upsert on the primary key, so a redelivered,
reclaimed or replayed stream entry, a ``rebuild`` over a live table, or two logger replicas
racing on one entry all land on the same row, with no extra unique index to maintain and
no read-before-write. 63 bits keep ids positive in a signed BIGINT; the chance that two of
a hundred million notifications collide is about 1 in 3,700 (birthday bound), and the event
id and stream id are kept in ``notification_metadata`` for audit. On SQLite the column is
``INTEGER PRIMARY KEY`` (the 64-bit rowid itself), exactly as in the seed; on PostgreSQL it
must be ``BIGINT``, since ``INTEGER`` holds only 32 bits.

Times are stored as naive UTC ``TIMESTAMP`` (the seed's type) on both databases.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Engine,
    Index,
    Integer,
    String,
    Text,
    and_,
    case,
    create_engine,
    delete,
    event,
    func,
    or_,
    select,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session, sessionmaker
from sqlmodel import Field, SQLModel

from .settings import get_settings

__all__ = [
    "Notification",
    "SessionLocal",
    "ensure_schema",
    "get_engine",
    "init_db",
    "notification_id",
    "upsert_events",
    "upsert_outcomes",
]

STATUSES = ("pending", "delivered", "failed", "rate_limited", "suppressed")
INT32_MAX = 2**31 - 1


class Notification(SQLModel, table=True):
    """One notification: an event delivered (or to be) on one channel to one recipient."""

    __tablename__ = "notifications"
    __table_args__ = (
        # The seed's two queries and GET /notifications: by job (newest first), by status.
        Index("ix_notifications_related", "related_entity_type", "related_entity_id", "created_at"),
        Index("ix_notifications_status", "status", "created_at"),
        Index("ix_notifications_created_at", "created_at"),
    )

    id: int | None = Field(
        default=None,
        sa_column=Column(
            BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=False
        ),
    )
    notification_type: str | None = Field(default=None, sa_column=Column(String(50)))
    delivery_method: str | None = Field(default=None, sa_column=Column(String(50)))
    recipient: str | None = Field(default=None, sa_column=Column(String(255)))
    subject: str | None = Field(default=None, sa_column=Column(String(255)))
    message: str | None = Field(default=None, sa_column=Column(Text))
    status: str | None = Field(default=None, sa_column=Column(String(50)))
    delivery_attempts: int | None = Field(default=None, sa_column=Column(Integer))
    error_message: str | None = Field(default=None, sa_column=Column(Text))
    related_entity_type: str | None = Field(default=None, sa_column=Column(String(50)))
    related_entity_id: int | None = Field(default=None, sa_column=Column(Integer))
    notification_metadata: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    is_rate_limited: bool | None = Field(default=None, sa_column=Column(Boolean))
    created_at: datetime | None = Field(default=None, sa_column=Column(DateTime))
    delivered_at: datetime | None = Field(default=None, sa_column=Column(DateTime))


TABLE = Notification.__table__  # type: ignore[attr-defined]
EVENT_COLUMNS = (
    "notification_type",
    "delivery_method",
    "recipient",
    "subject",
    "message",
    "related_entity_type",
    "related_entity_id",
    "notification_metadata",
    "created_at",
)


def notification_id(event_id: str, channel: str, recipient: str) -> int:
    """The row's primary key: 63 bits of BLAKE2b over (event id, channel, recipient)."""
    key = f"{event_id}\x1f{channel}\x1f{recipient}".encode()
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "big") >> 1


def job_entity_id(job_id: str | None) -> int | None:
    """The job id as the seed's INTEGER ``related_entity_id``, when it is one."""
    if job_id and job_id.isascii() and job_id.isdigit():
        value = int(job_id)
        return value if value <= INT32_MAX else None
    return None


# -- engine and sessions ---------------------------------------------------------------------

_engines: dict[str, Engine] = {}
_ready: set[int] = set()
_lock = threading.Lock()


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets the gateway read while the logger writes; FULL sync keeps "acked => on disk".
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


def get_engine(url: str | None = None) -> Engine:
    """The process's engine for ``url`` (default ``DATABASE_URL``), created once and cached."""
    url = url or get_settings().database_url
    with _lock:
        engine = _engines.get(url)
        if engine is None:
            if url.startswith("sqlite"):
                engine = create_engine(url, connect_args={"check_same_thread": False})
                if ":memory:" not in url and url.rstrip("/") != "sqlite:":
                    event.listen(engine, "connect", _sqlite_pragmas)
            else:
                # pre_ping: connections broken by a database restart are replaced, not reused.
                engine = create_engine(url, pool_pre_ping=True)
            _engines[url] = engine
        return engine


def ensure_schema(engine: Engine, *, force: bool = False) -> None:
    """Create the table and its indexes if missing; checked once per engine unless ``force``."""
    if force or id(engine) not in _ready:
        SQLModel.metadata.create_all(engine, tables=[TABLE])
        _ready.add(id(engine))


def init_db(url: str | None = None) -> Engine:
    """The engine for ``url`` (default ``DATABASE_URL``), its table created if missing."""
    engine = get_engine(url)
    ensure_schema(engine)
    return engine


def dispose_engines() -> None:
    """Close every cached engine's connections (tests, and processes that fork)."""
    with _lock:
        for engine in _engines.values():
            engine.dispose()
        _engines.clear()
        _ready.clear()


class _LazySession(Session):
    """A plain SQLAlchemy session (``.query`` as in the seed) bound on first use to DATABASE_URL."""

    def __init__(self, bind: Any = None, **kwargs: Any) -> None:
        super().__init__(bind=bind if bind is not None else init_db(), **kwargs)


#: ``db = SessionLocal(); db.query(Notification)...`` exactly as the seed's examples.
SessionLocal = sessionmaker(class_=_LazySession, autoflush=False, expire_on_commit=False)


# -- upserts ---------------------------------------------------------------------------------


def _insert(conn: Connection) -> Any:
    name = conn.dialect.name
    if name == "postgresql":
        return postgresql.insert(TABLE)
    if name == "sqlite":
        return sqlite.insert(TABLE)
    raise NotImplementedError(f"no upsert for the {name!r} dialect (use SQLite or PostgreSQL)")


def _event_statement(conn: Connection) -> Any:
    """From an event: the event's columns win; delivery state is never touched."""
    stmt = _insert(conn)
    return stmt.on_conflict_do_update(
        index_elements=[TABLE.c.id],
        set_={name: stmt.excluded[name] for name in EVENT_COLUMNS},
    )


def _rank(status: Any) -> Any:
    return case(
        (status == "delivered", 3),
        (status == "failed", 2),
        # Two comparisons, not IN: an expanding IN cannot go through executemany.
        (or_(status == "rate_limited", status == "suppressed"), 1),
        else_=0,
    )


def _outcome_statement(conn: Connection) -> Any:
    """From an outcome: an order-safe merge of the delivery-state columns only.

    The state kept is the greatest outcome by (delivered, attempts, status rank
    failed > rate_limited = suppressed > pending), so any order of the same outcomes, batched or not,
    gives the same row: ``delivered`` is never downgraded, attempts only grow,
    ``delivered_at`` keeps the first delivery, ``is_rate_limited`` records that a limit ever
    held the notification back, and ``error_message`` is that of the kept outcome (none once
    delivered).
    """
    stmt = _insert(conn)
    new, old = stmt.excluded, TABLE.c
    old_attempts = func.coalesce(old.delivery_attempts, 0)
    applies = and_(
        or_(old.status.is_(None), old.status != "delivered"),
        or_(
            new.status == "delivered",
            new.delivery_attempts > old_attempts,
            and_(new.delivery_attempts == old_attempts, _rank(new.status) >= _rank(old.status)),
        ),
    )
    return stmt.on_conflict_do_update(
        index_elements=[TABLE.c.id],
        set_={
            "status": case((applies, new.status), else_=old.status),
            "delivery_attempts": case(
                (new.delivery_attempts > old_attempts, new.delivery_attempts), else_=old_attempts
            ),
            "error_message": case((applies, new.error_message), else_=old.error_message),
            "delivered_at": case(
                (
                    and_(
                        new.delivered_at.is_not(None),
                        or_(old.delivered_at.is_(None), new.delivered_at < old.delivered_at),
                    ),
                    new.delivered_at,
                ),
                else_=old.delivered_at,
            ),
            "is_rate_limited": or_(func.coalesce(old.is_rate_limited, False), new.is_rate_limited),
        },
    )


def upsert_events(conn: Connection, rows: Iterable[dict[str, Any]]) -> int:
    """Upsert rows built from events (duplicates in one call: the last wins)."""
    unique = {row["id"]: row for row in rows}
    if not unique:
        return 0
    # Sorted keys give concurrent writers one lock order (fewer PostgreSQL deadlocks).
    conn.execute(_event_statement(conn), [unique[k] for k in sorted(unique)])
    return len(unique)


def upsert_outcomes(conn: Connection, rows: Sequence[dict[str, Any]]) -> int:
    """Apply outcome rows in order; a key seen twice goes in a later statement (round).

    One statement must not touch a row twice (PostgreSQL refuses it in a multi-row upsert),
    and rounds keep the merge in SQL alone, so a batch gives the same table as one by one.
    """
    rounds: list[dict[int, dict[str, Any]]] = []
    for row in rows:
        for bucket in rounds:
            if row["id"] not in bucket:
                bucket[row["id"]] = row
                break
        else:
            rounds.append({row["id"]: row})
    if rounds:
        stmt = _outcome_statement(conn)
        for bucket in rounds:
            conn.execute(stmt, [bucket[k] for k in sorted(bucket)])
    return len(rows)


#: Rows one LOG_RETENTION statement deletes: a short transaction, never a long lock.
DELETE_BATCH = 500


def delete_rows_before(engine: Engine, cutoff: datetime, *, batch: int = DELETE_BATCH) -> int:
    """Delete ``notifications`` rows created before ``cutoff`` (naive UTC, as stored),
    ``batch`` rows per transaction through the ``created_at`` index; how many went.

    ``DELETE ... WHERE id IN (SELECT id ... LIMIT n)`` reads the same on SQLite and
    PostgreSQL; each batch commits alone, so writers wait one small batch at most.
    """
    table = Notification.__table__  # type: ignore[attr-defined]
    oldest = select(table.c.id).where(table.c.created_at < cutoff).limit(batch)
    total = 0
    while True:
        with engine.begin() as conn:
            gone = conn.execute(delete(table).where(table.c.id.in_(oldest.scalar_subquery())))
        total += gone.rowcount or 0
        if (gone.rowcount or 0) < batch:
            return total


def oldest_row_at(engine: Engine) -> datetime | None:
    """When the oldest ``notifications`` row kept was created (naive UTC), if any."""
    table = Notification.__table__  # type: ignore[attr-defined]
    with engine.connect() as conn:
        return conn.execute(select(func.min(table.c.created_at))).scalar()  # type: ignore[no-any-return]
