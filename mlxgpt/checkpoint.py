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

Loading checks every file before building anything from it: config.json and
state.json against their schemas (config.MetadataFile), the safetensors headers
against the model that config.json describes. A damaged or forged checkpoint
gives one line naming the file and the field or tensor, never a traceback, a
huge allocation or a silently different model. Saving is as strict: no NaN or
Infinity is ever written.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path
from typing import Any, Callable

import mlx.core as mx
from mlx.utils import tree_flatten, tree_unflatten

import mlxgpt
from mlxgpt.config import MetadataFile, ModelArgs, TrainArgs, parse_json
from mlxgpt.errors import MlxgptError
from mlxgpt.files import fsync_dir
from mlxgpt.model import GPT
from mlxgpt.seq2seq.data import PairVocabulary
from mlxgpt.seq2seq.model import EncoderDecoder, Seq2SeqArgs
from mlxgpt.tokenizers import TOKENIZERS, Tokenizer, load_tokenizer

FORMAT = "mlxgpt-checkpoint"
FORMAT_VERSION = 1
CONFIG = "config.json"
WEIGHTS = "model.safetensors"
OPTIMIZER = "optimizer.safetensors"
STATE = "state.json"

# config.json's top level and tokenizer section (the model and train sections are ModelArgs's and TrainArgs's)
CONFIG_SCHEMA = {"format_version": int, "mlxgpt_version": str, "architecture": str, "model": dict, "train": dict,
                 "tokenizer": dict, "preset": str, "data": str | None, "data_sha256": str | None, "data_format": str,
                 "init_from": dict}
# What a checkpoint holds: the GPT (and every checkpoint from before the field), or the encoder-decoder
# of mlxgpt/seq2seq. Each command reads only the kind it can use (read_config's `architecture`).
ARCHITECTURES = ("gpt", "encoder-decoder")
DESCRIBED = {"gpt": "a GPT (decoder-only)", "encoder-decoder": "an encoder-decoder (mlxgpt/seq2seq)"}
TOKENIZER_SCHEMA = {"kind": str, "vocab_size": int, "files": list[str]}

# state.json, as the training loop writes it (training.LoopState); null: no evaluation yet
STATE_SCHEMA = {"iter": int, "best_val_loss": float | None, "best_val_bpc": float | None,
                "last_val_loss": float | None, "evaluated_at": int, "world_size": int,
                "evals_without_improvement": int, "elapsed_s": float}
STATE_LIMITS = {"iter": (0, None), "evaluated_at": (-1, None), "world_size": (1, None),
                "evals_without_improvement": (0, None), "elapsed_s": (0, None)}

# safetensors: the dtypes mlxgpt writes (float32 everywhere; MLX stores AdamW's step counter as uint64)
DTYPE_SIZES = {"F32": 4, "U64": 8}
MAX_HEADER_BYTES = 100 * 2**20


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def save_checkpoint(directory: Path, model: GPT | EncoderDecoder, tokenizer: Tokenizer | PairVocabulary, *, train_args: dict[str, Any] | None = None,
                    extra: dict[str, Any] | None = None, optimizer_state: Any = None,
                    state: dict[str, Any] | None = None) -> Path:
    """Write a complete checkpoint to `directory`, replacing any old one atomically."""
    directory = Path(directory)
    parent = directory.parent
    parent.mkdir(parents=True, exist_ok=True)
    tmp = parent / f".{directory.name}.tmp-{os.getpid()}"
    old = parent / f".{directory.name}.old"
    weights = dict(tree_flatten(model.parameters()))
    if not mx.all(mx.stack([mx.all(mx.isfinite(w)) for w in weights.values()])).item():
        raise MlxgptError(f"refusing to save non-finite weights to {directory}: training diverged (NaN or Inf); "
                          "lower --lr, or resume from the last checkpoint")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()

    mx.save_safetensors(str(tmp / WEIGHTS), weights, metadata={"format": "mlx"})
    config = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "mlxgpt_version": mlxgpt.__version__,
        "architecture": "encoder-decoder" if isinstance(model, EncoderDecoder) else "gpt",
        "model": vars(model.args).copy(),
        "train": train_args or {},
        "tokenizer": {"kind": tokenizer.kind, "vocab_size": tokenizer.vocab_size,
                      "files": tokenizer.save(tmp)},
        **(extra or {}),
    }
    # allow_nan=False: NaN and Infinity are not JSON, and the loader refuses them
    (tmp / CONFIG).write_text(json.dumps(config, indent=2, ensure_ascii=False, allow_nan=False), encoding="utf-8")
    if optimizer_state is not None:
        mx.save_safetensors(str(tmp / OPTIMIZER), dict(tree_flatten(optimizer_state)))
    if state is not None:
        (tmp / STATE).write_text(json.dumps(state, allow_nan=False), encoding="utf-8")
    for path in tmp.iterdir():
        _fsync_file(path)
    fsync_dir(tmp)

    if directory.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(directory, old)
    # else a crash between these renames may have left `old` as the only complete copy: keep it until tmp is in
    os.replace(tmp, directory)
    fsync_dir(parent)
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


