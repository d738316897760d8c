"""kill -9 at random moments: during steps, evaluations and checkpoint writes, many times in
a row. After every kill the run directory loads, generates, and --resume continues it.

The number of kills is a parameter: a few in CI, many as a stress test:

    MLXGPT_CRASH_KILLS=200 python -m pytest -q tests/test_crash.py
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from conftest import REPO_ROOT, TINY_FLAGS, run_cli

from mlxgpt.checkpoint import find_checkpoint, load, load_training_state
from mlxgpt.generate import generate
from mlxgpt.ui.metrics import read_metrics

KILLS = int(os.environ.get("MLXGPT_CRASH_KILLS", "9"))
# a run that never ends by itself: every process is killed in the middle of its work
RUN_FLAGS = [*TINY_FLAGS, "--max-iters", "1000000", "--eval-interval", "3", "--eval-iters", "2",
             "--log-interval", "1"]


def _saving(out: Path) -> bool:
    """A checkpoint is being written: its temporary directory exists."""
    try:
        return any(".tmp-" in name for name in os.listdir(out))
    except FileNotFoundError:
        return False


def _metrics_size(out: Path) -> int:
    try:
        return (out / "metrics.jsonl").stat().st_size
    except FileNotFoundError:
        return 0


def _kill_at_some_moment(process: subprocess.Popen, out: Path, how: str, rng: random.Random) -> bool:
    """SIGKILL the training process: after a random delay, inside a checkpoint write, or
    right after it wrote an event (mid-step or mid-evaluation). True if a save was under way."""
    deadline = time.monotonic() + 60
    if how == "random":
        time.sleep(rng.uniform(0.05, 1.0))
    else:
        size = _metrics_size(out)
        while process.poll() is None and time.monotonic() < deadline:
            if _saving(out) if how == "save" else _metrics_size(out) != size:
                break
            time.sleep(0.0002)
    mid_save = _saving(out)
    process.send_signal(signal.SIGKILL)
    process.wait()
    return mid_save


def _check_the_run_survived(out: Path) -> None:
    model, tokenizer = load(out)
    text = "".join(piece.text for piece in generate(model, tokenizer, "The", 8, temperature=0))
    assert len(tokenizer.encode(text)) == 8
    read_metrics(out / "metrics.jsonl")  # a torn last line is tolerated


def test_kill_9_at_random_moments_never_breaks_a_run(tmp_path, text_file):
    out = tmp_path / "run"
    rng = random.Random(int(os.environ.get("MLXGPT_CRASH_SEED", "16")))
    kinds, mid_save = ["random", "save", "event"], 0
    for kill in range(KILLS):
        resume = find_checkpoint(out, "latest") is not None
        args = ["--resume", "--out", out, "--no-ui"] if resume else ["--data", text_file, "--out", out, *RUN_FLAGS]
        process = subprocess.Popen([sys.executable, str(REPO_ROOT / "train.py"), *map(str, args)], cwd=REPO_ROOT,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        mid_save += _kill_at_some_moment(process, out, kinds[kill % len(kinds)], rng)
        errors = process.stderr.read()
        assert "Traceback" not in errors, errors
        if find_checkpoint(out, "latest") is not None:
            _check_the_run_survived(out)
    print(f"{KILLS} kills, {mid_save} of them during a checkpoint write")
    latest = find_checkpoint(out, "latest")
    end = (load_training_state(latest)[0]["iter"] if latest else 0) + 4
    result = run_cli("train.py", "--resume", "--out", out, "--no-ui", "--max-iters", end) if latest \
        else run_cli("train.py", "--data", text_file, "--out", out, *RUN_FLAGS, "--max-iters", end)
    assert result.returncode == 0, result.stderr
    assert [r for r in read_metrics(out / "metrics.jsonl") if r["event"] == "run_finished"][-1]["iter"] == end
    result = run_cli("generate.py", "--checkpoint", out, "--prompt", "The", "--max-new-tokens", "20", "--seed", "1")
    assert result.returncode == 0 and result.stdout.startswith("The"), result.stderr
