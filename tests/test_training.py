"""Training: the compiled step learns (overfits a tiny text, lowers val loss on a
generated one), the schedule and weight decay are nanoGPT's, gradient accumulation
is a bigger batch, and --resume continues exactly."""

from __future__ import annotations

import json
import math
import random
from collections import Counter
from pathlib import Path
from typing import Callable

import mlx.core as mx
import numpy as np
import pytest
from conftest import TINY_FLAGS, TINY_MODEL, grammar_text, run_cli
from mlx.utils import tree_flatten, tree_map

from mlxgpt.config import ModelArgs, TrainArgs
from mlxgpt.model import GPT
from mlxgpt.tokenizers import CharTokenizer
from mlxgpt.training import build_optimizer, loss_fn, lr_schedule, make_train_step


def read_events(run: Path, kind: str) -> list[dict]:
    with open(run / "metrics.jsonl", encoding="utf-8") as f:
        return [event for event in map(json.loads, f) if event["event"] == kind]


def tiny_model(vocab_size: int, seed: int = 0, **overrides) -> GPT:
    mx.random.seed(seed)
    model = GPT(ModelArgs(vocab_size=vocab_size, **{**TINY_MODEL, **overrides}))
    mx.eval(model.parameters())
    return model


# ---------------------------------------------------------------- it learns


def test_overfits_a_tiny_text_to_near_zero_loss():
    """Karpathy's sanity check: the real compiled step memorises one small batch.
    Eight generated lines with distinct first letters, so every target is determined by its prefix."""
    rng = random.Random(0)
    words = "the cat dog sat ran on a mat log big small red".split()
    lines = []
    for first in "ABCDEFGH":
        line = first
        while len(line) < 17:
            line += " " + rng.choice(words)
        lines.append(line[:17])
    tokenizer = CharTokenizer.train("\n".join(lines))
    rows = np.array([tokenizer.encode(line) for line in lines], dtype=np.int32)
    x, y = mx.array(rows[None, :, :-1]), mx.array(rows[None, :, 1:])  # (accum=1, B=8, T=16)

    model = tiny_model(tokenizer.vocab_size)
    model.train()
    args = TrainArgs(max_iters=150, lr=1e-2, min_lr=1e-3, warmup_iters=10, weight_decay=0.0)
    step, state = make_train_step(model, build_optimizer(args), grad_clip=1.0)
    for _ in range(args.max_iters):
        loss, norm = step(x, y)
        mx.eval(state, loss, norm)
    model.eval()
    start = math.log(tokenizer.vocab_size)
    final = loss_fn(model, x[0], y[0]).item()
    assert final < 0.1, f"loss {final:.4f} (started near {start:.2f})"


def unigram_entropy(text: str) -> float:
    counts = Counter(text)
    total = sum(counts.values())
    return -sum(c / total * math.log(c / total) for c in counts.values())


def test_training_on_generated_text_lowers_val_loss(trained_run, text_file):
    evals = read_events(trained_run, "eval")
    assert [e["iter"] for e in evals] == [0, 100, 200]
    vocab = len(set(text_file.read_text(encoding="utf-8")))
    assert abs(evals[0]["val_loss"] - math.log(vocab)) < 0.1  # untrained: uniform
    assert evals[1]["val_loss"] < evals[0]["val_loss"]
    assert evals[2]["val_loss"] < evals[1]["val_loss"]
    # better than any model that ignores context (character frequencies alone)
    assert evals[2]["val_loss"] < unigram_entropy(text_file.read_text(encoding="utf-8")) - 0.5
    for e in evals:  # the fields the issue asks metrics.jsonl for
        assert {"iter", "train_loss", "val_loss", "lr", "tokens_per_s"} <= e.keys()
    state = json.loads((trained_run / "best" / "state.json").read_text())
    assert state["best_val_loss"] == pytest.approx(min(e["val_loss"] for e in evals))


def nanogpt_lr(it: int, lr: float, min_lr: float, warmup: int, decay: int) -> float:
    """nanoGPT train.py's get_lr, verbatim."""
    if it < warmup:
        return lr * (it + 1) / (warmup + 1)
    if it > decay:
        return min_lr
    ratio = (it - warmup) / (decay - warmup)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (lr - min_lr)


