"""Checkpoints: exact round trips, atomic replacement, and clear errors for damaged ones."""

from __future__ import annotations

import json
import os
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
from conftest import TINY_MODEL, grammar_text
from mlx.utils import tree_flatten

import mlxgpt
from mlxgpt import checkpoint
from mlxgpt.checkpoint import load_training_state, resolve_checkpoint, save_checkpoint
from mlxgpt.config import ModelArgs, TrainArgs
from mlxgpt.errors import MlxgptError
from mlxgpt.model import GPT
from mlxgpt.tokenizers import CharTokenizer
from mlxgpt.training import build_optimizer, make_train_step

TEXT = grammar_text(40)
TOKENIZER = CharTokenizer.train(TEXT)
PROBE = mx.array([TOKENIZER.encode("The old fox sees")])


def make_model(seed: int, **overrides) -> GPT:
    mx.random.seed(seed)
    model = GPT(ModelArgs(vocab_size=TOKENIZER.vocab_size, **{**TINY_MODEL, **overrides}))
    mx.eval(model.parameters())
    model.eval()
    return model


def logits(model: GPT) -> np.ndarray:
    return np.array(model(PROBE))


@pytest.mark.parametrize("overrides", [{}, dict(pos_embedding="sinusoidal"), dict(tie_embeddings=False, bias=True)])
def test_round_trip_gives_identical_logits(tmp_path, overrides):
    model = make_model(0, **overrides)
    save_checkpoint(tmp_path / "ckpt", model, TOKENIZER)
    loaded, tokenizer = mlxgpt.load(tmp_path / "ckpt")
    assert loaded.args == model.args
    assert tokenizer.chars == TOKENIZER.chars
    assert not loaded.training
    np.testing.assert_array_equal(logits(loaded), logits(model))
    for (name, a), (name_b, b) in zip(tree_flatten(model.parameters()), tree_flatten(loaded.parameters())):
        assert name == name_b and np.array_equal(np.array(a), np.array(b))


def test_checkpoint_files_are_json_and_safetensors_only(tmp_path):
    model = make_model(0)
    save_checkpoint(tmp_path / "ckpt", model, TOKENIZER, train_args={"lr": 1e-3}, extra={"preset": "baby"},
                    optimizer_state={"step": mx.array(3)}, state={"iter": 3})
    files = sorted(p.name for p in (tmp_path / "ckpt").iterdir())
    assert files == ["char_vocab.json", "config.json", "model.safetensors", "optimizer.safetensors", "state.json"]
    config = json.loads((tmp_path / "ckpt" / "config.json").read_text(encoding="utf-8"))
    assert config["format"] == "mlxgpt-checkpoint" and config["mlxgpt_version"] == mlxgpt.__version__
    assert config["model"]["vocab_size"] == TOKENIZER.vocab_size and config["train"] == {"lr": 1e-3}
    assert config["tokenizer"]["kind"] == "char" and config["preset"] == "baby"
    # safetensors: an 8-byte header length, then a JSON header (no pickle anywhere)
    raw = (tmp_path / "ckpt" / "model.safetensors").read_bytes()
    header = json.loads(raw[8:8 + int.from_bytes(raw[:8], "little")])
    assert "wte.weight" in header
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]  # no temporary directories left


def test_training_state_round_trips(tmp_path):
    model = make_model(0)
    model.train()
    optimizer = build_optimizer(TrainArgs(warmup_iters=2, max_iters=10))
    step, state = make_train_step(model, optimizer, 1.0)
    ids = np.array(TOKENIZER.encode(TEXT[:33]), dtype=np.int32)
    x, y = mx.array(ids[:32].reshape(1, 2, 16)), mx.array(ids[1:].reshape(1, 2, 16))
    mx.eval(step(x, y), state)
    save_checkpoint(tmp_path / "latest", model, TOKENIZER, optimizer_state=optimizer.state,
                    state={"iter": 1, "best_val_loss": 2.5})
    saved_state, optimizer_state = load_training_state(tmp_path / "latest")
    assert saved_state == {"iter": 1, "best_val_loss": 2.5}
    expected = dict(tree_flatten(optimizer.state))
    got = dict(tree_flatten(optimizer_state))
    assert expected.keys() == got.keys() and len(expected) > 10
    for name in expected:
        np.testing.assert_array_equal(np.array(got[name]), np.array(expected[name]))


