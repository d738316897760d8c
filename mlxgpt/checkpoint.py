"""Checkpoints: a directory per checkpoint, written atomically, loaded without running code.

    out/<run>/best/    lowest validation loss so far
    out/<run>/latest/  the last save (what --resume continues from)
        model.safetensors      weights (MLX's own safetensors I/O; no pickle)
        config.json            model args, training args, tokenizer kind, mlxgpt version
        <tokenizer files>      e.g. char_vocab.json or sentencepiece.model
        optimizer.safetensors  AdamW moments and step (for --resume)
        state.json             iteration, best val loss, RNG and sampler states (for --resume)

Atomic: everything is written into a temporary sibling directory and fsynced,
then swapped in by two renames. A crash at any point leaves either the old or
the new checkpoint complete (a crash between the renames leaves the old one as
`.<name>.old`, which `resolve_checkpoint` still finds).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import mlx.core as mx
from mlx.utils import tree_flatten, tree_unflatten

import mlxgpt
from mlxgpt.config import ModelArgs
from mlxgpt.errors import MlxgptError
from mlxgpt.model import GPT
from mlxgpt.tokenizers import Tokenizer, load_tokenizer

FORMAT = "mlxgpt-checkpoint"
FORMAT_VERSION = 1
CONFIG = "config.json"
WEIGHTS = "model.safetensors"
OPTIMIZER = "optimizer.safetensors"
STATE = "state.json"


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return  # some platforms cannot open directories; rename is still atomic
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_checkpoint(directory: Path, model: GPT, tokenizer: Tokenizer, *, train_args: dict[str, Any] | None = None,
                    extra: dict[str, Any] | None = None, optimizer_state: Any = None,
                    state: dict[str, Any] | None = None) -> Path:
    """Write a complete checkpoint to `directory`, replacing any old one atomically."""
    directory = Path(directory)
    parent = directory.parent
    parent.mkdir(parents=True, exist_ok=True)
    tmp = parent / f".{directory.name}.tmp-{os.getpid()}"
    old = parent / f".{directory.name}.old"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()

    mx.save_safetensors(str(tmp / WEIGHTS), dict(tree_flatten(model.parameters())), metadata={"format": "mlx"})
    config = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "mlxgpt_version": mlxgpt.__version__,
        "model": vars(model.args).copy(),
        "train": train_args or {},
        "tokenizer": {"kind": tokenizer.kind, "vocab_size": tokenizer.vocab_size,
                      "files": tokenizer.save(tmp)},
        **(extra or {}),
    }
    (tmp / CONFIG).write_text(json.dumps(config, indent=2, ensure_ascii=False), encoding="utf-8")
    if optimizer_state is not None:
        mx.save_safetensors(str(tmp / OPTIMIZER), dict(tree_flatten(optimizer_state)))
    if state is not None:
        (tmp / STATE).write_text(json.dumps(state), encoding="utf-8")
    for path in tmp.iterdir():
        _fsync_file(path)
    _fsync_dir(tmp)

    if directory.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(directory, old)
    # else a crash between these renames may have left `old` as the only complete copy: keep it until tmp is in
    os.replace(tmp, directory)
    _fsync_dir(parent)
    shutil.rmtree(old, ignore_errors=True)
    return directory


def _is_checkpoint(path: Path) -> bool:
    return (path / CONFIG).is_file()


def find_checkpoint(run_dir: Path, name: str) -> Path | None:
    """run_dir/name, or the `.name.old` a save left behind if it died between its renames."""
    for candidate in (run_dir / name, run_dir / f".{name}.old"):
        if _is_checkpoint(candidate):
            return candidate
    return None


def holds_run(run_dir: Path) -> bool:
    """Whether run_dir already holds a checkpoint that a new run would replace."""
    return any(find_checkpoint(run_dir, name) for name in ("best", "latest"))


def resolve_checkpoint(path: Path | str) -> Path:
    """A checkpoint directory as given, or a run directory's best (else latest) checkpoint."""
    path = Path(path)
    if not path.exists():
        raise MlxgptError(f"checkpoint {path} does not exist: train one with `python train.py --data FILE`, "
                          "or pass --checkpoint RUN_DIR")
    if not path.is_dir():
        raise MlxgptError(f"checkpoint {path} is not a directory: pass a run directory such as out/shakespeare")
    if _is_checkpoint(path):
        return path
    found = find_checkpoint(path, "best") or find_checkpoint(path, "latest")
    if found:
        return found
    raise MlxgptError(f"{path} holds no mlxgpt checkpoint (no config.json, best/ or latest/): "
                      "pass the run directory that train.py wrote")


