"""`mlxgpt import-nanogpt CKPT.pt [META.pkl] OUT_RUN`: a nanoGPT checkpoint as an mlxgpt run.

nanoGPT (karpathy/nanoGPT) saves `torch.save(checkpoint, 'ckpt.pt')` with

    checkpoint = {'model': state_dict, 'optimizer': ..., 'model_args': dict(n_layer, n_head, n_embd,
                  block_size, bias, vocab_size, dropout), 'iter_num': int, 'best_val_loss': tensor,
                  'config': {...}}

and a character-level dataset's vocabulary as `meta.pkl` = pickle of {'vocab_size', 'itos', 'stoi'}.
Its GPT is mlxgpt's default model (learned positions, pre-LN blocks, LayerNorm eps 1e-5, exact
GELU, tied embeddings), and its parameter names are mlxgpt's with `transformer.` in front, in the
same (out, in) Linear layout: the import is a rename, checked tensor by tensor.

Both files are pickles, and unpickling runs whatever code the file names. Neither is unpickled
that way here: ckpt.pt only with torch.load(weights_only=True) (tensors and plain containers),
meta.pkl with an unpickler that admits no class or function at all, and its result is then
checked to be dicts of strings and integers. Every problem is one MlxgptError line.
"""

from __future__ import annotations

import io
import math
import os
import pickle
import re
import stat
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from mlxgpt.errors import MlxgptError

PREFIX = "_orig_mod."  # torch.compile's wrapper: nanoGPT saves the compiled model's state_dict
MAX_META_BYTES = 16 * 2**20  # a character vocabulary pickles to kilobytes
REQUIRED_ARGS = ("n_layer", "n_head", "n_embd", "block_size", "vocab_size")
GPT2_VOCAB = (50257, 50304)  # GPT-2's BPE, and nanoGPT's padding of it to a multiple of 64
_MASK = re.compile(r"transformer\.h\.\d+\.attn\.bias")  # the causal-mask buffer (PyTorch < 2.0), not a weight
_INSTALL = "pip install -e '.[interop]' (or pip install torch)"
# nanoGPT's train.py settings -> mlxgpt's TrainArgs (what a fine-tune with --init-from starts from)
TRAIN_NAMES = {"batch_size": "batch_size", "gradient_accumulation_steps": "grad_accum", "max_iters": "max_iters",
               "learning_rate": "lr", "min_lr": "min_lr", "warmup_iters": "warmup_iters",
               "lr_decay_iters": "lr_decay_iters", "beta1": "beta1", "beta2": "beta2",
               "weight_decay": "weight_decay", "grad_clip": "grad_clip", "eval_interval": "eval_interval",
               "eval_iters": "eval_iters", "log_interval": "log_interval"}


# ---------------------------------------------------------------- reading the files


def _regular_file(path: Path, what: str) -> int:
    """The size of `path`, refusing (one line) what is missing, a directory, a FIFO or a device:
    opening a FIFO without a writer blocks forever."""
    try:
        mode = os.stat(path)
    except FileNotFoundError:
        raise MlxgptError(f"{what} {path} does not exist") from None
    except OSError as exc:
        raise MlxgptError(f"cannot read {what} {path} ({exc.strerror or exc})") from None
    if stat.S_ISDIR(mode.st_mode):
        raise MlxgptError(f"{what} {path} is a directory: pass the file itself")
    if not stat.S_ISREG(mode.st_mode):
        raise MlxgptError(f"{what} {path} is not a regular file")
    return mode.st_size


def _import_torch() -> Any:
    try:
        import torch
    except ImportError:
        raise MlxgptError(f"import-nanogpt needs PyTorch to read nanoGPT's ckpt.pt: {_INSTALL}") from None
    except Exception as exc:  # a broken install (missing shared library, ...)
        raise MlxgptError(f"PyTorch is installed but cannot be imported ({type(exc).__name__}: "
                          f"{str(exc).splitlines()[0] if str(exc) else ''}): reinstall it, {_INSTALL}") from None
    return torch


