"""The Lua scripts, one ``.lua`` file each, loaded by name.

A script may hold ``${name}`` placeholders for values defined once in Python (the outcome
record's field names, for one): :func:`source` fills them at load, so both sides read one
definition and the script still reads as Lua.
"""

from __future__ import annotations

from functools import cache
from importlib.resources import files
from string import Template

from redis.asyncio import Redis
from redis.commands.core import AsyncScript


@cache
def _text(name: str) -> str:
    return files(__name__).joinpath(f"{name}.lua").read_text(encoding="utf-8")


def source(name: str, **values: object) -> str:
    """The script ``name``.lua with its ``${...}`` placeholders filled from ``values``.

    Raises ``KeyError`` for a placeholder without a value and ``ValueError`` for a value
    the script does not use: a renamed placeholder fails at load, not in Redis.
    """
    template = Template(_text(name))
    wanted = set(template.get_identifiers())
    if unused := set(values) - wanted:
        raise ValueError(f"{name}.lua has no placeholder for {sorted(unused)}")
    return template.substitute({k: str(v) for k, v in values.items()})


def register(redis: Redis, name: str, **values: object) -> AsyncScript:
    """Register the script ``name`` with ``redis`` (EVALSHA, loaded on first use)."""
    return redis.register_script(source(name, **values))