def test_lr_schedule_is_nanogpts():
    args = TrainArgs(lr=1e-3, min_lr=1e-4, warmup_iters=10, max_iters=50)
    schedule = lr_schedule(args)
    for it in range(0, 60):
        assert schedule(mx.array(it)).item() == pytest.approx(nanogpt_lr(it, 1e-3, 1e-4, 10, 50), rel=1e-5), it
    no_warmup = lr_schedule(TrainArgs(lr=1e-3, min_lr=1e-4, warmup_iters=0, max_iters=50))
    assert no_warmup(mx.array(0)).item() == pytest.approx(1e-3)
    assert no_warmup(mx.array(50)).item() == pytest.approx(1e-4)


def test_logged_lr_follows_the_schedule_step_by_step(trained_run):
    """The lr the CLI logs at iteration k is nanoGPT's get_lr(k - 1): the one that step used."""
    for event in read_events(trained_run, "step"):
        expected = nanogpt_lr(event["iter"] - 1, 3e-3, 3e-4, 20, 200)
        assert event["lr"] == pytest.approx(expected, rel=1e-5), event["iter"]


def test_weight_decay_applies_to_matrices_only():
    """With zero gradients AdamW moves nothing but the decayed weights, each by a factor (1 - lr * wd)."""
    model = tiny_model(20, bias=True)
    before = dict(tree_flatten(model.parameters()))
    optimizer = build_optimizer(TrainArgs(lr=0.1, min_lr=0.0, warmup_iters=0, weight_decay=0.5, max_iters=10))
    optimizer.update(model, tree_map(mx.zeros_like, model.parameters()))
    after = dict(tree_flatten(model.parameters()))
    decayed = {name for name, w in before.items() if w.ndim >= 2}
    assert {"wte.weight", "wpe.weight", "h.0.attn.c_attn.weight", "h.1.mlp.c_proj.weight"} <= decayed
    for name, w in before.items():
        factor = 1 - 0.1 * 0.5 if name in decayed else 1.0
        np.testing.assert_allclose(np.array(after[name]), np.array(w) * factor, rtol=1e-6, atol=1e-7, err_msg=name)
    assert any(name.endswith("bias") for name in before) and any(".ln_" in name for name in before)


def assert_trains_alike(makers: tuple[Callable, Callable], layouts: tuple, batch_size: int, atol: float) -> None:
    """Two identical tiny models, one step each (maker(model, optimizer) -> (step, state)), fed
    the same three random batches (each reshaped by its layout into (accum, B, T)):
    their losses, gradient norms and parameters must agree."""
    text = grammar_text(40)
    tokenizer = CharTokenizer.train(text)
    ids = np.array(tokenizer.encode(text), dtype=np.int32)
    rng = np.random.default_rng(0)
    args = TrainArgs(lr=1e-3, warmup_iters=0, max_iters=10)
    models, steps = [], []
    for maker in makers:
        model = tiny_model(tokenizer.vocab_size)
        model.train()
        models.append(model)
        steps.append(maker(model, build_optimizer(args)))
    for _ in range(3):
        starts = rng.integers(0, len(ids) - 17, size=batch_size)
        batch = np.stack([ids[s:s + 17] for s in starts])
        results = [step(mx.array(layout(batch[:, :-1])), mx.array(layout(batch[:, 1:])))
                   for (step, _), layout in zip(steps, layouts)]
        mx.eval([state for _, state in steps], results)
        (loss_a, norm_a), (loss_b, norm_b) = results
        assert loss_a.item() == pytest.approx(loss_b.item(), rel=1e-5)
        assert norm_a.item() == pytest.approx(norm_b.item(), rel=1e-4)
    for (name, a), (_, b) in zip(tree_flatten(models[0].parameters()), tree_flatten(models[1].parameters())):
        np.testing.assert_allclose(np.array(a), np.array(b), rtol=1e-4, atol=atol, err_msg=name)


def test_gradient_accumulation_equals_one_bigger_batch():
    """Two micro-batches of 4 give the same loss, gradient norm and update as one batch of 8."""
    textbook = lambda model, optimizer: make_train_step(model, optimizer, grad_clip=1.0)  # noqa: E731
    assert_trains_alike((textbook, textbook), (lambda a: a.reshape(2, 4, 16), lambda a: a[None]), batch_size=8,
                        atol=1e-6)


# ---------------------------------------------------------------- --resume continues exactly


RESUME_FLAGS = [*TINY_FLAGS, "--eval-interval", "4", "--eval-iters", "2", "--log-interval", "1",
                "--warmup-iters", "2", "--lr-decay-iters", "12"]


