"""What mlxgpt promises about the user's files, through the real CLI: it writes only into
its own run directories, --overwrite removes only what it wrote, a diverging run stops
without saving NaN, one process writes a run at a time, a torn metrics.jsonl does not
break --resume, and --resume refuses to switch data, tokenizer or preset silently."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlx.core as mx
from mlx.utils import tree_flatten
import pytest
from conftest import REPO_ROOT, TINY_FLAGS, assert_clean_failure, grammar_text, run_cli

from mlxgpt.checkpoint import load, read_config
from mlxgpt.ui.metrics import read_metrics

SHORT = ["--max-iters", "6", "--eval-interval", "3", "--eval-iters", "2", "--log-interval", "1"]


def train(*args, **kwargs):
    return run_cli(REPO_ROOT / "train.py", *args, **kwargs)


def snapshot(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def strict_json(path: Path):
    def reject(name):
        raise AssertionError(f"{path} holds {name}, which is not JSON")
    return json.loads(path.read_text(encoding="utf-8"), parse_constant=reject)


@pytest.fixture
def run_copy(trained_run, tmp_path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(trained_run, copy)
    return copy


# ---------------------------------------------------------------- ownership


@pytest.mark.parametrize("overwrite", [False, True], ids=["plain", "overwrite"])
def test_a_directory_of_user_files_is_refused_and_left_alone(tmp_path, text_file, overwrite):
    out = tmp_path / "mine"
    (out / "best").mkdir(parents=True)
    (out / "latest").mkdir()
    (out / "todo.md").write_text("buy milk\n")
    (out / "best" / "holiday.png").write_bytes(b"\x89PNG not really")
    (out / "latest" / "letter.txt").write_text("Dear Sir,\n")
    (out / "loss.svg").write_text("<svg>my own drawing</svg>")
    before = snapshot(out)
    result = train("--data", text_file, "--out", out, *TINY_FLAGS, *SHORT, *(["--overwrite"] if overwrite else []))
    assert_clean_failure(result, str(out), "not an mlxgpt run directory", "--out")
    assert snapshot(out) == before


def test_the_default_out_skips_a_directory_that_is_not_a_run(tmp_path, text_file):
    (tmp_path / "out" / "grammar").mkdir(parents=True)
    (tmp_path / "out" / "grammar" / "diary.txt").write_text("private\n")
    result = train("--data", text_file, *TINY_FLAGS, *SHORT, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out" / "grammar" / "diary.txt").read_text() == "private\n"
    assert sorted(p.name for p in (tmp_path / "out" / "grammar").iterdir()) == ["diary.txt"]
    assert (tmp_path / "out" / "grammar-2" / "best" / "model.safetensors").is_file()


def test_overwrite_replaces_the_whole_run_and_nothing_else(run_copy, text_file):
    (run_copy / "my-notes.txt").write_text("lr 3e-3 looked good\n")
    assert read_config(run_copy / "best")["model"]["n_layer"] == 2
    result = train("--data", text_file, "--out", run_copy, "--overwrite", *TINY_FLAGS, "--n-layer", "1",
                   "--max-iters", "2", "--eval-interval", "100", "--eval-iters", "2")
    assert result.returncode == 0, result.stderr
    assert (run_copy / "my-notes.txt").read_text() == "lr 3e-3 looked good\n"
    # the old 2-layer best/ is gone: the new run saved its own at its first evaluation
    for which in ("best", "latest"):
        assert read_config(run_copy / which)["model"]["n_layer"] == 1
    model, _ = load(run_copy)
    assert model.args.n_layer == 1
    assert [r["iter"] for r in read_metrics(run_copy / "metrics.jsonl") if r["event"] == "eval"] == [0, 2]


def test_a_fresh_run_saves_best_at_its_first_evaluation(tmp_path, text_file):
    out = tmp_path / "run"
    result = train("--data", text_file, "--out", out, *TINY_FLAGS, "--max-iters", "1", "--eval-iters", "2")
    assert result.returncode == 0, result.stderr
    saved = [(r["iter"], r["which"]) for r in read_metrics(out / "metrics.jsonl") if r["event"] == "checkpoint"]
    assert saved[:2] == [(0, "best"), (0, "latest")]


# ---------------------------------------------------------------- divergence


def test_a_diverging_run_stops_and_keeps_the_last_finite_checkpoint(tmp_path, text_file):
    out = tmp_path / "run"
    result = train("--data", text_file, "--out", out, *TINY_FLAGS, "--max-iters", "400", "--eval-interval", "2",
                   "--eval-iters", "2", "--lr", "3e5", "--min-lr", "0", "--warmup-iters", "0", "--grad-clip", "0")
    line = assert_clean_failure(result, "diverged", "--lr", "--grad-clip")
    assert "completed" not in result.stdout
    iters = [r["iter"] for r in read_metrics(out / "metrics.jsonl") if r["event"] == "eval"]
    assert iters and iters[-1] < 400, line  # stopped long before the end
    state = strict_json(out / "latest" / "state.json")
    assert state["iter"] == iters[-1] and f"iter {state['iter']}" in line
    strict_json(out / "latest" / "config.json")
    for which in ("best", "latest"):
        model, _ = load(out / which)
        weights = [w for _, w in tree_flatten(model.parameters())]
        assert all(mx.all(mx.isfinite(w)).item() for w in weights), which


# ---------------------------------------------------------------- one writer


def _start_training(out: Path, text_file: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(REPO_ROOT / "train.py"), "--data", str(text_file), "--out", str(out),
                             *TINY_FLAGS, "--max-iters", "100000", "--eval-interval", "50", "--eval-iters", "2",
                             *extra], cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _wait_for(condition, process: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, process.stderr.read()
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_a_second_writer_is_refused_and_a_killed_ones_lock_does_not_block(tmp_path, text_file):
    out = tmp_path / "run"
    first = _start_training(out, text_file)
    try:
        _wait_for(lambda: (out / "latest" / "state.json").is_file(), first)
        for extra in (["--resume"], ["--overwrite"]):
            result = train("--data", text_file, "--out", out, *TINY_FLAGS, *SHORT, *extra)
            assert_clean_failure(result, f"PID {first.pid}", str(out))
        assert first.poll() is None  # the first run never noticed
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    result = train("--resume", "--out", out, "--max-iters", "60", "--no-ui")
    assert result.returncode == 0, result.stderr


def test_resume_repairs_a_torn_metrics_line(run_copy):
    metrics = run_copy / "metrics.jsonl"
    with open(metrics, "a", encoding="utf-8") as f:
        f.write('{"event": "step", "iter": 20')  # a kill in the middle of a write
    for _ in range(2):  # and every resume after it
        result = train("--resume", "--out", run_copy, "--max-iters", "210", "--eval-interval", "5", "--no-ui")
        assert result.returncode == 0, result.stderr
    lines = metrics.read_text(encoding="utf-8").splitlines()
    assert all(isinstance(json.loads(line), dict) for line in lines)
    assert [r["iter"] for r in read_metrics(metrics) if r["event"] == "run_finished"][-1] == 210


# ---------------------------------------------------------------- strict resume


def test_resume_refuses_other_text_with_the_same_characters(run_copy, text_file, tmp_path):
    other = tmp_path / "other.txt"
    other.write_text(grammar_text(seed=7), encoding="utf-8")
    assert set(other.read_text()) == set(text_file.read_text())
    before = snapshot(run_copy)
    result = train("--resume", "--out", run_copy, "--data", other, "--no-ui")
    assert_clean_failure(result, str(other), "SHA-256", "new run")
    assert snapshot(run_copy) == before
    copy = tmp_path / "same-text.txt"  # the same text under another name is fine
    copy.write_bytes(text_file.read_bytes())
    result = train("--resume", "--out", run_copy, "--data", copy, "--max-iters", "201", "--no-ui")
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("flags, fragments", [
    (["--tokenizer", "sentencepiece"], ["cannot change the tokenizer", "char"]),
    (["--preset", "baby"], ["cannot change the preset"]),
    (["--overwrite"], ["--resume", "--overwrite"]),
    (["--n-embd", "48"], ["cannot change the model's shape", "n_embd"]),
])
def test_resume_refuses_flags_it_cannot_honour(run_copy, flags, fragments):
    before = snapshot(run_copy)
    assert_clean_failure(train("--resume", "--out", run_copy, "--no-ui", *flags), *fragments)
    assert snapshot(run_copy) == before


def test_a_sample_prompt_outside_the_vocabulary_is_refused(tmp_path, text_file):
    result = train("--data", text_file, "--out", tmp_path / "run", *TINY_FLAGS, *SHORT, "--sample-prompt", "Zoë:")
    assert_clean_failure(result, "--sample-prompt", "'Z'", "'ë'")
    assert not (tmp_path / "run").exists()
