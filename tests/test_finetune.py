"""train.py --init-from: fine-tuning a trained model on new text (GPT-1's recipe)."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY_FLAGS, assert_clean_failure, run_cli
from mlx.utils import tree_flatten

from mlxgpt.checkpoint import load, read_config
from mlxgpt.ui.metrics import read_metrics

FT_FLAGS = ["--no-ui", "--sample-tokens", "0", "--eval-iters", "2", "--batch-size", "8"]


def other_text(path: Path, extra: str = "") -> Path:
    rng = random.Random(9)
    words = "the old fox sees a quiet maid".split()
    path.write_text("".join(" ".join(rng.choice(words) for _ in range(8)) + extra + ".\n" for _ in range(150)))
    return path


def weights(run: Path) -> dict[str, np.ndarray]:
    model, _ = load(run)
    return {name: np.array(w) for name, w in tree_flatten(model.parameters())}


def test_fine_tuning_starts_from_the_parents_weights_with_a_fresh_optimizer(trained_run, tmp_path):
    data, out = other_text(tmp_path / "new.txt"), tmp_path / "ft"
    result = run_cli("train.py", "--init-from", trained_run, "--data", data, "--out", out, *FT_FLAGS,
                     "--max-iters", "60", "--eval-interval", "20")
    assert result.returncode == 0, result.stderr
    assert f"fine-tuning {trained_run / 'best'}" in result.stdout
    config = read_config(out / "best")
    assert config["init_from"]["checkpoint"] == str((trained_run / "best").resolve())
    assert config["train"]["lr"] == 1e-4 and config["train"]["early_stop_evals"] == 4  # the fine-tuning defaults
    assert config["model"] == read_config(trained_run / "best")["model"]
    evals = [r for r in read_metrics(out / "metrics.jsonl") if r["event"] == "eval"]
    assert evals[0]["iter"] == 0 and evals[-1]["val_loss"] < evals[0]["val_loss"]
    # the parent already knows this grammar's letters: it starts far below a fresh model's ln(vocab)
    assert evals[0]["val_loss"] < 0.8 * np.log(config["model"]["vocab_size"])
    steps = [r for r in read_metrics(out / "metrics.jsonl") if r["event"] == "step"]
    assert steps[0]["iter"] == 1 and steps[0]["lr"] < 1e-4  # a fresh schedule, warming up


def test_early_stopping_ends_the_run_when_val_stops_improving(trained_run, tmp_path):
    data, out = other_text(tmp_path / "new.txt"), tmp_path / "ft"
    result = run_cli("train.py", "--init-from", trained_run, "--data", data, "--out", out, *FT_FLAGS,
                     "--lr", "1e-12", "--min-lr", "0", "--max-iters", "200", "--eval-interval", "5",
                     "--early-stop-evals", "2")  # weights that cannot move: the val loss never improves
    assert result.returncode == 0, result.stderr
    finished = [r for r in read_metrics(out / "metrics.jsonl") if r["event"] == "run_finished"][-1]
    assert finished["reason"] == "early stop" and finished["iter"] == 10


def test_new_characters_are_refused_unless_the_vocabulary_may_grow(trained_run, tmp_path):
    data = other_text(tmp_path / "new.txt", extra=" Zj")
    out = tmp_path / "ft"
    assert_clean_failure(run_cli("train.py", "--init-from", trained_run, "--data", data, "--out", out, *FT_FLAGS),
                         "'Z'", "'j'", "--extend-vocab")
    assert not out.exists()
    result = run_cli("train.py", "--init-from", trained_run, "--data", data, "--out", out, *FT_FLAGS,
                     "--extend-vocab", "--max-iters", "10")
    assert result.returncode == 0, result.stderr
    old = json.loads((trained_run / "best" / "char_vocab.json").read_text())["chars"]
    new = json.loads((out / "best" / "char_vocab.json").read_text())["chars"]
    assert new[:len(old)] == old and sorted(new[len(old):]) == ["Z", "j"]  # old ids keep their meaning
    parent, child = weights(trained_run), weights(out)
    assert child["wte.weight"].shape[0] == parent["wte.weight"].shape[0] + 2


def test_frozen_layers_keep_the_parents_weights(trained_run, tmp_path):
    data, out = other_text(tmp_path / "new.txt"), tmp_path / "ft"
    result = run_cli("train.py", "--init-from", trained_run, "--data", data, "--out", out, *FT_FLAGS,
                     "--max-iters", "20", "--freeze-layers", "1", "--lr", "1e-3")
    assert result.returncode == 0, result.stderr
    parent, child = weights(trained_run / "best"), weights(out / "latest")
    for name in parent:
        same = np.array_equal(parent[name], child[name])
        frozen = name.startswith(("wte.", "wpe.", "h.0."))
        assert same == frozen, name


@pytest.mark.parametrize("flags, fragments", [
    (["--n-layer", "3"], ["keeps the parent's model shape", "n_layer"]),
    (["--tokenizer", "sentencepiece"], ["tokenizer"]),
    (["--freeze-layers", "5"], ["--freeze-layers 5", "2 blocks"]),
])
def test_fine_tuning_refuses_what_it_cannot_honour(trained_run, tmp_path, flags, fragments):
    data = other_text(tmp_path / "new.txt")
    result = run_cli("train.py", "--init-from", trained_run, "--data", data, "--out", tmp_path / "ft", *FT_FLAGS,
                     *flags)
    assert_clean_failure(result, *fragments)


def test_init_from_a_directory_that_is_not_a_run(tmp_path):
    (tmp_path / "notes").mkdir()
    result = run_cli("train.py", "--init-from", tmp_path / "notes", "--data", other_text(tmp_path / "new.txt"),
                     "--out", tmp_path / "ft", *FT_FLAGS)
    assert_clean_failure(result, "holds no mlxgpt checkpoint")
    assert not (tmp_path / "ft").exists()
