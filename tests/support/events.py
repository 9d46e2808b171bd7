"""Event builders: the raw dicts tests emit."""

from __future__ import annotations

from typing import Any


def progress(job_id: str, url: str = "https://hooks.example.com/in", **extra: object) -> dict:
    """A valid progress event for ``job_id`` aimed at webhook ``url``."""
    return {
        "type": "progress_update",
        "job_id": job_id,
        "data": {"progress": 10.0, "phase": "writing"},
        "webhook_url": url,
        **extra,
    }


def live_progress(job_id: str | None, pct: float = 50.0, **extra: Any) -> dict[str, Any]:
    """A progress event at ``pct`` percent for WebSocket clients only (no channel target)."""
    return {
        "type": "progress_update",
        "job_id": job_id,
        "data": {"progress": pct, "phase": f"phase {pct}"},
        **extra,
    }