# ---------------------------------------------------------------- atomic replacement


def fail_on_call(monkeypatch, owner, name: str, n: int, before=None) -> None:
    """Make the n-th call of owner.name raise OSError (after running `before`)."""
    real = getattr(owner, name)
    calls = []

    def wrapper(*args, **kwargs):
        calls.append(args)
        if len(calls) == n:
            if before:
                before(*args)
            raise OSError(28, "No space left on device (simulated)")
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, wrapper)


def half_written(path, *rest):
    Path(path).write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{\"wte.wei")  # a torn file


@pytest.mark.parametrize("owner, name, n, before", [
    (mx, "save_safetensors", 1, half_written),  # dies while writing the weights
    (mx, "save_safetensors", 2, half_written),  # ... the optimizer state
    (checkpoint, "_fsync_file", 3, None),       # ... flushing the files
    (os, "replace", 1, None),                   # ... moving the old checkpoint aside
])
def test_a_failed_save_keeps_the_old_checkpoint(tmp_path, monkeypatch, owner, name, n, before):
    old_model, new_model = make_model(0), make_model(1)
    target = tmp_path / "run" / "latest"
    save_checkpoint(target, old_model, TOKENIZER, optimizer_state={"m": mx.ones(3)}, state={"iter": 1})
    with monkeypatch.context() as patch:
        fail_on_call(patch, owner, name, n, before)
        with pytest.raises(OSError, match="simulated"):
            save_checkpoint(target, new_model, TOKENIZER, optimizer_state={"m": mx.zeros(3)}, state={"iter": 2})
    loaded, _ = mlxgpt.load(target)
    np.testing.assert_array_equal(logits(loaded), logits(old_model))
    assert load_training_state(target)[0] == {"iter": 1}
    # and the next save goes through, cleaning up after the failed one's temporary files
    save_checkpoint(target, new_model, TOKENIZER, state={"iter": 2})
    np.testing.assert_array_equal(logits(mlxgpt.load(target)[0]), logits(new_model))
    assert sorted(p.name for p in target.parent.iterdir()) == ["latest"]


def crash_between_renames(monkeypatch, target: Path, model: GPT) -> None:
    """A save that dies after moving the old checkpoint aside, before moving the new one in."""
    with monkeypatch.context() as patch:
        fail_on_call(patch, os, "replace", 2)
        with pytest.raises(OSError, match="simulated"):
            save_checkpoint(target, model, TOKENIZER, state={"iter": 2})
    assert not target.exists() and (target.parent / ".latest.old" / "config.json").is_file()


def test_a_leftover_old_checkpoint_is_still_found(tmp_path, monkeypatch):
    old_model = make_model(0)
    run = tmp_path / "run"
    save_checkpoint(run / "latest", old_model, TOKENIZER, state={"iter": 1})
    crash_between_renames(monkeypatch, run / "latest", make_model(1))
    assert resolve_checkpoint(run) == run / ".latest.old"
    loaded, _ = mlxgpt.load(run)
    np.testing.assert_array_equal(logits(loaded), logits(old_model))
    # a complete best/ is still preferred
    best = make_model(2)
    save_checkpoint(run / "best", best, TOKENIZER)
    np.testing.assert_array_equal(logits(mlxgpt.load(run)[0]), logits(best))


