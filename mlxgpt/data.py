"""Text file -> token ids -> train/val arrays -> seeded random (B, T) batches.

No prepare step: the text is read and encoded once at start-up (a second for
tiny Shakespeare) and kept as a compact numpy array.
"""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mlxgpt.errors import MlxgptError
from mlxgpt.tokenizers import Tokenizer

SHAKESPEARE_URL = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
NAMED_DATASETS = {"shakespeare": ("shakespeare.txt", SHAKESPEARE_URL)}
TRAIN_FRACTION = 0.9  # nanoGPT's split: first 90% train, last 10% validation


def cache_dir() -> Path:
    """Where named datasets are kept: $MLXGPT_CACHE, else $XDG_CACHE_HOME/mlxgpt, else ~/.cache/mlxgpt."""
    if os.environ.get("MLXGPT_CACHE"):
        return Path(os.environ["MLXGPT_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "mlxgpt"


def resolve_data(spec: str) -> Path:
    """A path is used as is; a dataset name (e.g. "shakespeare") is downloaded once into the cache."""
    path = Path(spec).expanduser()
    if path.exists() or spec not in NAMED_DATASETS:
        return path
    filename, url = NAMED_DATASETS[spec]
    target = cache_dir() / filename
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".part")
    try:
        with urllib.request.urlopen(url, timeout=20) as response, open(partial, "wb") as out:
            out.write(response.read())
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        partial.unlink(missing_ok=True)
        raise MlxgptError(
            f"could not download {spec!r} ({getattr(exc, 'reason', exc)}); offline? "
            f"save tiny Shakespeare as {target} or pass --data PATH") from None
    os.replace(partial, target)
    return target


def read_text(path: Path) -> str:
    """Read a UTF-8 training text, turning every way it can be wrong into one clear line."""
    if not path.exists():
        raise MlxgptError(f"data file {path} does not exist: pass --data PATH to a UTF-8 text file (or --data shakespeare)")
    if path.is_dir():
        raise MlxgptError(f"{path} is a directory: pass --data the path of a text file inside it")
    raw = path.read_bytes()
    if not raw:
        raise MlxgptError(f"data file {path} is empty: give it some text to learn from")
    if b"\x00" in raw[:1 << 20]:
        raise MlxgptError(f"data file {path} looks binary (it contains NUL bytes): pass a plain UTF-8 text file")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MlxgptError(
            f"data file {path} is not UTF-8 (bad byte at offset {exc.start}): "
            f"convert it, e.g. iconv -f latin1 -t utf-8 {path} > fixed.txt") from None


def split_text(text: str, fraction: float = TRAIN_FRACTION) -> tuple[str, str]:
    """Split by characters, so every tokenizer sees the same validation text (fair bits-per-char)."""
    cut = int(len(text) * fraction)
    return text[:cut], text[cut:]


def _compact(ids: list[int], vocab_size: int) -> np.ndarray:
    return np.asarray(ids, dtype=np.uint16 if vocab_size <= 1 << 16 else np.uint32)


@dataclass
class Dataset:
    """Token ids of the two splits, and the character counts that bits-per-char needs."""

    train: np.ndarray
    val: np.ndarray
    train_chars: int
    val_chars: int

    @classmethod
    def from_text(cls, text: str, tokenizer: Tokenizer, block_size: int) -> "Dataset":
        train_text, val_text = split_text(text)
        data = cls(_compact(tokenizer.encode(train_text), tokenizer.vocab_size),
                   _compact(tokenizer.encode(val_text), tokenizer.vocab_size),
                   len(train_text), len(val_text))
        for name, ids in (("training", data.train), ("validation", data.val)):
            if len(ids) < block_size + 1:
                raise MlxgptError(
                    f"the {name} split has {len(ids)} tokens but one batch row needs block_size+1 = {block_size + 1}: "
                    f"use a longer text (the split is 90/10) or a smaller --block-size")
        return data


class BatchSampler:
    """Random (B, T) windows of a token array.

    `batch(iteration)` depends only on (seed, rank, iteration): --resume needs no
    sampler state to continue with the very same batches, and each rank of a
    distributed run draws its own. `next()` draws from one seeded stream (for
    fixed evaluation batches).
    """

    def __init__(self, ids: np.ndarray, batch_size: int, block_size: int, seed: int, rank: int = 0) -> None:
        self.ids, self.batch_size, self.block_size = ids, batch_size, block_size
        self.seed, self.rank = seed, rank
        self.rng = np.random.Generator(np.random.PCG64(seed))
        self.offsets = np.arange(block_size + 1)

    def _windows(self, rng: np.random.Generator, count: int) -> tuple[np.ndarray, np.ndarray]:
        starts = rng.integers(0, len(self.ids) - self.block_size, size=(count, self.batch_size))
        windows = self.ids[starts[..., None] + self.offsets].astype(np.int32)  # (count, B, T+1)
        return windows[..., :-1], windows[..., 1:]  # targets are the inputs shifted by one

    def next(self, count: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """(count, B, T) inputs and targets from the sampler's own stream."""
        return self._windows(self.rng, count)

    def batch(self, iteration: int, count: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """(count, B, T) inputs and targets for one training step."""
        rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([self.seed, self.rank, iteration])))
        return self._windows(rng, count)
