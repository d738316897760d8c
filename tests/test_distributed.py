"""Data-parallel training with mlx.launch on localhost (ring backend over TCP)."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mlxgpt.distributed import find_launcher

ROOT = Path(__file__).resolve().parent.parent
LAUNCHER = find_launcher()
pytestmark = pytest.mark.skipif(LAUNCHER is None, reason="mlx.launch (MLX's launcher) is not installed for this Python")


def launcher_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), **(extra or {})}


def free_port() -> int:
    # the ring backend listens on port and port+1; take one the OS says is free and hope its neighbour is too
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def words_text(n_words: int = 4000) -> str:
    rng = np.random.default_rng(7)
    vocab = ["the", "king", "queen", "speaks", "and", "runs", "to", "a", "castle", "night", "day"]
    lines = [" ".join(rng.choice(vocab, size=8)) for _ in range(n_words // 8)]
    return "\n".join(lines) + "\n"


TINY = ["--n-layer", "2", "--n-head", "2", "--n-embd", "32", "--block-size", "16", "--batch-size", "4",
        "--max-iters", "6", "--eval-interval", "3", "--eval-iters", "1", "--sample-tokens", "0", "--no-ui"]


def launch(args, env_extra=None, timeout=600):
    env = launcher_env(env_extra)
    return subprocess.run([sys.executable, "-m", "mlxgpt", "launch", "-n", "2", "--port", str(free_port()), "--", *args],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def test_two_ranks_identical_and_equal_to_union_batch(tmp_path):
    result = subprocess.run([LAUNCHER, "-n", "2", "--starting-port", str(free_port()), sys.executable,
                             str(ROOT / "tests" / "distributed_worker.py"), str(tmp_path)],
                            env=launcher_env(), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    rank0, rank1, single = (np.load(tmp_path / f"{name}.npz") for name in ("rank-0", "rank-1", "single"))
    assert set(rank0) == set(rank1) == set(single)
    for name in rank0:
        np.testing.assert_array_equal(rank0[name], rank1[name])  # all ranks hold the same parameters
        np.testing.assert_allclose(rank0[name], single[name], rtol=1e-4, atol=1e-5)  # = one process, union batch


def test_launch_cli_trains_and_only_rank0_writes(tmp_path):
    data = tmp_path / "text.txt"
    data.write_text(words_text())
    out = tmp_path / "run"
    result = launch(["--data", str(data), "--out", str(out), *TINY])
    assert result.returncode == 0, result.stdout + result.stderr
    events = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    started = [e for e in events if e["event"] == "run_started"]
    assert len(started) == 1 and started[0]["world_size"] == 2  # one writer, not two
    assert started[0]["tokens_per_iter"] == 2 * 4 * 16
    evals = [e for e in events if e["event"] == "eval"]
    assert [e["iter"] for e in evals] == [0, 3, 6]
    assert evals[-1]["val_loss"] < evals[0]["val_loss"]
    assert "effective batch 2 ranks" in result.stdout
    assert (out / "latest" / "model.safetensors").exists()
    state = json.loads((out / "latest" / "state.json").read_text())
    assert state["world_size"] == 2

    # resuming with a different number of ranks is refused with a clear line
    single = subprocess.run([sys.executable, "train.py", "--resume", "--out", str(out), "--no-ui"],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert single.returncode != 0
    assert "2 rank(s)" in single.stderr and "Traceback" not in single.stderr
    assert len(single.stderr.strip().splitlines()) == 1


def test_a_crashing_rank_fails_the_run(tmp_path):
    data = tmp_path / "text.txt"
    data.write_text(words_text())
    hook = tmp_path / "hook"
    hook.mkdir()
    # rank 1 dies on start-up; mlx.launch itself would still exit 0
    (hook / "sitecustomize.py").write_text("import os\nif os.environ.get('MLX_RANK') == '1':\n    os._exit(3)\n")
    result = launch(["--data", str(data), "--out", str(tmp_path / "run"), *TINY],
                    env_extra={"PYTHONPATH": f"{hook}{os.pathsep}{ROOT}"})
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: distributed run failed") and "rank 1" in last
    assert "Traceback" not in result.stderr