def test_saving_again_after_a_crash_between_renames_never_leaves_no_checkpoint(tmp_path, monkeypatch):
    """The leftover .latest.old is the only complete copy: the next save must not
    delete it before its own checkpoint is in place."""
    old_model = make_model(0)
    run = tmp_path / "run"
    save_checkpoint(run / "latest", old_model, TOKENIZER, state={"iter": 1})
    crash_between_renames(monkeypatch, run / "latest", make_model(1))
    with monkeypatch.context() as patch:
        fail_on_call(patch, os, "replace", 1)  # this save dies too, at its first rename
        with pytest.raises(OSError, match="simulated"):
            save_checkpoint(run / "latest", make_model(2), TOKENIZER, state={"iter": 3})
    np.testing.assert_array_equal(logits(mlxgpt.load(run)[0]), logits(old_model))
    newest = make_model(3)
    save_checkpoint(run / "latest", newest, TOKENIZER, state={"iter": 3})
    np.testing.assert_array_equal(logits(mlxgpt.load(run)[0]), logits(newest))
    assert sorted(p.name for p in run.iterdir()) == ["latest"]


# ---------------------------------------------------------------- damaged checkpoints


def _garbage_weights(d: Path) -> None:
    (d / "model.safetensors").write_bytes(os.urandom(2048))


def _truncated_weights(d: Path) -> None:
    raw = (d / "model.safetensors").read_bytes()
    (d / "model.safetensors").write_bytes(raw[: len(raw) // 2])


def _missing_weights(d: Path) -> None:
    (d / "model.safetensors").unlink()


def _foreign_config(d: Path) -> None:
    (d / "config.json").write_text(json.dumps({"model_type": "gpt2", "n_embd": 768, "vocab_size": 50257}))


def _truncated_config(d: Path) -> None:
    raw = (d / "config.json").read_text()
    (d / "config.json").write_text(raw[: len(raw) // 2])


def _newer_format(d: Path) -> None:
    config = json.loads((d / "config.json").read_text())
    (d / "config.json").write_text(json.dumps({**config, "format_version": 99, "mlxgpt_version": "9.0"}))


def _shape_mismatch(d: Path) -> None:
    config = json.loads((d / "config.json").read_text())
    config["model"]["n_embd"] = 64
    (d / "config.json").write_text(json.dumps(config))


def _missing_vocab(d: Path) -> None:
    (d / "char_vocab.json").unlink()


def _corrupt_vocab(d: Path) -> None:
    (d / "char_vocab.json").write_text('{"chars": ["ab", 3]}')


def _vocab_of_another_model(d: Path) -> None:
    (d / "char_vocab.json").write_text(json.dumps({"chars": list("abc")}))


@pytest.mark.parametrize("damage, message", [
    (_garbage_weights, "corrupt"),
    (_truncated_weights, "corrupt"),
    (_missing_weights, "missing"),
    (_foreign_config, "not an mlxgpt checkpoint"),
    (_truncated_config, "unreadable or corrupt"),
    (_newer_format, "newer mlxgpt"),
    (_shape_mismatch, "does not match"),
    (_missing_vocab, "missing"),
    (_corrupt_vocab, "corrupt"),
    (_vocab_of_another_model, "vocab"),
])
def test_damaged_checkpoints_give_one_clear_line(tmp_path, damage, message):
    save_checkpoint(tmp_path / "ckpt", make_model(0), TOKENIZER)
    damage(tmp_path / "ckpt")
    with pytest.raises(MlxgptError, match=message) as info:
        mlxgpt.load(tmp_path / "ckpt")
    assert "\n" not in str(info.value)


def test_missing_or_empty_checkpoint_directories(tmp_path):
    with pytest.raises(MlxgptError, match="does not exist"):
        mlxgpt.load(tmp_path / "nope")
    with pytest.raises(MlxgptError, match="holds no mlxgpt checkpoint"):
        mlxgpt.load(tmp_path)
    (tmp_path / "file").write_text("x")
    with pytest.raises(MlxgptError, match="not a directory"):
        mlxgpt.load(tmp_path / "file")