def read_config(checkpoint_dir: Path, architecture: str = "gpt") -> dict[str, Any]:
    """config.json, checked against its schema before anything is built from it (the one
    check of config.json, made on every load); returned with its checked values. A checkpoint
    of another `architecture` than the caller's is refused in one line."""
    file = MetadataFile(checkpoint_dir / CONFIG, f"restore {CONFIG} from a backup, or retrain",
                        unreadable="is unreadable or corrupt")
    config = file.read()
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise MlxgptError(f"{checkpoint_dir} is not an mlxgpt checkpoint (its config.json is from another program)")
    version = file.check(config, {"format_version": int}, required=["format_version"],
                         limits={"format_version": (1, None)})["format_version"]
    if version > FORMAT_VERSION:  # before the other checks: a newer format may have other fields
        raise MlxgptError(f"{checkpoint_dir} was written by a newer mlxgpt ({config.get('mlxgpt_version')!r}): "
                          "upgrade mlxgpt")
    config = {**config, **file.check(config, CONFIG_SCHEMA, required=["model", "train", "tokenizer"])}
    saved = config.get("architecture", "gpt")
    if saved not in ARCHITECTURES:
        raise MlxgptError(f"{checkpoint_dir} holds a model of architecture {saved!r}, which this mlxgpt does not know: "
                          "upgrade mlxgpt")
    if saved != architecture:
        raise MlxgptError(f"{checkpoint_dir} holds {DESCRIBED[saved]}, and this command needs {DESCRIBED[architecture]}: "
                          "pass a checkpoint of that kind")
    args = (ModelArgs if saved == "gpt" else Seq2SeqArgs).from_saved(config["model"], file)
    kinds = TOKENIZERS if saved == "gpt" else {PairVocabulary.kind: PairVocabulary}
    train = TrainArgs.from_saved(config["train"], file)
    tokenizer = file.check(config["tokenizer"], TOKENIZER_SCHEMA, section="tokenizer", required=["kind", "files"])
    if tokenizer.get("vocab_size", args.vocab_size) != args.vocab_size:
        raise file.error(f"tokenizer.vocab_size ({tokenizer['vocab_size']}) differs from model.vocab_size "
                         f"({args.vocab_size})")
    if tokenizer["kind"] not in kinds:
        raise MlxgptError(f"{checkpoint_dir} uses tokenizer {tokenizer['kind']!r}, which this mlxgpt does not know: "
                          "upgrade mlxgpt")
    for name in tokenizer["files"]:
        if name in ("", ".", "..") or any(c in name for c in "/\\\0"):
            raise file.error(f"tokenizer.files must name files in the checkpoint directory, got {name!r}")
    return {**config, "architecture": saved, "model": vars(args).copy(), "train": train, "tokenizer": tokenizer}


def _float32(name: str) -> str:
    return "F32"


def _optimizer_dtype(name: str) -> str:
    return "U64" if name.rsplit(".", 1)[-1] == "step" else "F32"


def _check_safetensors(path: Path, dtype_of: Callable[[str], str],
                       shapes: dict[str, tuple[int, ...]] | None = None) -> None:
    """Check a safetensors file's header before MLX reads it: bounded, every tensor of the
    dtype mlxgpt writes and (given `shapes`) of the expected name and shape, and the tensors'
    data_offsets tiling the data region exactly (in range, consistent, no overlap, no gap)."""
    def corrupt(problem: str) -> MlxgptError:
        return MlxgptError(f"{path} is corrupt: {problem}; use another checkpoint or retrain")

    size = path.stat().st_size
    with open(path, "rb") as f:
        length = int.from_bytes(f.read(8), "little")
        if size < 8 or length > min(MAX_HEADER_BYTES, size - 8):
            raise corrupt(f"its header length ({length:,} bytes) does not fit in the file ({size:,} bytes)")
        try:
            header = parse_json(f.read(length))
        except (ValueError, RecursionError):  # also UnicodeDecodeError
            raise corrupt("its header is not valid JSON") from None
    if not isinstance(header, dict):
        raise corrupt("its header is not a JSON object")
    header.pop("__metadata__", None)
    if shapes is not None and header.keys() != shapes.keys():
        name = min(header.keys() ^ shapes.keys())
        raise MlxgptError(f"{path} does not match {CONFIG}: tensor {name!r} is "
                          f"{'missing' if name in shapes else 'not part of the model'}; the checkpoint is corrupt")
    data_size, spans = size - 8 - length, []
    for name, entry in header.items():
        entry = entry if isinstance(entry, dict) else {}
        dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
        if dtype != dtype_of(name):
            raise corrupt(f"tensor {name!r} has dtype {dtype!r}, mlxgpt writes {dtype_of(name)!r}")
        if not (isinstance(shape, list) and all(type(d) is int and d >= 0 for d in shape)):
            raise corrupt(f"tensor {name!r} has shape {shape!r}")
        if shapes is not None and tuple(shape) != shapes[name]:
            raise MlxgptError(f"{path} does not match {CONFIG}: tensor {name!r} has shape {shape}, the model "
                              f"needs {list(shapes[name])}; the checkpoint is corrupt")
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(type(o) is int for o in offsets)
                and 0 <= offsets[0] <= offsets[1] <= data_size):
            raise corrupt(f"tensor {name!r} has data_offsets {offsets!r}, outside the file's {data_size:,} data bytes")
        if offsets[1] - offsets[0] != DTYPE_SIZES[dtype] * math.prod(shape):
            raise corrupt(f"tensor {name!r} has {offsets[1] - offsets[0]:,} bytes of data; {dtype} {shape} needs "
                          f"{DTYPE_SIZES[dtype] * math.prod(shape):,}")
        spans.append((offsets[0], offsets[1], name))
    spans.sort()
    for (_, end, name), (begin, _, next_name) in zip(spans, spans[1:]):
        if begin < end:
            raise corrupt(f"tensors {name!r} and {next_name!r} overlap (data_offsets)")
    unused = data_size - sum(end - begin for begin, end, _ in spans)  # no overlaps: 0 means the data is tiled
    if unused:
        raise corrupt(f"{unused:,} of its {data_size:,} data bytes belong to no tensor (data_offsets)")


