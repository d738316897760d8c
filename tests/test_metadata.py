"""Checkpoint metadata is validated, not trusted.

Each damaged or forged file goes through the real CLI and must give a non-zero
exit, exactly one stderr line naming the file and the field (or tensor), and no
traceback. Every case here was chosen so that the code before this check got it
wrong: a traceback, a silently different model, or a line that names neither.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any, Callable

import mlx.core as mx
import numpy as np
import pytest
from conftest import TINY_MODEL, assert_clean_failure, grammar_text, run_cli

import mlxgpt
from mlxgpt.checkpoint import STATE_SCHEMA, load_training_state, read_config, save_checkpoint
from mlxgpt.config import MAX_PARAMS, ModelArgs
from mlxgpt.errors import MlxgptError
from mlxgpt.generate import generate as generate_text
from mlxgpt.model import GPT
from mlxgpt.tokenizers import CharTokenizer, SentencePieceTokenizer
from mlxgpt.training import LoopState


@pytest.fixture
def run_copy(trained_run, tmp_path) -> Path:
    """A private copy of the shared trained run, free to damage."""
    copy = tmp_path / "run"
    shutil.copytree(trained_run, copy)
    return copy


def generate(checkpoint: Path):
    return run_cli("generate.py", "--checkpoint", checkpoint, "--prompt", "The ", "--max-new-tokens", "5")


def edit_json(path: Path, edit: Callable[[Any], Any]) -> None:
    """Rewrite a JSON file through `edit` (which changes the value in place or returns a new one)."""
    value = json.loads(path.read_text(encoding="utf-8"))
    new = edit(value)
    path.write_text(json.dumps(value if new is None else new, ensure_ascii=False), encoding="utf-8")


def replace_text(old: str, new: str) -> Callable[[Path], None]:
    """Edit a file's text, for what json.dumps cannot write (NaN literals, repeated keys)."""
    def damage(path: Path) -> None:
        text = path.read_text(encoding="utf-8")
        assert old in text
        path.write_text(text.replace(old, new, 1), encoding="utf-8")
    return damage


def model_field(name: str, value: Any) -> Callable[[Path], None]:
    return lambda path: edit_json(path, lambda config: config["model"].__setitem__(name, value))


def section(name: str, edit: Callable[[dict], Any]) -> Callable[[Path], None]:
    """Edit one section of config.json in place (edit's return value is ignored)."""
    def damage(path: Path) -> None:
        edit_json(path, lambda config: edit(config[name]) and None)
    return damage


def top_level(name: str, value: Any) -> Callable[[Path], None]:
    return lambda path: edit_json(path, lambda config: config.__setitem__(name, value))


# ---------------------------------------------------------------- config.json


@pytest.mark.parametrize("damage, fragments", [
    pytest.param(model_field("n_head", 2.0), ["model.n_head must be an integer, got 2.0"], id="float-size"),
    pytest.param(model_field("n_layer", -3), ["model: n_layer must be at least 1, got -3"], id="negative-size"),
    pytest.param(model_field("n_layer", 300), ["model: n_layer must be at most 256"], id="too-many-layers"),
    pytest.param(lambda p: edit_json(p, lambda c: c["model"].update(n_layer=200, n_embd=8192, n_head=2)),
                 ["parameters, more than mlxgpt's limit"], id="too-many-parameters"),
    pytest.param(top_level("model", []), ["model must be an object, got []"], id="model-list"),
    pytest.param(top_level("format_version", "2"), ['format_version must be an integer, got "2"'],
                 id="version-string"),
    pytest.param(model_field("dropout", "0.1"), ["model.dropout must be a finite number"], id="dropout-string"),
    pytest.param(model_field("tie_embeddings", 1), ["model.tie_embeddings must be true or false, got 1"],
                 id="bool-as-int"),
    pytest.param(model_field("bias", "false"), ['model.bias must be true or false, got "false"'], id="bool-string"),
    pytest.param(section("model", lambda m: m.pop("pos_embedding")), ["model.pos_embedding is missing"],
                 id="missing-field"),
    pytest.param(replace_text('"dropout": 0.0', '"dropout": NaN'), ["unreadable or corrupt", "NaN"], id="nan"),
    pytest.param(replace_text('"n_layer": 2,', '"n_layer": 2, "n_layer": 2,'), ["'n_layer' appears twice"],
                 id="repeated-key"),
    pytest.param(section("train", lambda t: t.update(eval_iters="20")), ['train.eval_iters must be an integer'],
                 id="train-type"),
    pytest.param(section("train", lambda t: t.update(lr=-0.5)), ["train: need 0 <= --min-lr <= --lr"],
                 id="train-range"),
    pytest.param(section("tokenizer", lambda t: t.update(kind=3)), ["tokenizer.kind must be a string, got 3"],
                 id="tokenizer-kind"),
    pytest.param(section("tokenizer", lambda t: t.update(files=["../../outside.json"])),
                 ["tokenizer.files must name files in the checkpoint directory", "../../outside.json"],
                 id="tokenizer-path"),
    pytest.param(section("tokenizer", lambda t: t.update(vocab_size=t["vocab_size"] + 1)),
                 ["tokenizer.vocab_size", "differs from model.vocab_size"], id="tokenizer-vocab"),
    pytest.param(top_level("data", 5), ["data must be a string or null, got 5"], id="data-number"),
])
def test_damaged_config(run_copy, damage, fragments):
    config = run_copy / "best" / "config.json"
    damage(config)
    result = generate(run_copy / "best")
    assert_clean_failure(result, str(config), "restore config.json from a backup, or retrain", *fragments)
    assert result.stdout == ""