def load_checkpoint_file(path: Path) -> dict[str, Any]:
    """ckpt.pt through torch.load(weights_only=True): tensors and plain containers only, so a
    forged file that names a function to call is refused before anything runs."""
    _regular_file(path, "checkpoint")
    torch = _import_torch()
    try:
        with warnings.catch_warnings():  # e.g. "Detected pickle protocol 4": one line is all the user sees
            warnings.simplefilter("ignore")
            raw = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"GLOBAL ([\w.]+)", str(exc))
        if found:
            raise MlxgptError(f"{path} refers to Python code ({found.group(1)}) that unpickling would run: refused "
                              "(mlxgpt reads only tensors and plain data from a checkpoint); if it is a nanoGPT "
                              "checkpoint, it is not one that nanoGPT's train.py wrote") from None
        raise MlxgptError(f"{path} is not a PyTorch checkpoint of tensors and plain data (torch.load with "
                          "weights_only=True refused it): pass the ckpt.pt that nanoGPT's train.py wrote") from None
    except MemoryError:
        raise MlxgptError(f"{path} does not fit in memory") from None
    except Exception as exc:  # not a torch file at all: torch raises RuntimeError, EOFError, KeyError, ...
        detail = str(exc).splitlines()[0][:120] if str(exc).strip() else ""
        raise MlxgptError(f"{path} is not a PyTorch checkpoint (torch.load cannot read it: {type(exc).__name__}"
                          f"{': ' + detail if detail else ''}): pass the ckpt.pt that nanoGPT's train.py "
                          "wrote") from None
    if not (isinstance(raw, dict) and isinstance(raw.get("model"), dict) and isinstance(raw.get("model_args"), dict)):
        has = (", ".join(ascii(k)[:40] for k in sorted(map(str, raw))[:6]) if isinstance(raw, dict)
               else f"a {type(raw).__name__}")
        raise MlxgptError(f"{path} is not a nanoGPT checkpoint: it has no 'model' and 'model_args' entries "
                          f"(it holds {has or 'nothing'}); pass the ckpt.pt that nanoGPT's train.py wrote")
    return raw


class _Refused(pickle.UnpicklingError):
    """find_class was asked for a class or function: the file is not plain data."""


class _PlainUnpickler(pickle.Unpickler):
    """Admits no class and no function: only what pickle builds by itself (dicts, lists, strings,
    numbers, ...). REDUCE, BUILD and NEWOBJ need a callable or class, which only find_class (or
    persistent_load, not defined) could give."""

    def find_class(self, module: str, name: str) -> Any:
        raise _Refused(ascii(f"{module}.{name}")[:100])  # ascii: the names are the file's, one line


def _is_plain(value: Any, depth: int = 0) -> bool:
    """A str or int, or (at the top two levels) a dict of them: nothing else is in a meta.pkl.
    Bounded depth: memoised references can make a DAG that a deep walk would visit exponentially."""
    if type(value) in (str, int):
        return True
    return (type(value) is dict and depth < 2
            and all(type(k) in (str, int) and _is_plain(v, depth + 1) for k, v in value.items()))


def read_meta(path: Path) -> dict[str, Any]:
    """meta.pkl, unpickled without running anything, and checked to be dicts of strings and ints."""
    size = _regular_file(path, "meta.pkl file")
    if size > MAX_META_BYTES:
        raise MlxgptError(f"{path} has {size:,} bytes, far more than a character vocabulary's meta.pkl "
                          f"(limit {MAX_META_BYTES:,}): pass the meta.pkl of the character-level dataset")
    refused = (f"{path} holds something other than dicts, strings and integers (a character vocabulary's "
               "meta.pkl holds nothing else): refused without running it")
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_META_BYTES + 1)
        meta = _PlainUnpickler(io.BytesIO(raw)).load()
    except OSError as exc:
        raise MlxgptError(f"cannot read {path} ({exc.strerror or exc})") from None
    except _Refused as exc:
        raise MlxgptError(f"{refused} (it names {exc})") from None
    except pickle.UnpicklingError as exc:
        raise MlxgptError(f"{path} is not a readable pickle ({str(exc)[:80]}): pass nanoGPT's meta.pkl") from None
    except (EOFError, ValueError, TypeError, KeyError, IndexError, AttributeError, RecursionError, MemoryError,
            UnicodeDecodeError, OverflowError) as exc:  # cut short or garbage: pickle's errors are many
        raise MlxgptError(f"{path} is not a readable pickle ({type(exc).__name__}): pass nanoGPT's meta.pkl") from None
    if not (type(meta) is dict and _is_plain(meta)):
        raise MlxgptError(refused)
    return meta


