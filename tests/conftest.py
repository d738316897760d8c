"""Shared fixtures: tiny model shapes, generated texts, the real CLI in a subprocess,
and one small trained run that the generation and CLI tests share.

Everything is tiny and reuses the same shapes (2 layers, 2 heads, 32 embd,
block 16, batch 8), so MLX compiles each training graph once (its CPU kernels
are cached on disk after the first run) and the suite stays fast on 2 cores.
No test reads outside text: every text is generated here.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

# MLX multiplies float32 with TF32 by default on CUDA and M5-class GPUs and reads this switch once, at its
# first float32 matmul: true float32 for the whole suite (the parity tests compare with float32 PyTorch).
os.environ.setdefault("MLX_ENABLE_TF32", "0")

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:  # import the checkout's mlxgpt even when it is not installed
    sys.path.insert(0, str(REPO_ROOT))

# One set of shapes for every tiny model in the suite.
TINY_MODEL = dict(n_layer=2, n_head=2, n_embd=32, block_size=16)
TINY_BATCH = 8
# The CPU default preset (cpu-speedrun) turns on rotary positions and RMSNorm: the tiny runs keep GPT-2's
# learned positions and LayerNorm, which the tests of positions, parameters and parity were written for.
TINY_FLAGS = ["--n-layer", "2", "--n-head", "2", "--n-embd", "32", "--block-size", "16", "--batch-size", "8",
              "--no-ui", "--sample-tokens", "0", "--pos", "learned", "--norm", "layernorm"]

_NOUNS = "cat dog bird king queen fox man maid".split()
_VERBS = "sees likes finds follows loves calls".split()
_ADJECTIVES = "old young red small proud quiet".split()


def grammar_text(sentences: int = 300, seed: int = 1) -> str:
    """Sentences from a small English-like grammar: 'The old fox calls the maid.'

    Structured enough that a tiny model learns it in a few hundred steps,
    varied enough that the validation split is not a copy of the training split."""
    rng = random.Random(seed)

    def noun_phrase() -> str:
        adjective = rng.choice(_ADJECTIVES) + " " if rng.random() < 0.4 else ""
        return f"the {adjective}{rng.choice(_NOUNS)}"

    lines = [f"{noun_phrase().capitalize()} {rng.choice(_VERBS)} {noun_phrase()}.\n" for _ in range(sentences)]
    return "".join(lines)


def run_cli(*args: str | os.PathLike, cwd: Path | str = REPO_ROOT, env: dict[str, str] | None = None,
            timeout: float = 300, input: str | None = None) -> subprocess.CompletedProcess:
    """Run `python ARGS...` (e.g. "train.py", "--data", ...) the way a user would, with `input` on stdin."""
    full_env = {**os.environ, "PYTHONIOENCODING": "utf-8", **(env or {})}
    return subprocess.run([sys.executable, *map(str, args)], cwd=cwd, env=full_env, capture_output=True,
                          text=True, encoding="utf-8", errors="replace", timeout=timeout, input=input)


def assert_clean_failure(result: subprocess.CompletedProcess, *fragments: str) -> str:
    """Exit status != 0, exactly one line on stderr, no traceback; returns that line."""
    assert result.returncode != 0, f"expected a failure, got exit 0\nstdout: {result.stdout}\nstderr: {result.stderr}"
    assert "Traceback" not in result.stderr + result.stdout, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and result.stderr.endswith("\n"), f"stderr is not one line: {result.stderr!r}"
    line = lines[0]
    for fragment in fragments:
        assert fragment in line, f"{fragment!r} not in {line!r}"
    return line


@pytest.fixture(scope="session")
def text_file(tmp_path_factory) -> Path:
    """A generated grammar text of ~8.6k characters (7.8k train / 0.9k val tokens)."""
    path = tmp_path_factory.mktemp("data") / "grammar.txt"
    path.write_text(grammar_text(), encoding="utf-8")
    return path


def _train_run(tmp_path_factory, text_file: Path, name: str, *extra: str) -> Path:
    out = tmp_path_factory.mktemp(name) / "run"
    result = run_cli("train.py", "--data", text_file, "--out", out, *TINY_FLAGS, "--max-iters", "200",
                     "--eval-interval", "100", "--eval-iters", "4", "--log-interval", "50",
                     "--warmup-iters", "20", "--lr", "3e-3", "--min-lr", "3e-4", *extra)
    assert result.returncode == 0, result.stderr
    assert (out / "best" / "model.safetensors").is_file() and (out / "latest" / "state.json").is_file()
    return out


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, text_file) -> Path:
    """A run directory trained through the real CLI (learned positions, 200 steps, ~2 s).

    Shared and read-only: tests that damage a checkpoint copy it first."""
    return _train_run(tmp_path_factory, text_file, "trained")


@pytest.fixture(scope="session")
def trained_run_sinusoidal(tmp_path_factory, text_file) -> Path:
    """The same, with fixed sinusoidal positions."""
    return _train_run(tmp_path_factory, text_file, "trained-sin", "--pos-embedding", "sinusoidal")
