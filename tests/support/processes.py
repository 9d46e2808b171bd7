"""``bookgen-events`` as real processes: the command line, one environment builder, spawning."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path


def _command() -> list[str]:
    script = Path(sys.executable).with_name("bookgen-events")
    return [str(script)] if script.exists() else [sys.executable, "-m", "bookgen_events.app.cli"]


#: The installed ``bookgen-events`` command (the module if the script is missing).
CLI: list[str] = _command()


def process_env(*, inherit: Iterable[str] | None = None, **variables: str) -> dict[str, str]:
    """The environment of a ``bookgen-events`` process a test starts.

    By default this process's environment without any ``BOOKGEN*`` or ``REDIS*`` variable;
    with ``inherit``, only the variables it names. JSON logs, unbuffered output, then
    ``variables`` on top.
    """
    if inherit is None:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("BOOKGEN", "REDIS"))}
    else:
        names = set(inherit)
        env = {k: v for k, v in os.environ.items() if k in names}
    env.update(LOG_FORMAT="json", PYTHONUNBUFFERED="1")
    env.update(variables)
    return env


def cli(
    env: dict[str, str], *args: str, input_: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run one ``bookgen-events`` command to its end; its output captured as text."""
    return subprocess.run(
        [*CLI, *args], env=env, input=input_, capture_output=True, text=True, timeout=60
    )


def one_line(stderr: str) -> str:
    """The single line a refusing command printed, asserting it is one line, no traceback."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


def spawn(
    args: Sequence[str],
    env: dict[str, str],
    log: Path,
    *,
    cwd: Path | None = None,
    new_session: bool = False,
) -> subprocess.Popen[bytes]:
    """Start ``bookgen-events *args`` in the background, its stdout and stderr appended to
    ``log``; ``new_session`` puts it in its own process group (to signal it with children)."""
    with log.open("ab") as out:
        return subprocess.Popen(
            [*CLI, *args],
            env=env,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=new_session,
        )