def vocabulary(meta: dict[str, Any], path: Path) -> list[str]:
    """The characters of a meta.pkl, in id order, checked as CharTokenizer.load checks its file."""
    def bad(problem: str) -> MlxgptError:
        return MlxgptError(f"{path} is not a character vocabulary: {problem}; pass the meta.pkl of the "
                           "character-level dataset the model was trained on")

    itos = meta.get("itos")
    if itos is None and isinstance(meta.get("stoi"), dict):
        itos = {i: c for c, i in meta["stoi"].items()}
    if not isinstance(itos, dict) or not itos:
        raise bad("it has no 'itos' dict")
    if any(type(i) is not int for i in itos) or sorted(itos) != list(range(len(itos))):
        raise bad(f"the ids of 'itos' are not 0 to {len(itos) - 1}")
    chars, first = [], {}
    for i in range(len(itos)):
        c = itos[i]
        if type(c) is not str or len(c) != 1 or "\ud800" <= c <= "\udfff":
            raise bad(f"itos[{i}] is {c!r}, not one character (mlxgpt imports character-level vocabularies)")
        if c in first:
            raise bad(f"itos[{i}] repeats itos[{first[c]}] ({c!r}): each character needs its own id")
        first[c] = i
        chars.append(c)
    stated = meta.get("vocab_size", len(chars))
    if stated != len(chars):
        raise bad(f"its vocab_size ({stated}) differs from the {len(chars)} characters of its itos")
    stoi = meta.get("stoi")
    if isinstance(stoi, dict) and any(stoi.get(c) != i for i, c in enumerate(chars)):
        raise bad("its 'stoi' does not invert its 'itos'")
    return chars


# ---------------------------------------------------------------- the model


def model_args(raw: dict[str, Any], weights: dict[str, Any], path: Path):
    """mlxgpt's ModelArgs for the checkpoint's model_args (the other fields at their defaults,
    which are nanoGPT's architecture)."""
    from mlxgpt.config import ModelArgs

    given = raw["model_args"]
    missing = [name for name in REQUIRED_ARGS if name not in given]
    if missing:
        raise MlxgptError(f"{path}: model_args lacks {', '.join(missing)}; it is not a checkpoint that nanoGPT's "
                          "train.py wrote")
    values = {}
    for name in REQUIRED_ARGS:
        value = given[name]
        if type(value) is not int:
            raise MlxgptError(f"{path}: model_args {name} must be an integer, got {value!r}")
        values[name] = value
    bias = given.get("bias", "ln_f.bias" in weights)  # GPTConfig's field; inferred if an old file lacks it
    if type(bias) is not bool:
        raise MlxgptError(f"{path}: model_args bias must be true or false, got {bias!r}")
    dropout = given.get("dropout", 0.0)
    if type(dropout) not in (int, float) or not 0 <= dropout < 1:
        raise MlxgptError(f"{path}: model_args dropout must be a number in [0, 1), got {dropout!r}")
    try:
        return ModelArgs(**values, dropout=float(dropout), bias=bias,
                         tie_embeddings="lm_head.weight" not in weights)
    except MlxgptError as exc:
        raise MlxgptError(f"{path}: model_args describe a model mlxgpt cannot build ({exc})") from None


def rename(state_dict: dict[str, Any], path: Path, torch: Any) -> dict[str, np.ndarray]:
    """nanoGPT's state_dict as float32 numpy arrays under mlxgpt's names: `_orig_mod.` and
    `transformer.` dropped, the causal-mask buffers skipped, a tied lm_head left out."""
    weights: dict[str, np.ndarray] = {}
    for key, tensor in state_dict.items():
        name = key[len(PREFIX):] if isinstance(key, str) and key.startswith(PREFIX) else key
        if not isinstance(name, str) or not isinstance(tensor, torch.Tensor):
            raise MlxgptError(f"{path}: model entry {key!r} is not a named tensor; the checkpoint is not nanoGPT's")
        if _MASK.fullmatch(name) and tensor.dim() == 4:
            continue  # the causal mask nanoGPT registers as a buffer without flash attention
        if not (tensor.is_floating_point() and tensor.layout == torch.strided):
            raise MlxgptError(f"{path}: weight {key!r} is {tensor.dtype} ({tensor.layout}), not a dense float "
                              "tensor; the checkpoint is not nanoGPT's")
        array = tensor.detach().to(torch.float32).cpu().numpy()
        if not np.isfinite(array).all():
            raise MlxgptError(f"{path}: weight {key!r} holds NaN or Inf (the nanoGPT run diverged): import an "
                              "earlier checkpoint")
        name = name.removeprefix("transformer.")
        if name in weights:
            raise MlxgptError(f"{path}: weight {name!r} appears twice (with and without {PREFIX!r})")
        weights[name] = array
    head, wte = weights.get("lm_head.weight"), weights.get("wte.weight")
    if head is not None and wte is not None and head.shape == wte.shape and np.array_equal(head, wte):
        del weights["lm_head.weight"]  # tied, as in nanoGPT: mlxgpt stores the embedding once
    return weights


