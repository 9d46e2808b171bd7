"""The embedded Redis-compatible server: starts, persists with AOF, reaps crash leftovers."""

from __future__ import annotations

import stat
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
        client = redis.Redis.from_url(first.url)
        client.ping()
        first.stop()
        client.close()
        first.start()
        assert first.port == port
        with pytest.raises(EmbeddedServerError, match="already in use"):
            EmbeddedRedis(tmp_path / "b", port=port).start()


def _modes(root: Path) -> dict[str, int]:
    return {
        str(path.relative_to(root)): stat.S_IMODE(path.stat().st_mode)
        for path in [root, *root.rglob("*")]
    }


def test_only_its_owner_can_read_what_it_keeps(tmp_path: Path) -> None:
    """Data directory and sub-directories 0700; AOF, log, pidfile, state and password 0600."""
    data = tmp_path / "data"
    with EmbeddedRedis(data, port=0) as server:
        client = redis.Redis.from_url(server.url)
        client.set("k", "v")
        client.execute_command("BGREWRITEAOF")
        time.sleep(0.5)
        client.close()
        modes = _modes(data)
        names = set(modes)
        assert {"valkey.log", "valkey.pid", "embedded.json", "redis_password"} <= names
        assert any(name.startswith("appendonlydir/") for name in names)
    for name, mode in modes.items():
        is_dir = (data / name).is_dir()
        assert mode == (0o700 if is_dir else 0o600), (name, oct(mode))


def test_modes_left_open_by_an_earlier_run_are_tightened(tmp_path: Path) -> None:
    """A data folder an earlier release left world-readable is made owner-only at start."""
    data = tmp_path / "data"
    (data / "appendonlydir").mkdir(parents=True)
    for path in (data, data / "appendonlydir"):
        path.chmod(0o755)
    (data / "valkey.log").write_text("old\n")
    (data / "valkey.log").chmod(0o644)
    with EmbeddedRedis(data, port=0):
        assert stat.S_IMODE(data.stat().st_mode) == 0o700
        assert stat.S_IMODE((data / "appendonlydir").stat().st_mode) == 0o700
        assert stat.S_IMODE((data / "valkey.log").stat().st_mode) == 0o600


def test_it_requires_a_password_that_every_local_client_finds(tmp_path: Path) -> None:
    """Without the password the server answers nothing; its URL, running_url and the kept
    password file all carry it, and a restart reuses it."""
    with EmbeddedRedis(tmp_path, port=0) as server:
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(port=server.port).ping()
        password = (tmp_path / "redis_password").read_text().strip()
        assert len(password) >= 32
        assert server.url == f"redis://:{password}@127.0.0.1:{server.port}/0"
        assert running_url(tmp_path) == server.url
        assert redis.Redis.from_url(server.url).ping()
    with EmbeddedRedis(tmp_path, port=0) as again:
        assert again.password == password


def test_the_password_is_on_no_command_line_and_in_no_log(tmp_path: Path) -> None:
    """`ps` shows every user a process's arguments: the password goes in on stdin."""
    with EmbeddedRedis(tmp_path, port=0) as server:
        assert server._process is not None
        cmdline = Path(f"/proc/{server._process.pid}/cmdline").read_bytes()
        assert server.password and server.password.encode() not in cmdline
        redis.Redis.from_url(server.url).ping()
    assert server.password not in (tmp_path / "valkey.log").read_text()
