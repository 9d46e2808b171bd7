"""The Lua scripts load by name from files, their placeholders filled from Python."""

from __future__ import annotations

from importlib.resources import files

import pytest

from bookgen_events import scripts


def test_every_script_file_loads_with_its_placeholders_filled() -> None:
    """Each .lua file in the package loads; only commit.lua and emit_now.lua take values, and
    need them all."""
    names = sorted(p.name[:-4] for p in files(scripts).iterdir() if p.name.endswith(".lua"))
    plain = [
        "cancel_event", "claim_due", "digest_collect", "digest_take", "emit_many",
        "endpoint_failure", "move_due", "rate_limit",
    ]  # fmt: skip
    assert names == sorted([*plain, "commit", "emit_now"])
    for name in plain:
        assert "${" not in scripts.source(name)
    with pytest.raises(KeyError):
        scripts.source("commit")
    with pytest.raises(KeyError):
        scripts.source("emit_now")
    text = scripts.source("commit", outcome_fields="'a', 'b'", outcome_always=1)
    assert "local names = {'a', 'b'}" in text and "${" not in text
    assert "${" not in scripts.source("emit_now", field="event")


def test_a_value_for_no_placeholder_fails_at_load() -> None:
    """A renamed placeholder fails here, not as a Lua error in Redis."""
    with pytest.raises(ValueError, match="no placeholder"):
        scripts.source("emit_many", outcome_fields="'a'")