def build_model(args, weights: dict[str, np.ndarray], path: Path):
    """GPT(args) with the checkpoint's weights, after checking every name and shape."""
    import mlx.core as mx
    from mlx.utils import tree_flatten

    from mlxgpt.model import GPT

    model = GPT(args)
    expected = {name: tuple(w.shape) for name, w in tree_flatten(model.parameters())}
    shape = (f"n_layer {args.n_layer}, n_head {args.n_head}, n_embd {args.n_embd}, block_size {args.block_size}, "
             f"vocab_size {args.vocab_size}, bias {args.bias}")

    def nano(name: str) -> str:
        return name if name == "lm_head.weight" else f"transformer.{name}"

    for name in expected:
        if name not in weights:
            raise MlxgptError(f"{path} lacks weight {nano(name)!r}, which its model_args ({shape}) need: the "
                              "checkpoint does not match its model_args")
    for name, array in weights.items():
        if name not in expected:
            raise MlxgptError(f"{path} holds weight {nano(name)!r}, which a nanoGPT GPT of its model_args "
                              f"({shape}) does not have")
        if tuple(array.shape) != expected[name]:
            raise MlxgptError(f"{path}: weight {nano(name)!r} has shape {tuple(array.shape)}, its model_args "
                              f"({shape}) need {expected[name]}")
    model.load_weights([(name, mx.array(array)) for name, array in weights.items()], strict=True)
    mx.eval(model.parameters())
    model.eval()
    return model


def train_args(config: Any) -> dict[str, Any]:
    """nanoGPT's training settings as mlxgpt's TrainArgs fields (what --init-from starts from),
    or {} (mlxgpt's defaults) if they do not make valid TrainArgs."""
    from mlxgpt.config import TrainArgs, field_types

    if not isinstance(config, dict):
        return {}
    types = field_types(TrainArgs)
    values: dict[str, Any] = {}
    for theirs, ours in TRAIN_NAMES.items():
        value, allowed = config.get(theirs), set(getattr(types[ours], "__args__", (types[ours],)))
        if type(value) is int and float in allowed and int not in allowed:
            value = float(value)  # e.g. grad_clip = 1
        if type(value) in allowed - {type(None)} and (type(value) is not float or math.isfinite(value)):
            values[ours] = value
    if config.get("decay_lr") is False and "lr" in values:  # a constant learning rate
        values.update(min_lr=values["lr"], warmup_iters=0)
    try:
        TrainArgs(**values).validate()
    except (MlxgptError, TypeError):
        return {}
    return values


# ---------------------------------------------------------------- the import


def _number(value: Any) -> float | None:
    """best_val_loss: a 0-dim tensor in nanoGPT, or a float; None if neither or not finite."""
    try:
        value = float(value.item() if hasattr(value, "item") else value)
    except (TypeError, ValueError, RuntimeError):
        return None
    return value if math.isfinite(value) else None


def _data_record(data: str, tokenizer) -> dict[str, Any]:
    """config.json's data fields, as training records them: a path (or packaged dataset name) that
    eval can read again, and the text's SHA-256; the text must be in the model's vocabulary."""
    import hashlib

    from mlxgpt.data import read_text, rereadable_path, resolve_data

    path = resolve_data(data)
    text = read_text(path)
    unknown = sorted(set(text) - set(tokenizer.chars))
    if unknown:
        shown = " ".join(ascii(c) for c in unknown[:10]) + (" ..." if len(unknown) > 10 else "")
        raise MlxgptError(f"--data {data} has {len(unknown)} character(s) that the model's vocabulary (meta.pkl) "
                          f"lacks: {shown}; pass the text the nanoGPT model was trained on")
    again = rereadable_path(path)
    return {"data": str(again) if again else None, "data_sha256": hashlib.sha256(text.encode("utf-8")).hexdigest()}


