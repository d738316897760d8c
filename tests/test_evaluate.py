"""`mlxgpt eval`: every token of a split predicted exactly once, and the number it gives."""

from __future__ import annotations

import json
import math

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest

from conftest import TINY_MODEL, assert_clean_failure, run_cli
from mlxgpt.checkpoint import load
from mlxgpt.config import ModelArgs
from mlxgpt.data import BatchSampler
from mlxgpt.evaluate import estimate_spread, split_loss, windows
from mlxgpt.model import GPT

T = TINY_MODEL["block_size"]
VOCAB = 13


def tiny_model(**overrides) -> GPT:
    mx.random.seed(3)
    return GPT(ModelArgs(vocab_size=VOCAB, **{**TINY_MODEL, **overrides}))


def random_ids(n: int) -> np.ndarray:
    return np.random.default_rng(n).integers(0, VOCAB, size=n).astype(np.uint16)


@pytest.mark.parametrize("n_ids", [T + 1, T + 2, 3 * T + 1, 5 * T + 7])
@pytest.mark.parametrize("stride", [1, 3, T // 2, T])
def test_windows_predict_every_token_but_the_first_exactly_once(n_ids, stride):
    starts, first_scored = windows(n_ids, T, stride)
    predicted = np.zeros(n_ids, dtype=int)
    for start, first in zip(starts, first_scored):
        assert 0 <= start <= n_ids - 1 - T and 0 <= first < T  # full-length windows, each scoring something
        predicted[start + 1 + first:start + 1 + T] += 1
    assert predicted[0] == 0 and (predicted[1:] == 1).all()


def test_end_to_end_windows_give_the_plain_mean_loss():
    """With whole windows the split is just reshaped into (rows, T)."""
    model, ids = tiny_model(), random_ids(6 * T + 1)
    x, y = (mx.array(ids[s].astype(np.int32).reshape(6, T)) for s in (slice(0, -1), slice(1, None)))
    expected = nn.losses.cross_entropy(model(x), y, reduction="mean").item()
    result = split_loss(model, ids, chars=len(ids) - 1, batch_size=4)  # 6 windows: batches of 4 and 2
    assert result.tokens == len(ids) - 1
    assert result.loss == pytest.approx(expected, rel=1e-5)
    assert result.perplexity == pytest.approx(math.exp(expected), rel=1e-5)
    assert result.bits_per_char == pytest.approx(expected / math.log(2), rel=1e-5)  # one char per predicted token


def test_stride_one_gives_each_token_its_full_context():
    """Token k is predicted from the T tokens before it (or all of them, near the start)."""
    model, ids = tiny_model(), random_ids(3 * T + 5)
    losses = []
    for k in range(1, len(ids)):
        context = ids[max(0, k - T):k].astype(np.int32)
        logits = model(mx.array(context[None]))[0, -1]
        losses.append((mx.logsumexp(logits) - logits[int(ids[k])]).item())
    assert split_loss(model, ids, chars=len(ids), stride=1).loss == pytest.approx(np.mean(losses), rel=1e-5)


def test_evaluation_switches_dropout_off_and_restores_the_mode():
    model, ids = tiny_model(dropout=0.5), random_ids(4 * T + 1)
    model.train()
    first, second = (split_loss(model, ids, chars=len(ids)).loss for _ in range(2))
    assert first == second
    assert model.training
    model.eval()
    assert split_loss(model, ids, chars=len(ids)).loss == first


def test_estimate_spread_is_trainings_estimate_drawn_again_and_again():
    model, ids = tiny_model(), random_ids(40 * T + 1)
    estimates = estimate_spread(model, ids, batch_size=4, eval_iters=3, draws=5, seed=7)
    x, y = BatchSampler(ids, 4, T, 7).next(3)  # the first draw, by hand: the mean of 3 batch losses
    by_hand = np.mean([nn.losses.cross_entropy(model(mx.array(x[i])), mx.array(y[i]), reduction="mean").item()
                       for i in range(3)])
    assert estimates.shape == (5,) and estimates[0] == pytest.approx(by_hand, rel=1e-5)
    assert len(set(estimates.tolist())) == 5  # fresh windows each draw
    assert (estimate_spread(model, ids, 4, 3, 5, seed=7) == estimates).all()  # and reproducible
    whole = split_loss(model, ids, chars=len(ids)).loss
    assert abs(estimates.mean() - whole) < 3 * estimates.std(ddof=1)  # estimates of the same quantity


def test_eval_command_agrees_with_training_estimate(trained_run):
    result = run_cli("-m", "mlxgpt", "eval", "--checkpoint", trained_run)
    assert result.returncode == 0, result.stderr
    line = next(line for line in result.stdout.splitlines() if line.startswith("val loss"))
    whole = float(line.split()[2])
    state = json.loads((trained_run / "best" / "state.json").read_text())
    # the same quantity: training estimated it from 4 batches, eval reads the whole split
    assert abs(whole - state["best_val_loss"]) < 0.1
    assert whole < 0.5 * math.log(load(trained_run)[1].vocab_size)  # a trained model, far below chance

    context = run_cli("-m", "mlxgpt", "eval", "--checkpoint", trained_run, "--stride", "2")
    assert context.returncode == 0, context.stderr
    assert "each token sees at least 14 tokens of context" in context.stdout

    draws = run_cli("-m", "mlxgpt", "eval", "--checkpoint", trained_run, "--draws", "6")
    assert draws.returncode == 0, draws.stderr
    line = next(line for line in draws.stdout.splitlines() if line.startswith("estimate"))
    assert "6 draws of training's estimate" in line
    mean = float(line.split("mean ")[1].split(",")[0])
    assert abs(mean - whole) < 0.1

    train_split = run_cli("-m", "mlxgpt", "eval", "--checkpoint", trained_run, "--split", "train")
    assert train_split.returncode == 0 and "train split" in train_split.stdout


@pytest.mark.parametrize("flags, fragments", [
    (["--stride", "0"], ["--stride must be between 1 and the model's block size (16)"]),
    (["--stride", "17"], ["--stride must be between 1"]),
    (["--batch-size", "0"], ["--batch-size must be at least 1"]),
    (["--draws", "-1"], ["--draws must be 0 or more"]),
])
def test_eval_bad_flags_are_one_line(trained_run, flags, fragments):
    assert_clean_failure(run_cli("-m", "mlxgpt", "eval", "--checkpoint", trained_run, *flags), *fragments)


def test_eval_on_text_with_characters_the_model_never_saw(trained_run, tmp_path):
    other = tmp_path / "other.txt"
    other.write_text("Zebras! " * 200, encoding="utf-8")
    assert_clean_failure(run_cli("-m", "mlxgpt", "eval", "--checkpoint", trained_run, "--data", other),
                         str(other), "not in the model's vocabulary")


def test_eval_of_a_missing_checkpoint(tmp_path):
    assert_clean_failure(run_cli("-m", "mlxgpt", "eval", "--checkpoint", tmp_path / "nope"), "does not exist")