def latest_run(root: Path = Path("out")) -> Path:
    """The most recently saved run under root (for --checkpoint's default)."""
    configs = [p for p in root.glob("*/*/" + CONFIG)] if root.is_dir() else []
    if not configs:
        raise MlxgptError(f"no trained model found under {root}/: train one first "
                          "(`python train.py --data FILE`) or pass --checkpoint DIR")
    return max(configs, key=lambda p: p.stat().st_mtime).parent.parent


def read_config(checkpoint_dir: Path) -> dict[str, Any]:
    path = checkpoint_dir / CONFIG
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        raise MlxgptError(f"{path} is unreadable or corrupt: restore it, or retrain") from None
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise MlxgptError(f"{checkpoint_dir} is not an mlxgpt checkpoint (its config.json is from another program)")
    if config.get("format_version", 0) > FORMAT_VERSION:
        raise MlxgptError(f"{checkpoint_dir} was written by a newer mlxgpt ({config.get('mlxgpt_version')}): upgrade mlxgpt")
    return config


def _load_arrays(path: Path, what: str) -> dict[str, mx.array]:
    if not path.is_file():
        raise MlxgptError(f"{path} is missing: the checkpoint is incomplete ({what}); use another checkpoint or retrain")
    try:
        return mx.load(str(path))
    except Exception:  # MLX raises RuntimeError/ValueError for truncated or garbage files
        raise MlxgptError(f"{path} is corrupt ({what} could not be read): use another checkpoint or retrain") from None


def load_model(checkpoint_dir: Path, config: dict[str, Any] | None = None) -> GPT:
    config = config or read_config(checkpoint_dir)
    try:
        args = ModelArgs.from_dict(config["model"])
    except (KeyError, TypeError):
        raise MlxgptError(f"{checkpoint_dir / CONFIG} has no valid model section: the checkpoint is corrupt") from None
    model = GPT(args)
    weights = _load_arrays(checkpoint_dir / WEIGHTS, "model weights")
    try:
        model.load_weights(list(weights.items()), strict=True)
    except ValueError as exc:
        raise MlxgptError(f"{checkpoint_dir / WEIGHTS} does not match config.json ({exc}); the checkpoint is corrupt") from None
    mx.eval(model.parameters())
    model.eval()
    return model


def load_checkpoint_tokenizer(checkpoint_dir: Path, config: dict[str, Any] | None = None) -> Tokenizer:
    config = config or read_config(checkpoint_dir)
    tokenizer = load_tokenizer(config.get("tokenizer", {}).get("kind", "?"), checkpoint_dir)
    expected = config.get("model", {}).get("vocab_size")
    if expected is not None and tokenizer.vocab_size != expected:  # else generation would index out of range
        raise MlxgptError(f"{checkpoint_dir} is corrupt: its tokenizer has {tokenizer.vocab_size} tokens but the "
                          f"model's vocab_size is {expected}; restore the tokenizer files or retrain")
    return tokenizer


def load(path: Path | str) -> tuple[GPT, Tokenizer]:
    """(model, tokenizer) from a run directory or a checkpoint directory, ready to generate."""
    checkpoint_dir = resolve_checkpoint(path)
    config = read_config(checkpoint_dir)
    return load_model(checkpoint_dir, config), load_checkpoint_tokenizer(checkpoint_dir, config)


def load_training_state(checkpoint_dir: Path) -> tuple[dict[str, Any], Any]:
    """(state.json contents, optimizer state tree) for --resume."""
    path = checkpoint_dir / STATE
    if not path.is_file():
        raise MlxgptError(f"{checkpoint_dir} has no {STATE}: it cannot be resumed (only `latest/` can)")
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        raise MlxgptError(f"{path} is corrupt: cannot resume; start a new run with another --out") from None
    optimizer_state = tree_unflatten(list(_load_arrays(checkpoint_dir / OPTIMIZER, "optimizer state").items()))
    return state, optimizer_state