def test_damaged_config_through_eval(run_copy):
    config = run_copy / "best" / "config.json"
    model_field("block_size", 16.5)(config)
    result = run_cli("-m", "mlxgpt", "eval", "--checkpoint", run_copy / "best")
    assert_clean_failure(result, str(config), "model.block_size must be an integer, got 16.5")


# ---------------------------------------------------------------- state.json (--resume)


@pytest.mark.parametrize("damage, fragments", [
    pytest.param(lambda p: edit_json(p, lambda s: s.update(iter=3.5)), ["iter must be an integer, got 3.5"],
                 id="float-iter"),
    pytest.param(lambda p: edit_json(p, lambda s: s.update(iter={"a": 1})), ['iter must be an integer, got {"a": 1}'],
                 id="object-iter"),
    pytest.param(lambda p: edit_json(p, lambda s: s.pop("iter") and None), ["iter is missing"], id="missing-iter"),
    pytest.param(lambda p: edit_json(p, lambda s: s.update(world_size=0)), ["world_size must be at least 1"],
                 id="zero-ranks"),
    pytest.param(lambda p: edit_json(p, lambda s: s.update(evaluated_at="200")), ["evaluated_at must be an integer"],
                 id="string-evaluated-at"),
    pytest.param(lambda p: edit_json(p, lambda s: [s]), ["the file must be an object"], id="list"),
    pytest.param(lambda p: p.write_text(p.read_text().replace('"best_val_loss": ', '"best_val_loss": NaN, "x": ')),
                 ["not valid JSON", "NaN"], id="nan"),
])
def test_damaged_training_state(run_copy, damage, fragments):
    state = run_copy / "latest" / "state.json"
    damage(state)
    before = state.read_bytes()
    result = run_cli("train.py", "--resume", "--out", run_copy, "--max-iters", "205", "--no-ui")
    assert_clean_failure(result, str(state), "--resume cannot continue from it", *fragments)
    assert state.read_bytes() == before


def test_damaged_optimizer_state(run_copy):
    path = run_copy / "latest" / "optimizer.safetensors"
    rewrite_safetensors(path, lambda header, data: header["states.0.step"].update(dtype="I64"))
    result = run_cli("train.py", "--resume", "--out", run_copy, "--max-iters", "205", "--no-ui")
    assert_clean_failure(result, str(path), "'states.0.step' has dtype 'I64', mlxgpt writes 'U64'")


# ---------------------------------------------------------------- tokenizer files


def _vocab_directory(path: Path) -> None:
    path.unlink()
    path.mkdir()


def _repeat_a_character(path: Path) -> None:
    edit_json(path, lambda vocab: vocab["chars"].__setitem__(5, vocab["chars"][4]))


@pytest.mark.parametrize("damage, fragments", [
    pytest.param(_vocab_directory, ["it is a directory"], id="directory"),
    pytest.param(lambda p: edit_json(p, lambda v: {"chars": {c: i for i, c in enumerate(v["chars"])}}),
                 ["chars must be a list of strings, got {"], id="object"),
    pytest.param(_repeat_a_character, ["chars[5] repeats chars[4]"], id="repeated"),
    pytest.param(replace_text('"a"', '"\\ud800"'), ["must be one character", "\\ud800"], id="lone-surrogate"),
    pytest.param(replace_text('{"chars"', '{"size": Infinity, "chars"'), ["not valid JSON", "Infinity"], id="inf"),
])
def test_damaged_char_vocabulary(run_copy, damage, fragments):
    path = run_copy / "best" / "char_vocab.json"
    damage(path)
    result = generate(run_copy / "best")
    assert_clean_failure(result, f"tokenizer file {path}", "restore it from a backup", *fragments)
    assert result.stdout == ""


