"""The ``bookgen-events`` command as a user runs it: a real subprocess on a real Redis."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bookgen_events import EventBus, load_settings
from bookgen_events.credentials import ensure_credentials
from bookgen_events.replay import before

from ..support.events import progress
from ..support.processes import CLI, cli
from ..support.waits import eventually

COMMANDS = ["up", "gateway", "consume", "emit", "tail", "status", "token", "rebuild-log"]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(cli_env: dict[str, str], command: str) -> None:
    """``--help`` works on each command and describes it."""
    result = cli(cli_env, command, "--help")
    assert result.returncode == 0, result.stderr
    assert "usage: bookgen-events" in result.stdout


async def test_emit_writes_a_valid_event(cli_env: dict[str, str], bus: EventBus) -> None:
    """``emit TYPE --job-id --data`` appends the event and prints its stream id."""
    result = cli(
        cli_env, "emit", "progress_update", "--job-id", "123", "--data", '{"progress": 50, "phase": "x"}',
        "--email", "user@example.com",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    stream_id = json.loads(result.stdout)["stream_id"]
    ((entry_id, fields),) = await bus.range()
    assert entry_id == stream_id
    event = json.loads(fields["event"])
    assert event["job_id"] == "123" and event["emails"] == ["user@example.com"]


async def test_emit_json_from_stdin(cli_env: dict[str, str], bus: EventBus) -> None:
    """``emit --json -`` reads a whole event from standard input."""
    result = cli(cli_env, "emit", "--json", "-", input_=json.dumps(progress("77")))
    assert result.returncode == 0, result.stderr
    assert await bus.length() == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["progress_update", "--data", '{"progress": 101}'], "data.progress"),
        (["completion", "--email", "not-an-address"], "emails.0"),
        (["completion", "--data", "{oops"], "--data is not valid JSON"),
        (["--json", '{"type": "x"}'], "type"),
    ],
)
async def test_emit_rejects_bad_input_and_writes_nothing(
    cli_env: dict[str, str], bus: EventBus, args: list[str], message: str
) -> None:
    """Invalid input exits 2 with a clear message naming the problem; the stream is untouched."""
    result = cli(cli_env, "emit", *args)
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr
    assert await bus.length() == 0


async def test_status_reports_groups_lag_pending_and_dead_letters(
    cli_env: dict[str, str], bus: EventBus
) -> None:
    """``status --json`` shows stream length and ids, per-group lag/pending, DLQ sizes."""
    ids = await bus.emit_many([progress(str(i)) for i in range(5)])
    await bus.ensure_group("webhook", start="0")
    await bus.read_group("webhook", "c1", count=2, block_ms=None)
    await bus.redis.xadd(bus.names.dlq("webhook"), {"reason": "x"})
    result = cli(cli_env, "status", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    events = report["events"]
    assert (events["length"], events["first_id"], events["last_id"]) == (5, ids[0], ids[-1])
    group = next(g for g in events["groups"] if g["group"] == "webhook")
    assert (group["group"], group["lag"], group["pending"]) == ("webhook", 3, 2)
    assert group["oldest_pending_id"] == ids[0] and group["oldest_pending_age_ms"] >= 0
    assert group["consumers"][0]["name"] == "c1"
    assert report["dead_letters"]["webhook"] == 1
    assert report["redis"]["used_memory"] > 0
    human = cli(cli_env, "status")
    assert human.returncode == 0 and "webhook" in human.stdout


async def test_tail_prints_entries_as_json_lines(cli_env: dict[str, str], bus: EventBus) -> None:
    """``tail --from 0 --no-follow`` prints every entry, decoded, one JSON object a line."""
    await bus.emit_many([progress("1"), progress("2")])
    result = cli(cli_env, "tail", "--from", "0", "--no-follow")
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["job_id"] for line in lines] == ["1", "2"]
    assert all("stream_id" in line for line in lines)


def test_bad_setting_fails_naming_the_variable(cli_env: dict[str, str]) -> None:
    """A malformed environment variable stops the command with its name, not a traceback."""
    result = cli({**cli_env, "WEBHOOK_TIMEOUT": "soon"}, "status")
    assert result.returncode == 2
    assert "WEBHOOK_TIMEOUT" in result.stderr and "Traceback" not in result.stderr


def test_no_redis_says_how_to_get_one(cli_env: dict[str, str], tmp_path) -> None:
    """Without REDIS_URL and with no embedded server running, commands say what to do."""
    env = {k: v for k, v in cli_env.items() if k != "REDIS_URL"}
    env["EMBEDDED_DATA_DIR"] = str(tmp_path / "none")
    result = cli(env, "status")
    assert result.returncode == 2
    assert "REDIS_URL" in result.stderr and "bookgen-events up" in result.stderr


# -- token -----------------------------------------------------------------------------------

JWT_SECRET = "a-test-secret-that-is-long-enough-for-hs256"


def test_token_ttl_is_capped(cli_env: dict[str, str]) -> None:
    """--ttl above WEBSOCKET_TOKEN_MAX_TTL (default 7 days) is refused, naming cap and variable;
    the cap itself and a lower cap set in the environment are honoured."""
    env = {**cli_env, "WEBSOCKET_JWT_SECRET": JWT_SECRET}
    week = 7 * 24 * 3600
    assert cli(env, "token", "--job-id", "1", "--ttl", str(week)).returncode == 0
    refused = cli(env, "token", "--job-id", "1", "--ttl", str(week + 1))
    assert refused.returncode != 0 and refused.stdout == ""
    assert "WEBSOCKET_TOKEN_MAX_TTL" in refused.stderr and str(week) in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    lowered = cli(
        {**env, "WEBSOCKET_TOKEN_MAX_TTL": "1h"}, "token", "--job-id", "1", "--ttl", "3601"
    )
    assert lowered.returncode != 0 and "3600" in lowered.stderr


def test_token_refuses_a_short_secret(cli_env: dict[str, str]) -> None:
    """An HS256 secret under 32 bytes signs nothing."""
    result = cli({**cli_env, "WEBSOCKET_JWT_SECRET": "x" * 31}, "token", "--job-id", "1")
    assert result.returncode != 0 and result.stdout == ""
    assert "WEBSOCKET_JWT_SECRET" in result.stderr and "32 bytes" in result.stderr


def test_token_signs_with_the_secret_up_made(cli_env: dict[str, str], tmp_path: Path) -> None:
    """Next to a running `up` (same data directory) `token` works with no secret in the
    environment, and the token verifies with the secret `up` kept; without that file it
    says where it looked."""
    from gateway.auth import verify_token

    data = tmp_path / ".bookgen"
    env = {**cli_env, "EMBEDDED_DATA_DIR": str(data)}
    missing = cli(env, "token", "--job-id", "7")
    assert missing.returncode != 0 and str(data) in missing.stderr
    assert not data.exists()  # token reads what up made; it makes nothing itself
    ensure_credentials(
        load_settings(websocket_jwt_secret=None, embedded_data_dir=str(data), _env_file=None)
    )
    result = cli(env, "token", "--job-id", "7")
    assert result.returncode == 0, result.stderr
    secret = (data / "websocket_jwt_secret").read_text().strip()
    assert verify_token(secret, result.stdout.strip()).job_ids == {"7"}


# -- tail ------------------------------------------------------------------------------------


async def test_tail_count_prints_the_last_entries(cli_env: dict[str, str], bus: EventBus) -> None:
    """``tail --count N`` prints the last N entries (then would follow); with --from, the last
    N after that id."""
    ids = await bus.emit_many([progress(str(i)) for i in range(5)])
    result = cli(cli_env, "tail", "--count", "2", "--no-follow")
    assert result.returncode == 0, result.stderr
    assert [json.loads(line)["stream_id"] for line in result.stdout.splitlines()] == ids[3:]
    after = cli(cli_env, "tail", "--from", ids[0], "--count", "10", "--no-follow")
    assert [json.loads(line)["stream_id"] for line in after.stdout.splitlines()] == ids[1:]


async def test_tail_from_a_time_or_refuses_a_bad_offset(
    cli_env: dict[str, str], bus: EventBus
) -> None:
    """``tail --from`` takes an ISO time (entries from then on); a malformed one is one line."""
    ids = await bus.emit_many([progress("1"), progress("2")])
    moment = datetime.fromtimestamp(int(ids[0].split("-")[0]) / 1000, UTC).isoformat()
    result = cli(cli_env, "tail", "--from", moment, "--no-follow")
    assert [json.loads(line)["stream_id"] for line in result.stdout.splitlines()] == ids
    bad = cli(cli_env, "tail", "--from", "yesterday")
    assert bad.returncode != 0 and "neither a stream id" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1


async def test_tail_count_then_follows(cli_env: dict[str, str], bus: EventBus) -> None:
    """After the last N entries, ``tail --count`` follows: a new event is printed too."""
    ids = await bus.emit_many([progress("old-1"), progress("old-2")])
    proc = await asyncio.create_subprocess_exec(
        *CLI, "tail", "--count", "1", env=cli_env, stdout=asyncio.subprocess.PIPE
    )
    assert proc.stdout is not None
    try:
        first = await asyncio.wait_for(proc.stdout.readline(), 20)
        assert json.loads(first)["stream_id"] == ids[1]
        new = await bus.emit(progress("new"))
        assert json.loads(await asyncio.wait_for(proc.stdout.readline(), 20))["stream_id"] == new
    finally:
        proc.terminate()
        await proc.wait()


# -- consume --from --------------------------------------------------------------------------


async def test_consume_from_backfills_on_purpose(
    cli_env: dict[str, str], bus: EventBus, tmp_path: Path
) -> None:
    """``consume logger --from ID`` sets the group to read from that event on (inclusive), says
    so in one line per stream, then projects those events and not the older ones."""
    ids = await bus.emit_many([{**progress(str(i)), "webhook_url": None} for i in range(3)])
    event_ids = [json.loads(f["event"])["id"] for _, f in await bus.range()]
    proc = await asyncio.create_subprocess_exec(
        *CLI, "consume", "logger", "--from", ids[1], env=cli_env, stderr=asyncio.subprocess.PIPE
    )
    assert proc.stderr is not None
    try:
        first = (await asyncio.wait_for(proc.stderr.readline(), 20)).decode()
        second = (await asyncio.wait_for(proc.stderr.readline(), 20)).decode()
        assert first.startswith("bookgen-events consume logger: ")
        assert f"group logger on {bus.names.events}" in first
        assert f"reads after {before(ids[1])}" in first
        assert f"group logger on {bus.names.deliveries}" in second
        db = tmp_path / "bookgen.db"

        def logged() -> set[str]:
            if not db.exists():
                return set()
            with sqlite3.connect(db) as conn:
                try:
                    rows = conn.execute(
                        "SELECT notification_metadata FROM notifications"
                    ).fetchall()
                except sqlite3.OperationalError:
                    return set()
            return {json.loads(meta)["event_id"] for (meta,) in rows}

        assert await eventually(lambda: logged() >= set(event_ids[1:]), within=20, what="backfill")
        assert event_ids[0] not in logged()
    finally:
        proc.terminate()
        await proc.wait()


# -- rebuild-log -----------------------------------------------------------------------------


async def test_rebuild_log_reports_the_rows_it_wrote(
    cli_env: dict[str, str], bus: EventBus, tmp_path: Path
) -> None:
    """An event and two outcomes of its webhook delivery make two rows (websocket, webhook):
    rebuild-log reports those two, as the table holds, not one per entry."""
    url = "https://hooks.example.com/in"
    (stream_id,) = await bus.emit_many([progress("7", url)])
    ((_, fields),) = await bus.range()
    event_id = json.loads(fields["event"])["id"]
    for attempt, status in ((1, "failed"), (2, "delivered")):
        await bus.redis.xadd(
            bus.names.deliveries,
            {"event_id": event_id, "entry_id": stream_id, "channel": "webhook",
             "recipient": url, "status": status, "attempt": str(attempt),
             "final": "1" if status == "delivered" else "0", "type": "progress_update",
             "job_id": "7", "duration_ms": "1.0", "at_ms": "1700000000000"},
        )  # fmt: skip
    result = cli(cli_env, "rebuild-log")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert (report["events"], report["outcomes"], report["poison"]) == (1, 2, 0)
    with sqlite3.connect(tmp_path / "bookgen.db") as conn:
        (rows,) = conn.execute("SELECT COUNT(*) FROM notifications").fetchone()
    assert report["rows"] == rows == 2
