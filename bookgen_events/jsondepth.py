"""How deep JSON may nest: deeper input is refused at the edge (``emit``, ``POST /events``,
the registries), before a recursive parser or serializer anywhere down the line meets it."""

from __future__ import annotations

from typing import Any

#: The outermost object or array is level 1.
MAX_JSON_DEPTH = 32


def too_deep(value: Any, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether JSON-like ``value`` nests containers more than ``limit`` levels (no recursion)."""
    stack = [(value, 1)] if isinstance(value, (dict, list, tuple)) else []
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item
        if depth > limit:
            return True
        stack.extend((c, depth + 1) for c in children if isinstance(c, (dict, list, tuple)))
    return False
