"""--format lines: one example per line, split by example, ended by the end token, the
loss counted over real targets only, and reported per token and per example."""

from __future__ import annotations

import json
import random
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
from conftest import TINY_FLAGS, assert_clean_failure, run_cli

from mlxgpt.data import LinesDataset, lines_text, split_examples
from mlxgpt.tokenizers import CharTokenizer
from mlxgpt.training import loss_fn
from mlxgpt.ui.metrics import read_metrics
from test_model import tiny_model


def made_up_words(n: int = 600, seed: int = 3) -> list[str]:
    """Short 'words' from a tiny grammar: consonant-vowel syllables, 1 to 4 of them."""
    rng = random.Random(seed)
    return ["".join(rng.choice("bdgkmnprst") + rng.choice("aeiou") for _ in range(rng.randint(1, 4)))
            for _ in range(n)]


@pytest.fixture
def words_file(tmp_path) -> Path:
    path = tmp_path / "words.txt"
    path.write_text("\n".join(made_up_words()) + "\n\n   \n", encoding="utf-8")  # blank lines are not examples
    return path


def test_the_split_is_by_example_and_duplicates_never_straddle_it():
    examples = made_up_words(400) + ["dupe"] * 5 + ["twin"] * 3
    train, val = split_examples("\n".join(examples))
    assert sorted(train + val) == sorted(examples)  # every example once, blank lines dropped
    assert not set(train) & set(val)
    assert train.count("dupe") in (0, 5) and train.count("twin") in (0, 3)
    assert 0.8 < len(set(train)) / len(set(examples)) < 0.95
    assert split_examples("\n".join(reversed(examples))) == (
        [e for e in reversed(examples) if e in set(train)], [e for e in reversed(examples) if e in set(val)])


def test_rows_start_and_end_with_the_end_token_and_pad_without_targets():
    text = lines_text(made_up_words(50))
    tokenizer = CharTokenizer.train(text)
    data = LinesDataset.from_text(text, tokenizer, block_size=10)
    end = tokenizer.end_id
    assert end == tokenizer.encode("\n")[0]
    train, _ = split_examples(text)
    for row, example in zip(data.train, train):
        ids = tokenizer.encode(example)
        assert list(row[: len(ids) + 2]) == [end, *ids, end]
        assert (row[len(ids) + 2:] == -1).all()
    x, y = data.sampler("train", 4, 10, seed=0).batch(0)
    assert x.shape == y.shape == (1, 4, 10) and (x >= 0).all()  # inputs are real tokens
    assert ((y == end).sum(axis=-1) == 1).all()  # exactly one end target per row


def test_the_loss_counts_only_positions_with_a_target():
    model = tiny_model()
    rng = np.random.default_rng(0)
    x = rng.integers(0, 20, size=(3, 16))
    y = rng.integers(0, 20, size=(3, 16))
    y[0, 5:] = -1
    y[2, 9:] = -1
    logits = np.array(model(mx.array(x)), dtype=np.float64)
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    mask = y >= 0
    expected = -np.take_along_axis(logp, np.maximum(y, 0)[..., None], -1)[..., 0][mask].mean()
    assert loss_fn(model, mx.array(x), mx.array(y)).item() == pytest.approx(expected, rel=1e-5)


def test_a_lines_model_learns_and_reports_loss_per_example(words_file, tmp_path):
    out = tmp_path / "run"
    result = run_cli("train.py", "--data", words_file, "--format", "lines", "--out", out, *TINY_FLAGS,
                     "--max-iters", "200", "--eval-interval", "100", "--eval-iters", "4", "--lr", "3e-3")
    assert result.returncode == 0, result.stderr
    evals = [r for r in read_metrics(out / "metrics.jsonl") if r["event"] == "eval"]
    # learned more than letter frequencies: below the entropy of the characters (and ends) on their own
    counts = np.unique(list(lines_text(made_up_words())), return_counts=True)[1]
    unigram = -(counts / counts.sum() * np.log(counts / counts.sum())).sum()
    assert evals[-1]["val_loss"] < unigram - 0.5 < evals[0]["val_loss"]
    assert all(e["val_loss_per_example"] > e["val_loss"] for e in evals)
    assert "per example" in result.stdout
    config = json.loads((out / "best" / "config.json").read_text())
    assert config["data_format"] == "lines"
    scored = run_cli("-m", "mlxgpt", "eval", "--checkpoint", out)
    assert scored.returncode == 0, scored.stderr
    assert "nats/example" in scored.stdout and "examples" in scored.stdout
    resumed = run_cli("train.py", "--resume", "--out", out, "--max-iters", "210", "--no-ui")
    assert resumed.returncode == 0, resumed.stderr
    assert_clean_failure(run_cli("train.py", "--resume", "--out", out, "--format", "text", "--no-ui"),
                         "cannot change --format")


@pytest.mark.parametrize("content, fragments", [
    ("\n \n\t\n", ["at least 2 different non-empty lines"]),
    ("same\nsame\nsame\n", ["at least 2 different non-empty lines", "got 1"]),
    ("short\n" + "x" * 40 + "\nmid\n" * 20, ["40 tokens long", "--block-size 41", "(now 16)"]),
])
def test_bad_lines_files_are_one_line(tmp_path, content, fragments):
    data = tmp_path / "lines.txt"
    data.write_text(content, encoding="utf-8")
    result = run_cli("train.py", "--data", data, "--format", "lines", "--out", tmp_path / "run", *TINY_FLAGS)
    assert_clean_failure(result, *fragments)
    assert not (tmp_path / "run").exists()