def import_nanogpt(checkpoint: str, meta: str | None, out: str, data: str | None = None,
                   overwrite: bool = False) -> Path:
    """Write nanoGPT's `checkpoint` (with the vocabulary in `meta`, default meta.pkl beside it) as the
    run directory `out` (its best/ checkpoint); returns the checkpoint directory."""
    from mlxgpt.checkpoint import save_checkpoint
    from mlxgpt.rundir import RunLock, check_writable, refuse_existing_run
    from mlxgpt.tokenizers.char import CharTokenizer

    ckpt_path, out_dir = Path(checkpoint).expanduser(), Path(out).expanduser()
    if ckpt_path.is_dir() and (ckpt_path / "ckpt.pt").is_file():  # nanoGPT's out_dir, e.g. out-shakespeare-char
        ckpt_path = ckpt_path / "ckpt.pt"
    how = "add --overwrite to replace it"
    check_writable(out_dir)  # before the (slow) load: someone else's directory, or a run not to replace
    if not overwrite:
        refuse_existing_run(out_dir, how)
    _regular_file(ckpt_path, "checkpoint")
    with open(ckpt_path, "rb") as f:
        magic = f.read(4)
    if not (magic.startswith(b"PK\x03\x04") or magic[:1] == b"\x80"):  # torch.save's zip, or its older pickle
        raise MlxgptError(f"{ckpt_path} is not a PyTorch checkpoint (torch.save writes a zip archive): pass the "
                          "ckpt.pt that nanoGPT's train.py wrote")
    if meta is None:
        beside = ckpt_path.with_name("meta.pkl")
        if not beside.is_file():
            raise MlxgptError(f"no meta.pkl beside {ckpt_path}: without one nanoGPT encodes text with GPT-2's BPE "
                              "(tiktoken), which mlxgpt does not have; pass the meta.pkl of the character-level "
                              "dataset the model was trained on, e.g. data/shakespeare_char/meta.pkl")
        meta_path = beside
    else:
        meta_path = Path(meta).expanduser()
    chars = vocabulary(read_meta(meta_path), meta_path)  # before torch: quick, and refuses a forged file first

    torch = _import_torch()
    raw = load_checkpoint_file(ckpt_path)
    weights = rename(raw["model"], ckpt_path, torch)
    args = model_args(raw, weights, ckpt_path)
    if args.vocab_size != len(chars):
        gpt2 = (f" ({args.vocab_size} is GPT-2's BPE vocabulary{', padded' if args.vocab_size == 50304 else ''}, "
                "which mlxgpt does not have)") if args.vocab_size in GPT2_VOCAB else ""
        raise MlxgptError(f"{ckpt_path} has vocab_size {args.vocab_size}{gpt2} but {meta_path} has {len(chars)} "
                          "characters: pass the meta.pkl of the dataset this model was trained on")
    model = build_model(args, weights, ckpt_path)
    tokenizer = CharTokenizer(chars)
    nano_config = raw.get("config") if isinstance(raw.get("config"), dict) else {}
    source = {"nanogpt": str(ckpt_path.resolve()), "meta": str(meta_path.resolve()),
              "iter_num": raw["iter_num"] if type(raw.get("iter_num")) is int else None,
              "best_val_loss": _number(raw.get("best_val_loss")),
              "dataset": nano_config.get("dataset") if isinstance(nano_config.get("dataset"), str) else None}
    record = _data_record(data, tokenizer) if data else {"data": None, "data_sha256": None}

    with RunLock(out_dir).claim(replace=overwrite):
        if not overwrite:  # again, now that no other process can write here
            refuse_existing_run(out_dir, how)
        saved = save_checkpoint(out_dir / "best", model, tokenizer, train_args=train_args(nano_config),
                                extra={"preset": "nanogpt", "data_format": "text", **record, "init_from": source})

    total = model.num_params(non_embedding=False)
    untied = "" if args.tie_embeddings else ", untied head"
    trained = ", ".join(part for part in (
        f"iter {source['iter_num']:,}" if source["iter_num"] is not None else "",
        f"best val loss {source['best_val_loss']:.4f}" if source["best_val_loss"] is not None else "",
        f"dataset {source['dataset']}" if source["dataset"] else "") if part)
    print(f"imported    {ckpt_path}{f' ({trained})' if trained else ''}")
    print(f"vocabulary  {len(chars)} characters from {meta_path}")
    print(f"model       {args.n_layer} layers, {args.n_head} heads, n_embd {args.n_embd}, block_size "
          f"{args.block_size}, bias {args.bias}{untied}: {total:,} parameters")
    print(f"saved       {saved}")
    eval_data = "" if record["data"] else " --data TEXT"
    print(f"next        mlxgpt generate --checkpoint {out_dir} --prompt ...   |   mlxgpt eval --checkpoint "
          f"{out_dir}{eval_data}   |   mlxgpt inspect params --checkpoint {out_dir}")
    return saved