@pytest.mark.parametrize("dropout, grad_accum", [("0.0", "1"), ("0.1", "2")])
def test_resume_continues_exactly(tmp_path, text_file, dropout, grad_accum):
    """6 steps, then --resume for 6 more, gives the losses of 12 steps straight.
    (6 is not a multiple of the eval interval, so the split falls between evals.)"""
    flags = ["train.py", "--data", text_file, *RESUME_FLAGS, "--dropout", dropout, "--grad-accum", grad_accum]
    straight, split = tmp_path / "straight", tmp_path / "split"
    for result in (run_cli(*flags, "--out", straight, "--max-iters", "12"),
                   run_cli(*flags, "--out", split, "--max-iters", "6"),
                   run_cli("train.py", "--resume", "--out", split, "--max-iters", "12", "--no-ui")):
        assert result.returncode == 0, result.stderr
    assert "resuming at iter 6" in result.stdout

    def steps(run: Path) -> list[tuple[int, float, float, float]]:
        return [(e["iter"], e["train_loss"], e["grad_norm"], e["lr"]) for e in read_events(run, "step")]

    expected, got = steps(straight), steps(split)
    assert [s[0] for s in expected] == [s[0] for s in got] == list(range(1, 13))
    # aim: bit-exact; allow float noise only (a wrong batch or dropout mask moves losses by ~1e-2)
    np.testing.assert_allclose(np.array(got)[:, 1:], np.array(expected)[:, 1:], rtol=1e-6, atol=0)
    assert len({s[1] for s in expected}) == 12  # the losses really changed step by step

    final = {e["iter"]: e["val_loss"] for e in read_events(straight, "eval")}[12]
    assert read_events(split, "eval")[-1]["val_loss"] == pytest.approx(final, rel=1e-6)
    a = mx.load(str(straight / "latest" / "model.safetensors"))
    b = mx.load(str(split / "latest" / "model.safetensors"))
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_allclose(np.array(b[name]), np.array(a[name]), rtol=1e-5, atol=1e-7, err_msg=name)
    assert json.loads((split / "latest" / "state.json").read_text())["iter"] == 12


# ---------------------------------------------------------------- time budget and the speed-run preset


def test_time_budget_stops_training_then_evaluates_and_saves(tmp_path, text_file):
    out = tmp_path / "run"
    result = run_cli("train.py", "--data", text_file, "--out", out, *TINY_FLAGS, "--max-iters", "1000000",
                     "--eval-interval", "1000000", "--eval-iters", "2", "--time-budget", "3")
    assert result.returncode == 0, result.stderr
    finished = read_events(out, "run_finished")[-1]
    assert finished["reason"] == "time budget"
    assert 0 < finished["iter"] < 1_000_000
    # the run ended with an evaluation of the model it stopped with, and saved it
    assert read_events(out, "eval")[-1]["iter"] == finished["iter"]
    assert json.loads((out / "latest" / "state.json").read_text())["iter"] == finished["iter"]


def test_cpu_speedrun_preset_is_complete_and_overridable(tmp_path, text_file):
    from mlxgpt.config import PRESETS

    preset = PRESETS["cpu-speedrun"]
    ModelArgs(vocab_size=65, **preset.model).validate()
    args = TrainArgs(**preset.train)
    args.validate()
    assert args.time_budget == 120 and args.decay_iters == args.max_iters  # the schedule ends inside the budget
    # Through the CLI, with every shape flag overridden to tiny: the preset's budget still applies.
    out = tmp_path / "run"
    result = run_cli("train.py", "--data", text_file, "--preset", "cpu-speedrun", "--out", out, *TINY_FLAGS,
                     "--max-iters", "5", "--eval-iters", "2")
    assert result.returncode == 0, result.stderr
    config = json.loads((out / "latest" / "config.json").read_text())
    assert config["train"]["time_budget"] == 120 and config["train"]["lr"] == 6e-3
    assert config["model"]["n_embd"] == 32  # the flag beat the preset
    # the switches the ablation chose come with it (docs/how-it-works.md, "Since GPT-2"; TINY_FLAGS resets them)
    assert (preset.model["pos_embedding"], preset.model["norm"], config["train"]["optimizer"]) == \
        ("rope", "rmsnorm", "muon")


def test_the_clock_brings_the_cosine_forward_but_never_cuts_the_warmup():
    from mlxgpt.training import clock_learning_rate

    args = TrainArgs(lr=1e-3, min_lr=1e-4, warmup_iters=100, max_iters=1000, time_budget=100.0)
    schedule = lr_schedule(args)
    at = lambda iteration, elapsed: clock_learning_rate(schedule, args, iteration, elapsed).item()
    assert at(10, 0.0) == pytest.approx(schedule(mx.array(10)).item())  # warming up by steps
    assert at(10, 60.0) == pytest.approx(schedule(mx.array(10)).item())  # a slow first step cuts no warmup
    assert at(200, 60.0) == pytest.approx(schedule(mx.array(600)).item())  # a slow machine: the clock leads
    assert at(700, 60.0) == pytest.approx(schedule(mx.array(700)).item())  # a fast one: its steps lead
    assert at(300, 100.0) == pytest.approx(1e-4)  # the budget spent: min_lr


