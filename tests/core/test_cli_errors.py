"""A command that cannot do its job says why in one line and exits non-zero, never a traceback."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from ..support.ports import free_port
from ..support.processes import cli, one_line

DOWN = "redis://:hunter2-secret@127.0.0.1:1/0"  # port 1: nothing listens, refused at once
JWT_SECRET = "a-test-secret-that-is-long-enough-for-hs256"
SAYS = "cannot reach Redis at redis://:***@127.0.0.1:1/0 (REDIS_URL): connection refused"


@pytest.mark.parametrize(
    "args",
    [
        ["status"],
        ["status", "--json"],
        ["emit", "completion", "--job-id", "1"],
        ["tail", "--no-follow"],
        ["tail"],
        ["replay", "webhook", "--from", "0"],
        ["dlq", "webhook"],
        ["dlq", "webhook", "--purge", "--yes"],
        ["demo", "--steps", "1", "--interval", "0"],
        ["rebuild-log"],
        ["consume", "webhook"],
        ["consume", "logger", "--from", "0"],
        ["gateway", "--port", "0"],
        ["up", "--port", "0"],
    ],
    ids=lambda args: " ".join(args),
)
def test_unreachable_redis_is_one_line_naming_it(
    cli_env: dict[str, str], tmp_path: Path, args: list[str]
) -> None:
    """Each command names Redis, where it was looked for (password masked) and the variable,
    then exits non-zero; long-running ones (consume, gateway, up) do so at once."""
    env = {**cli_env, "REDIS_URL": DOWN, "EMBEDDED_DATA_DIR": str(tmp_path / "data")}
    env["WEBSOCKET_JWT_SECRET"] = JWT_SECRET  # `gateway` refuses to start without one
    result = cli(env, *args)
    assert result.returncode != 0
    assert one_line(result.stderr) == f"bookgen-events {args[0]}: {SAYS}"
    assert "hunter2" not in result.stderr + result.stdout


def test_no_embedded_server_names_where_it_looked(cli_env: dict[str, str], tmp_path: Path) -> None:
    """Without REDIS_URL and no embedded server, the one line says how to get one."""
    env = {k: v for k, v in cli_env.items() if k != "REDIS_URL"}
    env["EMBEDDED_DATA_DIR"] = str(tmp_path / "none")
    result = cli(env, "tail")
    assert result.returncode != 0
    assert "REDIS_URL" in one_line(result.stderr)


@pytest.mark.parametrize(
    ("database_url", "shown", "reason"),
    [
        (
            "postgresql+psycopg://bookgen:pg-secret@127.0.0.1:1/bookgen",
            "postgresql+psycopg://bookgen:***@127.0.0.1:1/bookgen",
            "connection refused",
        ),
        ("sqlite:////nonexistent-dir/x/bookgen.db", "sqlite:////nonexistent-dir/x/bookgen.db",
         "unable to open database file"),
    ],
)  # fmt: skip
def test_rebuild_log_with_an_unreachable_database(
    cli_env: dict[str, str], database_url: str, shown: str, reason: str
) -> None:
    """rebuild-log names the database (password masked) and DATABASE_URL, even with nothing
    to write, instead of reporting a rebuild that did not happen."""
    result = cli({**cli_env, "DATABASE_URL": database_url}, "rebuild-log")
    assert result.returncode != 0 and result.stdout == ""
    line = one_line(result.stderr)
    said = f"cannot reach the database at {shown} (DATABASE_URL): {reason}"
    assert line == f"bookgen-events rebuild-log: {said}"


@pytest.mark.parametrize("command", ["gateway", "up"])
def test_a_taken_port_is_one_line_at_once(
    cli_env: dict[str, str], tmp_path: Path, command: str
) -> None:
    """Listening on a port something else holds fails in one line, before anything starts."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        env = {k: v for k, v in cli_env.items() if k != "REDIS_URL"}
        env.update(EMBEDDED_DATA_DIR=str(tmp_path / "data"), WEBSOCKET_JWT_SECRET=JWT_SECRET)
        if command == "gateway":
            env["REDIS_URL"] = cli_env["REDIS_URL"]
        result = cli(env, command, "--port", str(port))
    assert result.returncode != 0
    assert one_line(result.stderr) == (
        f"bookgen-events {command}: cannot listen on 127.0.0.1:{port}: address already in use"
    )
    assert not (tmp_path / "data" / "embedded.json").exists()  # no server was left behind


@pytest.mark.parametrize("command", ["gateway", "up"])
@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.10", "example.com"])
def test_auth_off_refuses_a_non_loopback_host(
    cli_env: dict[str, str], tmp_path: Path, command: str, host: str
) -> None:
    """WEBSOCKET_AUTH=none is for loopback only: any other host is refused at start."""
    env = {**cli_env, "WEBSOCKET_AUTH": "none", "EMBEDDED_DATA_DIR": str(tmp_path / "d")}
    result = cli(env, command, "--host", host, "--port", str(free_port()))
    assert result.returncode != 0
    line = one_line(result.stderr)
    assert "WEBSOCKET_AUTH" in line and host in line
    assert not (tmp_path / "d").exists()  # refused before anything was made


@pytest.mark.parametrize("command", ["gateway", "up"])
def test_a_short_jwt_secret_is_refused_before_anything_starts(
    cli_env: dict[str, str], tmp_path: Path, command: str
) -> None:
    """A WEBSOCKET_JWT_SECRET under 32 bytes stops the start in one line, before the embedded
    server or any worker runs."""
    env = {k: v for k, v in cli_env.items() if k != "REDIS_URL"}
    env.update(WEBSOCKET_JWT_SECRET="short", EMBEDDED_DATA_DIR=str(tmp_path / "d"))
    if command == "gateway":
        env["REDIS_URL"] = cli_env["REDIS_URL"]
    result = cli(env, command, "--port", str(free_port()))
    assert result.returncode != 0
    assert "WEBSOCKET_JWT_SECRET" in one_line(result.stderr)
    assert not (tmp_path / "d" / "embedded.json").exists()
