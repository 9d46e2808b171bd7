"""The ``bookgen-events`` command as a user runs it: a real subprocess on a real Redis."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from bookgen_events import EventBus

from ..helpers import progress

COMMANDS = ["up", "gateway", "consume", "emit", "tail", "status", "token", "rebuild-log"]


def cli(
    env: dict[str, str], *args: str, input_: str | None = None
) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("bookgen-events") or sys.executable
    argv = [exe, *args] if exe != sys.executable else [exe, "-m", "bookgen_events.cli", *args]
    return subprocess.run(argv, env=env, input=input_, capture_output=True, text=True, timeout=60)


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
    assert await bus.redis.exists(bus.names.events) == 0


async def test_status_reports_groups_lag_pending_and_dead_letters(
    cli_env: dict[str, str], bus: EventBus
) -> None:
    """``status --json`` shows stream length and ids, per-group lag/pending, DLQ sizes."""
    ids = await bus.emit_many([progress(str(i)) for i in range(5)])
    await bus.ensure_group("webhook")
    await bus.read_group("webhook", "c1", count=2, block_ms=None)
    await bus.redis.xadd(bus.names.dlq("webhook"), {"reason": "x"})
    result = cli(cli_env, "status", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    events = report["events"]
    assert (events["length"], events["first_id"], events["last_id"]) == (5, ids[0], ids[-1])
    (group,) = events["groups"]
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
