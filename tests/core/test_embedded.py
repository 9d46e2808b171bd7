"""The embedded Redis-compatible server: starts, persists with AOF, reaps crash leftovers."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

from bookgen_events.embedded import EmbeddedRedis, _alive, _free_port, running_url
from bookgen_events.errors import EmbeddedServerError

ROOT = Path(__file__).resolve().parents[2]


def test_starts_a_real_server_with_aof(tmp_path: Path) -> None:
    """The server answers real stream commands (XAUTOCLAIM, XINFO lag) with AOF on."""
    with EmbeddedRedis(tmp_path, port=0) as server:
        client = redis.Redis.from_url(server.url, decode_responses=True)
        assert client.config_get("appendonly")["appendonly"] == "yes"
        client.xadd("s", {"a": "1"})
        client.xgroup_create("s", "g", id="0")
        assert client.xinfo_groups("s")[0]["lag"] == 1
        assert client.xautoclaim("s", "g", "c", 0)[0] == "0-0"
        assert running_url(tmp_path) == server.url
        client.close()
    assert running_url(tmp_path) is None


def test_server_left_by_a_crash_is_reaped_and_data_survives(tmp_path: Path) -> None:
    """A server whose owner died is stopped on the next start; its AOF data is kept."""
    out = subprocess.run(
        [sys.executable, "-m", "tests.core.embedded_owner", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    stale_state = (tmp_path / "embedded.json").read_text()
    stale_pid = int(stale_state.split('"pid": ')[1].split(",")[0])
    assert _alive(stale_pid), out.stderr
    assert running_url(tmp_path) is None  # its owner is dead: not offered to other commands
    time.sleep(1.2)  # appendfsync everysec
    with EmbeddedRedis(tmp_path, port=0) as server:
        assert not _alive(stale_pid)
        client = redis.Redis.from_url(server.url, decode_responses=True)
        assert client.get("survivor") == "yes"
        client.close()


def test_a_live_owner_is_not_robbed(tmp_path: Path) -> None:
    """A second owner refuses to take over a server another live process runs."""
    with EmbeddedRedis(tmp_path, port=0) as server:
        state = (tmp_path / "embedded.json").read_text()
        fake = state.replace(f'"owner_pid": {__import__("os").getpid()}', '"owner_pid": 1')
        (tmp_path / "embedded.json").write_text(fake)
        with pytest.raises(EmbeddedServerError, match="owns the embedded server"):
            EmbeddedRedis(tmp_path, port=0).start()
        (tmp_path / "embedded.json").write_text(state)
        assert server.url


def test_restart_keeps_its_port_and_a_taken_port_is_an_error(tmp_path: Path) -> None:
    """Restarted after a client was connected (TIME_WAIT), it listens on the same port; an
    explicitly requested port that is really taken is refused, never silently changed."""
    port = _free_port()
    with EmbeddedRedis(tmp_path / "a", port=port) as first:
        client = redis.Redis(port=port)
        client.ping()
        first.stop()
        client.close()
        first.start()
        assert first.port == port
        with pytest.raises(EmbeddedServerError, match="already in use"):
            EmbeddedRedis(tmp_path / "b", port=port).start()