def test_a_time_budget_run_ends_fully_decayed_and_resume_continues_its_budget(tmp_path, text_file):
    """max_iters far out of reach: the clock alone takes the lr through warmup and the cosine to min_lr."""
    out = tmp_path / "clock"
    flags = [*TINY_FLAGS, "--max-iters", "1000000", "--lr", "3e-3", "--min-lr", "3e-4", "--warmup-iters", "10",
             "--eval-interval", "1000000", "--eval-iters", "2", "--log-interval", "1"]
    first = run_cli("train.py", "--data", text_file, "--out", out, *flags, "--time-budget", "5")
    assert first.returncode == 0, first.stderr
    steps = read_events(out, "step")
    lrs = [step["lr"] for step in steps]
    assert lrs[0] < 1e-3  # warming up, by steps
    assert max(lrs) == pytest.approx(3e-3, rel=0.1)  # the peak was reached
    assert lrs[-1] < 3e-4 + 0.1 * (3e-3 - 3e-4)  # and the end of the cosine
    assert read_events(out, "run_finished")[-1]["reason"] == "time budget"
    state = json.loads((out / "latest" / "state.json").read_text())
    assert state["elapsed_s"] >= 5.0 and state["iter"] == steps[-1]["iter"]

    resumed = run_cli("train.py", "--resume", "--out", out, "--time-budget", "10", "--log-interval", "1", "--no-ui")
    assert resumed.returncode == 0, resumed.stderr
    after = [step for step in read_events(out, "step") if step["iter"] > state["iter"]]
    assert after and 1e-3 < after[0]["lr"] < 0.75 * 3e-3  # half-way through the budget: mid-cosine, no new warmup
    assert json.loads((out / "latest" / "state.json").read_text())["elapsed_s"] >= 10.0


def test_muon_takes_the_blocks_matrices_and_adamw_the_rest():
    from mlxgpt.training import is_block_matrix, set_learning_rate

    model = tiny_model(23)
    optimizer = build_optimizer(TrainArgs(optimizer="muon", lr=1e-3, muon_lr=0.02))
    optimizer.init(model.trainable_parameters())
    adamw_decay, muon, adamw_plain = optimizer.optimizers
    on_muon = sorted(k for k, w in tree_flatten(model.parameters()) if is_block_matrix(k, w))
    assert on_muon and all(".c_" in k and k.endswith("weight") for k in on_muon)  # projections, not gains or biases
    assert not any(is_block_matrix(k, w) for k, w in tree_flatten(model.parameters()) if k.startswith("wte"))
    # each part holds state for its own parameters only
    assert sorted(k for k, _ in tree_flatten(muon.state) if k.endswith(".v")) == sorted(k + ".v" for k in on_muon)
    assert any(k.startswith("wte") for k, _ in tree_flatten(adamw_decay.state))
    set_learning_rate(optimizer, TrainArgs(optimizer="muon", lr=1e-3, muon_lr=0.02), mx.array(5e-4))
    assert muon.learning_rate.item() == pytest.approx(1e-2) and adamw_plain.learning_rate.item() == pytest.approx(5e-4)


def test_muon_runs_learn_and_resume_exactly(tmp_path, text_file):
    flags = ["train.py", "--data", text_file, *RESUME_FLAGS, "--optimizer", "muon", "--lr", "3e-3"]
    straight, split = tmp_path / "straight", tmp_path / "split"
    assert run_cli(*flags, "--out", straight, "--max-iters", "12").returncode == 0
    assert run_cli(*flags, "--out", split, "--max-iters", "8").returncode == 0
    resumed = run_cli("train.py", "--resume", "--out", split, "--max-iters", "12", "--no-ui")
    assert resumed.returncode == 0, resumed.stderr
    a, b = (read_events(run, "eval") for run in (straight, split))
    assert a[-1]["val_loss"] == b[-1]["val_loss"] and a[-1]["val_loss"] < a[0]["val_loss"]
    config = json.loads((split / "latest" / "config.json").read_text())
    assert config["train"]["optimizer"] == "muon"
