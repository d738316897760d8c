"""Text file -> token ids -> train/val arrays -> seeded random (B, T) batches.

No prepare step: the text is read and encoded once at start-up (a second for
tiny Shakespeare) and kept as a compact numpy array.
"""

from __future__ import annotations

import os
import stat
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from mlxgpt.errors import MlxgptError
from mlxgpt.tokenizers import Tokenizer

SHAKESPEARE_URL = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
NAMED_DATASETS = {"shakespeare": ("shakespeare.txt", SHAKESPEARE_URL)}
TRAIN_FRACTION = 0.9  # nanoGPT's split: first 90% train, last 10% validation
STDIN = "-"  # --data - and --prompt-file - read standard input
MAX_DATA_BYTES = 1 << 30  # 1 GiB: far beyond any text a GPT this size learns from, far below a runaway read
MAX_PROMPT_BYTES = 1 << 20  # 1 MiB: a prompt is cut to the model's context anyway
_READ_CHUNK = 1 << 24  # read in 16 MiB pieces, so a small text never allocates a buffer the size of the limit


@dataclass(frozen=True)
class TextSource:
    """What a text named on the command line is for: the words its messages use, and its size limit."""

    noun: str  # "data file"
    flag: str  # "--data"
    limit: int  # bytes
    purpose: str  # what the text is for, in "give it some text ..."
    alternative: str = ""  # another way to give the text, offered when the file is missing


DATA_TEXT = TextSource("data file", "--data", MAX_DATA_BYTES, "to learn from", " (or --data shakespeare)")
PROMPT_TEXT = TextSource("prompt file", "--prompt-file", MAX_PROMPT_BYTES, "to continue")


def is_stdin(spec: str | os.PathLike) -> bool:
    """True for "-": the text comes from standard input and cannot be read a second time."""
    return os.fspath(spec) == STDIN


def rereadable_path(spec: str | os.PathLike) -> Path | None:
    """The absolute path of a regular file that a later run (--resume, eval) can open again; None for
    standard input, pipes, devices, and paths still under /proc or /dev/fd once symlinks are resolved
    (such as <(cmd)), which name something else, or nothing, the next time."""
    if is_stdin(spec):
        return None
    path = Path(spec).expanduser().resolve()
    if path.parts[1:2] == ("proc",) or path.parts[1:3] == ("dev", "fd"):
        return None
    try:
        return path if stat.S_ISREG(os.stat(path).st_mode) else None
    except OSError:
        return None


def cache_dir() -> Path:
    """Where named datasets are kept: $MLXGPT_CACHE, else $XDG_CACHE_HOME/mlxgpt, else ~/.cache/mlxgpt."""
    if os.environ.get("MLXGPT_CACHE"):
        return Path(os.environ["MLXGPT_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "mlxgpt"


def _cache_variable() -> str:
    """The environment variable that chose cache_dir(), for messages (MLXGPT_CACHE when none did)."""
    if os.environ.get("MLXGPT_CACHE") or not os.environ.get("XDG_CACHE_HOME"):
        return "MLXGPT_CACHE"
    return "XDG_CACHE_HOME"


def resolve_data(spec: str) -> Path:
    """A path (or "-") is used as is; a dataset name (e.g. "shakespeare") is downloaded once into the cache."""
    path = Path(spec).expanduser()
    if is_stdin(spec) or path.exists() or spec not in NAMED_DATASETS:
        return path
    filename, url = NAMED_DATASETS[spec]
    directory = cache_dir()
    target = directory / filename

    def unusable_cache(exc: OSError) -> MlxgptError:
        why = "a file is in the way" if isinstance(exc, (FileExistsError, NotADirectoryError)) else exc.strerror
        return MlxgptError(f"cannot use the dataset cache {directory} ({why or exc}): point "
                           f"{_cache_variable()} at a writable directory, or pass --data PATH")

    try:  # before downloading: a cache we cannot write is the user's to fix, not the network's
        if target.exists():
            return target
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise unusable_cache(exc) from None
    try:
        with urllib.request.urlopen(url, timeout=20) as response:
            raw = response.read()
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        raise MlxgptError(
            f"could not download {spec!r} ({getattr(exc, 'reason', exc)}); offline? "
            f"save tiny Shakespeare as {target} or pass --data PATH") from None
    partial = target.with_suffix(".part")
    try:
        partial.write_bytes(raw)
        os.replace(partial, target)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise unusable_cache(exc) from None
    return target


_KINDS = {stat.S_ISFIFO: "a FIFO or pipe", stat.S_ISCHR: "a character device", stat.S_ISBLK: "a block device",
          stat.S_ISSOCK: "a socket"}


def _read_at_most(stream: BinaryIO, limit: int) -> bytes:
    """At most limit + 1 bytes: one more than allowed is enough to know the input is too big."""
    chunks, total = [], 0
    while total <= limit:
        chunk = stream.read(min(_READ_CHUNK, limit + 1 - total))
        if not chunk:
            break
        chunks.append(chunk)
        total += len(chunk)
    return b"".join(chunks)


def read_bytes(spec: str | os.PathLike, source: TextSource = DATA_TEXT) -> tuple[bytes, str]:
    """(the bytes, a name for messages) of a regular file, or of standard input for "-", refusing more than
    source.limit bytes.

    The kind of file is checked with os.stat before opening it: opening a FIFO that has no writer blocks
    forever, and a device such as /dev/zero never ends."""
    over = f"over the {source.limit:,}-byte limit of {source.flag}: pass a smaller text"
    if is_stdin(spec):
        if sys.stdin is None:
            raise MlxgptError(f"{source.flag} - reads standard input, but it is closed")
        raw = _read_at_most(sys.stdin.buffer, source.limit)
        if len(raw) > source.limit:
            raise MlxgptError(f"standard input is {over}")
        return raw, "standard input"
    path = Path(spec)
    name = f"{source.noun} {path}"
    try:
        mode = os.stat(path).st_mode
        if stat.S_ISDIR(mode):
            raise MlxgptError(f"{path} is a directory: pass {source.flag} the path of a text file inside it")
        if not stat.S_ISREG(mode):
            kind = next((k for test, k in _KINDS.items() if test(mode)), "not a regular file")
            raise MlxgptError(f"{name} is {kind}: pass a regular file, or - to read standard input")
        with open(path, "rb") as f:
            raw = _read_at_most(f, source.limit)
    except FileNotFoundError:
        raise MlxgptError(f"{name} does not exist: pass {source.flag} PATH to a UTF-8 text file"
                          f"{source.alternative}") from None
    except OSError as exc:
        raise MlxgptError(f"cannot read {name} ({exc.strerror or exc})") from None
    if len(raw) > source.limit:
        raise MlxgptError(f"{name} is {over}")
    return raw, name


def read_text(spec: str | os.PathLike, source: TextSource = DATA_TEXT) -> str:
    """Read a UTF-8 text (a file, or "-" for standard input), turning every way it can be wrong into one
    clear line."""
    raw, name = read_bytes(spec, source)
    if not raw:
        raise MlxgptError(f"{name} is empty: give it some text {source.purpose}")
    if b"\x00" in raw[:1 << 20]:
        raise MlxgptError(f"{name} looks binary (it contains NUL bytes): pass a plain UTF-8 text file")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        fix = ("pipe it through iconv -f latin1 -t utf-8" if is_stdin(spec)
               else f"iconv -f latin1 -t utf-8 {spec} > fixed.txt")
        raise MlxgptError(f"{name} is not UTF-8 (bad byte at offset {exc.start}): convert it, e.g. {fix}") from None


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
