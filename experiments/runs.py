"""What the experiments share: running a command as a user would, reading back what a run reported."""

from __future__ import annotations

import json
import shlex
import subprocess
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