def _load_arrays(path: Path, what: str, dtype_of: Callable[[str], str],
                 shapes: dict[str, tuple[int, ...]] | None = None) -> dict[str, mx.array]:
    """A safetensors file that mlxgpt wrote, checked (_check_safetensors) before MLX reads it."""
    if not path.is_file():
        raise MlxgptError(f"{path} is missing: the checkpoint is incomplete ({what}); use another checkpoint or retrain")
    _check_safetensors(path, dtype_of, shapes)
    try:
        return mx.load(str(path))
    except Exception:  # MLX raises RuntimeError/ValueError for files it cannot read
        raise MlxgptError(f"{path} is corrupt ({what} could not be read): use another checkpoint or retrain") from None


def load_model(checkpoint_dir: Path, config: dict[str, Any] | None = None) -> GPT | EncoderDecoder:
    """The model, from a config that read_config checked (a GPT unless the config says otherwise).
    GPT() only builds MLX's lazy graph: nothing is allocated before the weights file's header
    matches the model's parameters."""
    config = config or read_config(checkpoint_dir)
    if config.get("architecture", "gpt") == "encoder-decoder":
        model = EncoderDecoder(Seq2SeqArgs(**config["model"]))
    else:
        model = GPT(ModelArgs.from_dict(config["model"]))
    shapes = {name: tuple(w.shape) for name, w in tree_flatten(model.parameters())}
    weights = _load_arrays(checkpoint_dir / WEIGHTS, "model weights", _float32, shapes)
    try:
        model.load_weights(list(weights.items()), strict=True)
    except ValueError as exc:  # MLX's message may span lines (it lists missing parameters)
        raise MlxgptError(f"{checkpoint_dir / WEIGHTS} does not match config.json ({' '.join(str(exc).split())}); "
                          "the checkpoint is corrupt") from None
    mx.eval(model.parameters())
    model.eval()
    return model


def load_checkpoint_tokenizer(checkpoint_dir: Path, config: dict[str, Any] | None = None) -> Tokenizer | PairVocabulary:
    config = config or read_config(checkpoint_dir)
    kind = config["tokenizer"]["kind"]
    tokenizer = PairVocabulary.load(checkpoint_dir) if kind == PairVocabulary.kind else load_tokenizer(kind, checkpoint_dir)
    expected = config["model"]["vocab_size"]
    if tokenizer.vocab_size != expected:  # else generation would index out of range
        raise MlxgptError(f"{checkpoint_dir} is corrupt: its tokenizer has {tokenizer.vocab_size} tokens but the "
                          f"model's vocab_size is {expected}; restore the tokenizer files or retrain")
    return tokenizer


def load(path: Path | str, architecture: str = "gpt") -> tuple[GPT, Tokenizer]:
    """(model, tokenizer) from a run directory or a checkpoint directory, ready to generate;
    architecture="encoder-decoder": (EncoderDecoder, PairVocabulary)."""
    checkpoint_dir = resolve_checkpoint(path)
    config = read_config(checkpoint_dir, architecture)
    return load_model(checkpoint_dir, config), load_checkpoint_tokenizer(checkpoint_dir, config)


def load_training_state(checkpoint_dir: Path) -> tuple[dict[str, Any], Any]:
    """(state.json's checked contents, optimizer state tree) for --resume. Only the fields of
    STATE_SCHEMA come back (iter is required; the others default in training.LoopState)."""
    path = checkpoint_dir / STATE
    if not path.exists():
        raise MlxgptError(f"{checkpoint_dir} has no {STATE}: it cannot be resumed (only `latest/` can)")
    file = MetadataFile(path, "--resume cannot continue from it; start a new run with another --out")
    state = file.check(file.read(), STATE_SCHEMA, required=["iter"], limits=STATE_LIMITS)
    optimizer_state = tree_unflatten(list(_load_arrays(checkpoint_dir / OPTIMIZER, "optimizer state",
                                                       _optimizer_dtype).items()))
    return state, optimizer_state
