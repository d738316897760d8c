"""What the experiments share: running a command as a user would, reading back what a run reported."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import time
from pathlib import Path


def read_events(path: Path) -> dict[str, dict]:
    """The last event of each kind in a run's metrics.jsonl."""
    events: dict[str, dict] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            event = json.loads(line)
            events[event["event"]] = event
    return events


def run_command(command: list[str], what: str, env: dict[str, str] | None = None) -> None:
    """Print the command as a user would type it, run it, and turn a failure into one line."""
    print("$ " + shlex.join(["python", *command[1:]]), flush=True)
    run = subprocess.run(command, capture_output=True, text=True, env=env)
    if run.returncode != 0:
        raise RuntimeError(f"{what}: {run.stderr.strip()}")


def run_timed(command: list[str], what: str, env: dict[str, str] | None = None,
              cwd: Path | str | None = None) -> tuple[list[tuple[float, str]], float]:
    """Run a command as run_command does, noting when each line of its output appeared.

    Returns ([(seconds since the process started, line), ...], seconds until it exited), its
    stdout and stderr together in the order they came. A Python child runs unbuffered
    (PYTHONUNBUFFERED=1), else its lines would arrive in blocks when the pipe's buffer fills.
    A failure raises RuntimeError with the last line it printed (mlxgpt's one-line error)."""
    print("$ " + shlex.join(["python", *command[1:]]), flush=True)
    env = {**(os.environ if env is None else env), "PYTHONUNBUFFERED": "1"}
    started = time.perf_counter()
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, encoding="utf-8",
                          errors="replace", env=env, cwd=cwd) as process:
        lines = [(time.perf_counter() - started, line.rstrip("\n")) for line in process.stdout]
    seconds = time.perf_counter() - started
    if process.returncode != 0:
        last = next((line for _, line in reversed(lines) if line.strip()), f"exit status {process.returncode}")
        raise RuntimeError(f"{what}: {last.strip()}")
    return lines, seconds


def write_results(directory: Path, name: str, table: str, results: dict) -> Path:
    """An experiment's markdown table as NAME.md and its numbers as NAME.json in `directory`,
    each written atomically (a run stopped half-way leaves the previous results whole)."""
    from mlxgpt.files import write_atomic

    directory.mkdir(parents=True, exist_ok=True)
    write_atomic(directory / f"{name}.md", table + "\n")
    write_atomic(directory / f"{name}.json", json.dumps(results, indent=2))
    return directory / f"{name}.json"
