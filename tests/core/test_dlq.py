"""`bookgen-events dlq` as an operator uses it: whole ids, known channels, honest --id and --purge."""

from __future__ import annotations

import asyncio
import json
import os
import pty

import pytest

from bookgen_events import EventBus

from ..support.processes import CLI, cli, one_line

LONG_URL = "https://hooks.example.com/" + "a-rather-long-path/" * 4


async def letter(bus: EventBus, event_id: str, channel: str = "webhook") -> str:
    """Add one dead letter for ``event_id``; returns its dlq id."""
    return await bus.redis.xadd(
        bus.names.dlq(channel),
        {"channel": channel, "entry_id": "1-0", "reason": "HTTP 500 " + "x" * 150,
         "attempts": "4", "event_id": event_id, "recipient": LONG_URL, "event": "{}",
         "poison": "0", "at_ms": "1"},
    )  # fmt: skip


def test_channels_without_dead_letters_are_refused(cli_env: dict[str, str]) -> None:
    """websocket (or a typo) has no DLQ: one line listing the channels that do."""
    for channel in ("websocket", "webhooks"):
        result = cli(cli_env, "dlq", channel)
        assert result.returncode != 0
        line = one_line(result.stderr)
        assert channel in line and "webhook, email, sms, logger" in line


@pytest.mark.parametrize("columns", ["80", "200"])
async def test_listing_keeps_ids_whole(
    cli_env: dict[str, str], bus: EventBus, columns: str
) -> None:
    """At 80 columns (or piped) as on a wide terminal, dlq and event ids are printed whole,
    on one line, so they can be copied into --id; long recipients and reasons are not cut."""
    event_id = "0190f5c2-7a4b-7c3d-9e8f-0123456789ab"
    dlq_id = await letter(bus, event_id)
    result = cli({**cli_env, "COLUMNS": columns}, "dlq", "webhook")
    assert result.returncode == 0, result.stderr
    (line,) = [line for line in result.stdout.splitlines() if event_id in line]
    assert dlq_id in line and "…" not in line
    assert "…" not in result.stdout
    if columns == "80":
        assert LONG_URL in result.stdout


async def test_unknown_ids_are_named_and_nothing_is_done(
    cli_env: dict[str, str], bus: EventBus
) -> None:
    """--id values that match no dead letter are listed, the command exits non-zero and
    neither redrives nor purges the ones that do match."""
    dlq_id = await letter(bus, "known-event")
    for action in (["--redrive"], ["--purge", "--yes"], []):
        result = cli(
            cli_env, "dlq", "webhook", *action, "--id", dlq_id, "--id", "nope-1", "--id", "9-9"
        )
        assert result.returncode != 0, action
        line = one_line(result.stderr)
        assert "nope-1" in line and "9-9" in line and dlq_id not in line
    assert await bus.redis.xlen(bus.names.dlq("webhook")) == 1
    assert await bus.redis.zcard(bus.names.scheduled("webhook")) == 0


async def test_purge_by_event_id(cli_env: dict[str, str], bus: EventBus) -> None:
    """--id takes an event id as well as a dlq id, for --purge too."""
    await letter(bus, "event-a")
    kept = await letter(bus, "event-b")
    result = cli(cli_env, "dlq", "webhook", "--purge", "--yes", "--id", "event-a")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"purged": 1}
    assert [i for i, _ in await bus.range(stream=bus.names.dlq("webhook"))] == [kept]


def test_purge_help_says_what_purge_does(cli_env: dict[str, str]) -> None:
    """The help promises what happens: a question on a terminal, --yes elsewhere."""
    text = " ".join(cli(cli_env, "dlq", "--help").stdout.split())
    assert "asks first on a terminal; elsewhere needs --yes" in text


async def test_purge_without_a_terminal_needs_yes(cli_env: dict[str, str], bus: EventBus) -> None:
    """Piped, --purge without --yes refuses and deletes nothing."""
    await letter(bus, "e")
    result = cli(cli_env, "dlq", "webhook", "--purge", input_="y\n")
    assert result.returncode != 0 and "--yes" in one_line(result.stderr)
    assert await bus.redis.xlen(bus.names.dlq("webhook")) == 1


async def _purge_on_a_terminal(env: dict[str, str], answer: bytes) -> tuple[int, str, str]:
    main, terminal = pty.openpty()
    proc = await asyncio.create_subprocess_exec(
        *CLI, "dlq", "webhook", "--purge", env=env, stdin=terminal,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    os.close(terminal)
    try:
        assert proc.stderr is not None and proc.stdout is not None
        prompt = await asyncio.wait_for(proc.stderr.readuntil(b"[y/N] "), 20)
        os.write(main, answer)
        out, err = await asyncio.wait_for(proc.communicate(), 20)
    finally:
        os.close(main)
        if proc.returncode is None:
            proc.kill()
    return proc.returncode or 0, prompt.decode() + err.decode(), out.decode()


async def test_purge_asks_on_a_terminal(cli_env: dict[str, str], bus: EventBus) -> None:
    """On a terminal --purge asks, naming how many letters it would delete: "n" keeps them,
    "y" deletes them."""
    await letter(bus, "e1")
    await letter(bus, "e2")
    code, err, out = await _purge_on_a_terminal(cli_env, b"n\n")
    assert code != 0 and "Delete 2 dead letters of webhook" in err and "nothing deleted" in err
    assert await bus.redis.xlen(bus.names.dlq("webhook")) == 2
    code, err, out = await _purge_on_a_terminal(cli_env, b"y\n")
    assert code == 0, err
    assert json.loads(out) == {"purged": 2}
    assert await bus.redis.xlen(bus.names.dlq("webhook")) == 0