@pytest.fixture(scope="module")
def sp_checkpoint(tmp_path_factory) -> Path:
    """A small checkpoint with a SentencePiece tokenizer, saved directly (no training needed)."""
    tokenizer = SentencePieceTokenizer.train(grammar_text(300), vocab_size=300)
    directory = tmp_path_factory.mktemp("sp") / "ckpt"
    save_checkpoint(directory, GPT(ModelArgs(vocab_size=tokenizer.vocab_size, **TINY_MODEL)), tokenizer)
    return directory


@pytest.mark.parametrize("damage, fragments", [
    pytest.param(_vocab_directory, ["is corrupt: it is a directory, not a file"], id="directory"),
    pytest.param(lambda p: p.write_bytes(b"\x0a\x05hello" + bytes(range(256))), ["it is not a SentencePiece model"],
                 id="garbage"),
])
def test_damaged_sentencepiece_model(sp_checkpoint, tmp_path, damage, fragments):
    copy = tmp_path / "ckpt"
    shutil.copytree(sp_checkpoint, copy)
    damage(copy / "sentencepiece.model")
    result = generate(copy)
    assert_clean_failure(result, f"tokenizer file {copy / 'sentencepiece.model'}", "restore it from a backup",
                         *fragments)


# ---------------------------------------------------------------- model.safetensors


def rewrite_safetensors(path: Path, edit: Callable[[dict, bytes], bytes | None]) -> None:
    """Rewrite a safetensors file's JSON header (and, if edit returns them, its data bytes)."""
    raw = path.read_bytes()
    length = int.from_bytes(raw[:8], "little")
    header, data = json.loads(raw[8:8 + length]), raw[8 + length:]
    data = edit(header, data) or data
    encoded = json.dumps(header).encode()
    path.write_bytes(len(encoded).to_bytes(8, "little") + encoded + data)


def _dtype(name: str, dtype: str, itemsize: int) -> Callable[[dict, bytes], None]:
    """Declare another dtype, with data_offsets that fit it (so only the dtype is wrong)."""
    def edit(header: dict, data: bytes) -> None:
        entry = header[name]
        begin = entry["data_offsets"][0]
        entry.update(dtype=dtype, data_offsets=[begin, begin + itemsize * int(np.prod(entry["shape"]))])
    return edit


def _shape_off_by_one(header: dict, data: bytes) -> None:
    header["h.1.ln_2.weight"]["shape"] = [33]


def _overlap(header: dict, data: bytes) -> None:
    header["h.0.ln_2.weight"]["data_offsets"] = list(header["h.1.ln_1.weight"]["data_offsets"])


def _beyond_the_file(header: dict, data: bytes) -> None:
    last = max(header, key=lambda k: header[k]["data_offsets"][1] if k != "__metadata__" else -1)
    begin, end = header[last]["data_offsets"]
    header[last]["data_offsets"] = [begin + 8, end + 8]


def _trailing_bytes(header: dict, data: bytes) -> bytes:
    return data + bytes(16)


def _header_longer_than_the_file(path: Path) -> None:
    raw = path.read_bytes()
    path.write_bytes((len(raw) + 1).to_bytes(8, "little") + raw[8:])


@pytest.mark.parametrize("damage, fragments", [
    pytest.param(_dtype("wte.weight", "BF16", 2), ["is corrupt", "'wte.weight' has dtype 'BF16'"], id="bf16"),
    pytest.param(_dtype("h.0.ln_1.weight", "I64", 8), ["is corrupt", "'h.0.ln_1.weight' has dtype 'I64'"], id="i64"),
    pytest.param(_shape_off_by_one, ["does not match config.json", "'h.1.ln_2.weight' has shape [33]",
                                     "needs [32]"], id="shape"),
    pytest.param(_overlap, ["is corrupt", "'h.0.ln_2.weight'", "'h.1.ln_1.weight'", "overlap"], id="overlap"),
    pytest.param(_beyond_the_file, ["is corrupt", "data_offsets", "outside the file"], id="beyond"),
    pytest.param(_trailing_bytes, ["is corrupt", "16 of its", "belong to no tensor"], id="unused-bytes"),
])
def test_damaged_weights_header(run_copy, damage, fragments):
    path = run_copy / "best" / "model.safetensors"
    rewrite_safetensors(path, damage)
    result = generate(run_copy / "best")
    assert_clean_failure(result, str(path), *fragments)
    assert result.stdout == ""


