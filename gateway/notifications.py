"""``GET /notifications``: the notification log over HTTP, newest first, keyset-paginated.

An operator route: it shows recipients and errors of every user, so it needs
``ADMIN_API_KEY`` (see :mod:`gateway.access`).

Query parameters, all optional: ``job_id``, ``user_id``, ``status`` (pending|delivered|failed|rate_limited|suppressed),
``channel`` (websocket|webhook|email|sms), ``limit`` (1-500, default 50) and ``cursor`` (the
``next_cursor`` of the previous page). A bad parameter is a 400 naming it.

The cursor is the last row's ``(created_at, id)``: a keyset, so a page costs the same deep in
the log as at its head, and rows written meanwhile never shift pages. Ids are strings in
JSON, because the 63-bit keys exceed JavaScript's safe integers.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
from datetime import datetime
from typing import Any

from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from bookgen_events.channel import CHANNELS
from bookgen_events.db import STATUSES, Notification, init_db, job_entity_id

PARAMS = {"job_id", "user_id", "status", "channel", "limit", "cursor"}
DEFAULT_LIMIT, MAX_LIMIT = 50, 500


class BadRequest(ValueError):
    """A query parameter is invalid; the message says which and why."""


def encode_cursor(created_at: datetime, row_id: int) -> str:
    raw = json.dumps([created_at.isoformat(), row_id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, int]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created, row_id = json.loads(raw)
        if not isinstance(row_id, int) or isinstance(row_id, bool):
            raise TypeError("id is not an integer")
        if not 0 <= row_id < 2**63:  # row ids are 63-bit hashes; SQL cannot bind more
            raise ValueError("id is out of range")
        return datetime.fromisoformat(created), row_id
    except (binascii.Error, ValueError, TypeError, RecursionError) as exc:
        raise BadRequest(f"cursor: not a cursor from this endpoint ({exc})") from None


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() + "Z" if value is not None else None


def as_json(row: Notification) -> dict[str, Any]:
    return {
        "id": str(row.id),
        "notification_type": row.notification_type,
        "delivery_method": row.delivery_method,
        "recipient": row.recipient,
        "subject": row.subject,
        "message": row.message,
        "status": row.status,
        "delivery_attempts": row.delivery_attempts,
        "error_message": row.error_message,
        "related_entity_type": row.related_entity_type,
        "related_entity_id": row.related_entity_id,
        "notification_metadata": row.notification_metadata,
        "is_rate_limited": bool(row.is_rate_limited),
        "created_at": _iso(row.created_at),
        "delivered_at": _iso(row.delivered_at),
    }


def build_query(params: dict[str, str]) -> tuple[Any, int]:
    """The SELECT for validated ``params`` (fetching one extra row to know if more follow)."""
    unknown = sorted(set(params) - PARAMS)
    if unknown:
        raise BadRequest(f"unknown parameter(s): {', '.join(unknown)}")
    t = Notification.__table__.c  # type: ignore[attr-defined]
    query = select(Notification)
    job_id = params.get("job_id")
    if job_id is not None:
        if not 1 <= len(job_id) <= 200:
            raise BadRequest("job_id: must be 1 to 200 characters")
        entity = job_entity_id(job_id)
        exact = t.notification_metadata["job_id"].as_string() == job_id
        if entity is not None:  # the indexed path, then exact ("0123" is not "123")
            query = query.where(
                t.related_entity_type == "job", t.related_entity_id == entity, exact
            )
        else:
            query = query.where(t.related_entity_type == "job", exact)
    if (user_id := params.get("user_id")) is not None:
        if not 1 <= len(user_id) <= 200:
            raise BadRequest("user_id: must be 1 to 200 characters")
        query = query.where(t.notification_metadata["user_id"].as_string() == user_id)
    if (status := params.get("status")) is not None:
        if status not in STATUSES:
            raise BadRequest(f"status: must be one of {', '.join(STATUSES)}")
        query = query.where(t.status == status)
    if (channel := params.get("channel")) is not None:
        if channel not in CHANNELS:
            raise BadRequest(f"channel: must be one of {', '.join(CHANNELS)}")
        query = query.where(t.delivery_method == channel)
    try:
        limit = int(params.get("limit", DEFAULT_LIMIT))
    except ValueError:
        raise BadRequest("limit: must be an integer") from None
    if not 1 <= limit <= MAX_LIMIT:
        raise BadRequest(f"limit: must be between 1 and {MAX_LIMIT}")
    if (cursor := params.get("cursor")) is not None:
        created, row_id = decode_cursor(cursor)
        query = query.where(
            or_(t.created_at < created, and_(t.created_at == created, t.id < row_id))
        )
    query = query.order_by(t.created_at.desc(), t.id.desc()).limit(limit + 1)
    return query, limit


def fetch_page(url: str, params: dict[str, str]) -> dict[str, Any]:
    """Run the query on ``url``'s cached engine (blocking: called in a worker thread)."""
    query, limit = build_query(params)
    engine = init_db(url)
    with Session(engine) as session:
        rows = list(session.scalars(query))
    more = len(rows) > limit
    rows = rows[:limit]
    last = rows[-1] if rows else None
    next_cursor = (
        encode_cursor(last.created_at, last.id)
        if more and last and last.created_at and last.id is not None
        else None
    )
    return {"notifications": [as_json(r) for r in rows], "next_cursor": next_cursor}


async def list_notifications(request: Request) -> Response:
    """``GET /notifications?job_id=&user_id=&status=&channel=&limit=&cursor=``."""
    params = dict(request.query_params)
    if len(params) != len(request.query_params.multi_items()):
        return JSONResponse({"error": "each parameter may be given once"}, status_code=400)
    settings = request.app.state.settings
    try:
        page = await asyncio.to_thread(fetch_page, settings.database_url, params)
    except BadRequest as exc:
        return JSONResponse({"error": str(exc)}, status_code=400)
    return JSONResponse(page)
