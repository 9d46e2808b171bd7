"""Run every benchmark in ``bench/`` and write one markdown table to ``bench/RESULTS.md``.

    python -m bench.run_all            # short settings (a few minutes on 2 cores)
    python -m bench.run_all --full     # each benchmark's own defaults (100,000 events in load)
    python -m bench.run_all --only emit --only load

Each benchmark runs as its own subprocess (``python -m bench.NAME ... --json``) and measures
its raw baseline side by side in the same run, so every figure is reported as a ratio to a
baseline taken on the same machine at the same time. ``bench.gateway`` has no ``--json``;
its results are read from the JSON it prints on stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "RESULTS.md"

#: name -> (short arguments, full arguments); --json is added for all but gateway.
BENCHES: dict[str, tuple[list[str], list[str]]] = {
    "emit": (["--events", "5000", "--rounds", "2"], []),
    "consume": (["--events", "50000", "--rounds", "3"], []),  # shorter runs measure start-up
    "webhook": (["--events", "2000"], []),
    "email": (["--messages", "1000"], []),
    "logger": (["--events", "2000"], []),
    # The scenario (1,000 clients on one job): fewer clients measure something else.
    "gateway": (["--clients", "1000", "--duration", "6"], []),
    "load": (
        ["--events", "5000", "--maxlen-events", "20000", "--rate", "400"],
        ["--maxlen-events", "50000"],
    ),
}
_GOAL = re.compile(r"^\s*(<=|>=)\s*([0-9.]+)\s*x\s*$")


@dataclass
class Row:
    bench: str
    measure: str
    ours: Any
    baseline: Any
    goal: str
    met: bool | None = None

    @property
    def ratio(self) -> float | None:
        if isinstance(self.ours, (int, float)) and isinstance(self.baseline, (int, float)):
            return self.ours / self.baseline if self.baseline else None
        return None

    def judge(self) -> bool | None:
        """Met when the goal is a ratio bound (``>= 0.9x``) or given explicitly; else None."""
        if self.met is not None:
            return self.met
        match = _GOAL.match(self.goal)
        if match is None or self.ratio is None:
            return None
        bound = float(match.group(2))
        return self.ratio >= bound if match.group(1) == ">=" else self.ratio <= bound


def _num(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:,.1f}" if abs(value) < 100 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def from_rows(bench: str, rows: list[dict[str, Any]]) -> list[Row]:
    """Rows of the ``--json`` benches: raw/baseline, goal as a number (>=) or text."""
    out = []
    for r in rows:
        goal = r.get("goal")
        text = f">= {goal:g}x" if isinstance(goal, (int, float)) else (goal or "report")
        baseline = r.get("baseline", r.get("raw"))
        out.append(Row(bench, r["measure"], r["ours"], baseline, text, r.get("met")))
    return out


def from_gateway(stderr: str) -> list[Row]:
    """bench.gateway prints its results as indented JSON on stderr: take the last object."""
    start = stderr.rfind("\n{\n")
    results = json.loads(stderr[start + 1 :] if start >= 0 else stderr[stderr.index("{") :])
    ours, peer = results.get("bookgen-events"), results.get("broadcaster") or {}
    if not ours:
        raise ValueError("no bookgen-events results in bench.gateway's output")

    def get(r: dict[str, Any], phase: str | None, key: str) -> Any:
        return (r.get(phase, {}) if phase else r).get(key)

    mem = ours.get("mem_per_idle_conn_kb")
    return [
        Row("gateway", "p99 ms at the steady rate vs encode/broadcaster",
            get(ours, "steady", "p99_ms"), get(peer, "steady", "p99_ms"), "<= 0.5x"),
        Row("gateway", "saturation deliveries/s vs encode/broadcaster",
            get(ours, "saturate", "delivered_per_s"), get(peer, "saturate", "delivered_per_s"),
            ">= 1.5x"),
        Row("gateway", "memory per idle connection, KB (goal: <= 30 KB)", mem,
            peer.get("mem_per_idle_conn_kb"), "<= 30 KB",
            None if mem is None else mem <= 30),
    ]  # fmt: skip


def run_one(name: str, full: bool, timeout: float) -> tuple[list[Row], str | None, float]:
    """Run ``bench.NAME``; returns its rows, an error text (or None) and seconds taken."""
    short, long = BENCHES[name]
    argv = [sys.executable, "-m", f"bench.{name}", *(long if full else short)]
    if name != "gateway":
        argv.append("--json")
    print(f"== {' '.join(argv[1:])}", file=sys.stderr, flush=True)
    # bench.webhook and bench.gateway start helpers as scripts (python bench/X.py), which puts
    # bench/ first on sys.path, where bench/email.py shadows the stdlib email package;
    env = dict(os.environ)
    started = time.monotonic()
    try:
        done = subprocess.run(
            argv, cwd=HERE.parent, capture_output=True, text=True, timeout=timeout, env=env
        )
    except subprocess.TimeoutExpired:
        return [], f"timed out after {timeout:.0f} s", time.monotonic() - started
    took = time.monotonic() - started
    tail = "\n".join((done.stderr or "").strip().splitlines()[-5:])
    if done.returncode != 0:
        return [], f"exit {done.returncode}: {tail}", took
    try:
        if name == "gateway":
            return from_gateway(done.stderr), None, took
        payload = json.loads(done.stdout.strip().splitlines()[-1])
        return from_rows(name, payload["rows"]), None, took
    except (ValueError, KeyError, IndexError) as exc:
        return [], f"unreadable output ({exc!r}): {tail}", took


def table(rows: list[Row]) -> str:
    lines = [
        "| benchmark | measure | ours | baseline | ratio | goal | met? |",
        "| --- | --- | ---: | ---: | ---: | --- | :---: |",
    ]
    for r in rows:
        met = r.judge()
        ratio = f"{r.ratio:.2f}x" if r.ratio is not None else "—"
        verdict = "—" if met is None else ("yes" if met else "**no**")
        lines.append(
            f"| {r.bench} | {r.measure} | {_num(r.ours)} | {_num(r.baseline)} | {ratio} "
            f"| {r.goal} | {verdict} |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="each benchmark's full defaults")
    parser.add_argument("--only", action="append", choices=sorted(BENCHES), help="repeatable")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds per benchmark")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()

    rows: list[Row] = []
    errors: dict[str, str] = {}
    took: dict[str, float] = {}
    for name in args.only or list(BENCHES):
        got, error, took[name] = run_one(name, args.full, args.timeout)
        rows += got
        if error:
            errors[name] = error
            print(f"   {name} failed: {error}", file=sys.stderr)

    mode = "full" if args.full else "short"
    header = [
        "# Benchmark results",
        "",
        f"Written by `python -m bench.run_all{' --full' if args.full else ''}` on "
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC ({mode} settings): {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, Redis at "
        f"`{os.environ.get('REDIS_URL', 'redis://127.0.0.1:6379/0')}`. Every baseline was "
        "measured in the same run on the same machine; `—` means no raw baseline applies "
        "(latencies, memory) or the goal is only to report the figure.",
        "",
        "Seconds per benchmark: " + ", ".join(f"{k} {v:.0f}" for k, v in took.items()) + ".",
        "",
    ]
    body = table(rows)
    footer = []
    if errors:
        footer = ["", "## Did not run to completion", ""]
        footer += [
            f"- `{name}`: {error.splitlines()[0] if error else ''}"
            for name, error in errors.items()
        ]
    text = "\n".join([*header, body, *footer]) + "\n"
    args.output.write_text(text)
    print(text)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