def test_weights_header_longer_than_the_file(run_copy):
    path = run_copy / "best" / "model.safetensors"
    _header_longer_than_the_file(path)
    assert_clean_failure(generate(run_copy / "best"), str(path), "header length", "does not fit in the file")


# ---------------------------------------------------------------- what still works, and saving


def test_a_good_checkpoint_still_loads_and_generates(trained_run):
    config = read_config(trained_run / "best")
    assert config["model"]["n_layer"] == TINY_MODEL["n_layer"] and config["train"]["max_iters"] == 200
    model, tokenizer = mlxgpt.load(trained_run)
    text = "".join(piece.text for piece in generate_text(model, tokenizer, "The ", max_new_tokens=20, seed=0))
    assert len(tokenizer.encode(text)) == 20
    state, optimizer_state = load_training_state(trained_run / "latest")
    assert state["iter"] == 200 and state["world_size"] == 1 and optimizer_state


@pytest.mark.parametrize("shape", [
    dict(), dict(bias=True), dict(tie_embeddings=False), dict(pos_embedding="sinusoidal"),
    dict(n_layer=3, n_head=4, n_embd=64, bias=True, tie_embeddings=False, vocab_size=100, block_size=40),
])
def test_parameter_count_is_known_before_building(shape):
    args = ModelArgs(**{**TINY_MODEL, "vocab_size": 30, **shape})
    assert args.parameter_count() == GPT(args).num_params(non_embedding=False)


def test_absurd_shapes_are_refused_from_the_command_line_too():
    with pytest.raises(MlxgptError, match="n_embd must be at most"):
        ModelArgs(n_embd=2**16, n_head=2)
    with pytest.raises(MlxgptError, match=f"more than mlxgpt's limit of {MAX_PARAMS:,}"):
        ModelArgs(n_layer=256, n_embd=2**14, n_head=2)
    with pytest.raises(MlxgptError, match="n_head must be at least 1"):  # not a ZeroDivisionError
        ModelArgs(n_head=0)


def test_state_schema_is_the_training_loops_state():
    """load_training_state returns only STATE_SCHEMA's fields: a LoopState field missing there would be lost."""
    assert set(STATE_SCHEMA) == {f.name for f in dataclasses.fields(LoopState)}


def _tiny_model(seed: int) -> GPT:
    mx.random.seed(seed)
    model = GPT(ModelArgs(vocab_size=30, **TINY_MODEL))
    mx.eval(model.parameters())
    return model


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_weights_are_never_saved(tmp_path, bad):
    tokenizer = CharTokenizer([chr(ord("a") + i) for i in range(30)])
    good = _tiny_model(0)
    save_checkpoint(tmp_path / "latest", good, tokenizer)
    diverged = _tiny_model(1)
    weight = np.array(diverged.ln_f.weight)
    weight[3] = bad
    diverged.ln_f.weight = mx.array(weight)
    with pytest.raises(MlxgptError, match=f"refusing to save non-finite weights to {tmp_path / 'latest'}"):
        save_checkpoint(tmp_path / "latest", diverged, tokenizer)
    loaded, _ = mlxgpt.load(tmp_path / "latest")
    np.testing.assert_array_equal(np.array(loaded.ln_f.weight), np.array(good.ln_f.weight))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest"]


def test_nan_never_reaches_state_json(tmp_path):
    tokenizer = CharTokenizer([chr(ord("a") + i) for i in range(30)])
    moments = {"m": mx.ones(3)}
    save_checkpoint(tmp_path / "latest", _tiny_model(0), tokenizer, optimizer_state=moments,
                    state={"iter": 1, "best_val_loss": None})
    with pytest.raises(ValueError):  # the loop writes null for "no loss yet": a NaN here is a bug
        save_checkpoint(tmp_path / "latest", _tiny_model(0), tokenizer, optimizer_state=moments,
                        state={"iter": 2, "best_val_loss": float("nan")})
    assert load_training_state(tmp_path / "latest")[0] == {"iter": 1, "best_val_loss": None}
