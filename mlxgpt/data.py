"""Text file -> token ids -> train/val arrays -> seeded random (B, T) batches.

No prepare step: the text is read and encoded once at start-up (a second for
tiny Shakespeare) and kept as a compact numpy array. Tiny Shakespeare ships
inside the package (`--data shakespeare`), so the first run needs no network.
"""

from __future__ import annotations

import bz2
import hashlib
import os
import stat
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Sequence

import numpy as np

from mlxgpt.errors import MlxgptError
from mlxgpt.tokenizers import Tokenizer

TRAIN_FRACTION = 0.9  # nanoGPT's split: first 90% train, last 10% validation
STDIN = "-"  # --data - and --prompt-file - read standard input
MAX_DATA_BYTES = 1 << 30  # 1 GiB: far beyond any text a GPT this size learns from, far below a runaway read
MAX_PROMPT_BYTES = 1 << 20  # 1 MiB: a prompt is cut to the model's context anyway
_READ_CHUNK = 1 << 24  # read in 16 MiB pieces, so a small text never allocates a buffer the size of the limit


@dataclass(frozen=True)
class PackagedText:
    """A text that ships inside mlxgpt, bz2-compressed (the smallest the standard library writes), with the
    SHA-256 of its UTF-8 bytes: every read checks it, so a damaged install fails instead of training on
    another text."""

    filename: str  # in DATASET_DIR
    sha256: str


DATASET_DIR = Path(__file__).with_name("datasets")
DATASETS = {
    # Karpathy's tiny Shakespeare (char-rnn's input.txt; public domain): 1,115,394 characters, 328 kB compressed
    "shakespeare": PackagedText("shakespeare.txt.bz2",
                                "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"),
}


@dataclass(frozen=True)
class TextSource:
    """What a text named on the command line is for: the words its messages use, and its size limit."""

    noun: str  # "data file"
    flag: str  # "--data"
    limit: int  # bytes
    purpose: str  # what the text is for, in "give it some text ..."
    alternative: str = ""  # another way to give the text, offered when the file is missing
    datasets: bool = False  # whether the name of a packaged dataset (DATASETS) is accepted too


DATA_TEXT = TextSource("data file", "--data", MAX_DATA_BYTES, "to learn from", " (or --data shakespeare)",
                       datasets=True)
PROMPT_TEXT = TextSource("prompt file", "--prompt-file", MAX_PROMPT_BYTES, "to continue")


def is_stdin(spec: str | os.PathLike) -> bool:
    """True for "-": the text comes from standard input and cannot be read a second time."""
    return os.fspath(spec) == STDIN


def dataset_name(spec: str | os.PathLike) -> str | None:
    """`spec` if it names a dataset that ships with mlxgpt, else None. A path that exists wins over a
    name: a file called `shakespeare` in the current directory is that file."""
    name = os.fspath(spec)
    return name if name in DATASETS and not os.path.lexists(name) else None


def resolve_data(spec: str) -> Path:
    """--data as a Path: "-" (standard input), a file (~ expanded), or a dataset name, which stays a bare
    name (read_text reads it from the package; rereadable_path records it as is)."""
    return Path(spec).expanduser()


def rereadable_path(spec: str | os.PathLike) -> Path | None:
    """What a later run (--resume, eval) can read again: a packaged dataset's name as is, or the absolute
    path of a regular file. None for standard input, pipes, devices, and paths still under /proc or
    /dev/fd once symlinks are resolved (such as <(cmd)), which name something else, or nothing, the
    next time."""
    if dataset_name(spec):
        return Path(spec)
    if is_stdin(spec):
        return None
    path = Path(spec).expanduser().resolve()
    if path.parts[1:2] == ("proc",) or path.parts[1:3] == ("dev", "fd"):
        return None
    try:
        return path if stat.S_ISREG(os.stat(path).st_mode) else None
    except OSError:
        return None


def read_dataset(name: str) -> bytes:
    """The UTF-8 bytes of a packaged dataset, decompressed and checked against the SHA-256 in DATASETS."""
    dataset = DATASETS[name]
    path = DATASET_DIR / dataset.filename

    def damaged(problem: str) -> MlxgptError:
        return MlxgptError(f"the copy of {name!r} that ships with mlxgpt ({path}) is damaged ({problem}): "
                           "reinstall mlxgpt, or pass --data PATH to a copy of the text")

    try:
        raw = bz2.decompress(path.read_bytes())
    except FileNotFoundError:
        raise damaged("it is missing") from None
    except (OSError, ValueError) as exc:  # not bz2, or cut short
        raise damaged(f"it cannot be decompressed: {exc}") from None
    if hashlib.sha256(raw).hexdigest() != dataset.sha256:
        raise damaged("its SHA-256 differs")
    return raw


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
    """(the bytes, a name for messages) of a regular file, of standard input for "-", or of a packaged
    dataset where `source` accepts one, refusing more than source.limit bytes.

    The kind of file is checked with os.stat before opening it: opening a FIFO that has no writer blocks
    forever, and a device such as /dev/zero never ends."""
    dataset = dataset_name(spec) if source.datasets else None
    if dataset:
        return read_dataset(dataset), f"dataset {dataset!r}"
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

    def sampler(self, split: str, batch_size: int, block_size: int, seed: int, rank: int = 0) -> "BatchSampler":
        return BatchSampler(getattr(self, split), batch_size, block_size, seed, rank)

    def target_tokens(self, split: str) -> int:
        """How many tokens of the split are predicted (for bits per character)."""
        return len(getattr(self, split))


# ---------------------------------------------------------------- one example per line

SPLIT_SEED = 0  # the lines format's train/val split: fixed, so every run (any --seed) shares it


def held_out(examples: Sequence[str], fraction: float, seed: int) -> np.ndarray:
    """Which examples to hold out (a boolean per example), split by *distinct* example.

    The distinct examples are shuffled (seeded) and `fraction` of them (at least one, and at
    least one left) held out; every copy of an example goes where its first copy went, so a
    duplicate never straddles the split: the model would be scored on what it trained on."""
    distinct = sorted(set(examples))  # sorted first: a set's order changes between runs
    if len(distinct) < 2:
        raise MlxgptError(f"need at least 2 different examples to hold some out, got {len(distinct)}")
    count = min(len(distinct) - 1, max(1, round(len(distinct) * fraction)))
    chosen = {distinct[i] for i in np.random.default_rng(seed).permutation(len(distinct))[:count]}
    return np.array([example in chosen for example in examples])


def split_examples(text: str, fraction: float = TRAIN_FRACTION, seed: int = SPLIT_SEED) -> tuple[list[str], list[str]]:
    """Every non-empty line is an example; (train, val) split by example (held_out), not by character."""
    examples = [line.rstrip("\r") for line in text.split("\n") if line.strip()]
    if len(set(examples)) < 2:
        raise MlxgptError(f"--format lines needs at least 2 different non-empty lines (one example per line), got "
                          f"{len(set(examples))}: check the file, or train on it as one text without --format lines")
    val = held_out(examples, 1 - fraction, seed)
    return [e for e, out in zip(examples, val) if not out], [e for e, out in zip(examples, val) if out]


def lines_text(examples: list[str]) -> str:
    """The examples as the tokenizer sees them: each followed by its end token, the newline."""
    return "".join(example + "\n" for example in examples)


def example_rows(examples: list[str], tokenizer: Tokenizer, block_size: int, where: str = "") -> np.ndarray:
    """(examples, block_size + 1) int32 rows: [end] example [end], then -1 (no target) up to the end.

    The end token (the newline) at position 0 is the start state: every example's first
    token is predicted from it alone, and the final [end] teaches the model to stop."""
    end = tokenizer.end_id
    if end is None:
        raise MlxgptError("the tokenizer has no newline token, which --format lines uses to end each example")
    rows = np.full((len(examples), block_size + 1), -1, dtype=np.int32)
    for i, example in enumerate(examples):
        ids = tokenizer.encode(example)
        if len(ids) + 2 > block_size + 1:
            shown = example if len(example) <= 30 else example[:27] + "..."
            raise MlxgptError(f"example {i + 1}{where} ({shown!r}) is {len(ids)} tokens long; with its start and "
                              f"end tokens it needs --block-size {len(ids) + 1} or more (now {block_size}): raise "
                              "--block-size, or shorten or drop that line")
        rows[i, : len(ids) + 2] = [end, *ids, end]
    return rows


@dataclass
class LinesDataset:
    """The lines format (`--format lines`): one example per row, split by example."""

    train: np.ndarray  # (examples, block_size + 1): see example_rows
    val: np.ndarray
    train_chars: int  # characters of the examples, each with its newline (for bits per character)
    val_chars: int
    end_id: int

    @classmethod
    def from_text(cls, text: str, tokenizer: Tokenizer, block_size: int) -> "LinesDataset":
        train, val = split_examples(text)
        return cls(example_rows(train, tokenizer, block_size, " of the training split"),
                   example_rows(val, tokenizer, block_size, " of the validation split"),
                   len(lines_text(train)), len(lines_text(val)), tokenizer.end_id)

    def sampler(self, split: str, batch_size: int, block_size: int, seed: int, rank: int = 0) -> "RowSampler":
        return RowSampler(getattr(self, split), batch_size, self.end_id, seed, rank)

    def target_tokens(self, split: str) -> int:
        return int((getattr(self, split)[:, 1:] >= 0).sum())

    def examples(self, split: str) -> int:
        return len(getattr(self, split))


DATA_FORMATS = {"text": Dataset, "lines": LinesDataset}


def make_dataset(text: str, tokenizer: Tokenizer, block_size: int, data_format: str = "text") -> Dataset | LinesDataset:
    if data_format not in DATA_FORMATS:
        raise MlxgptError(f"unknown --format {data_format!r}: choose one of {', '.join(DATA_FORMATS)}")
    return DATA_FORMATS[data_format].from_text(text, tokenizer, block_size)


def tokenizer_text(text: str, data_format: str, training_split_only: bool) -> str:
    """What a tokenizer learns its vocabulary from: the text (or its training split, for
    SentencePiece, so validation stays unseen), with every example ending in a newline."""
    if data_format == "lines":
        train, val = split_examples(text)
        return lines_text(train if training_split_only else train + val)
    return split_text(text)[0] if training_split_only else text


# ---------------------------------------------------------------- batches


class _Sampler:
    """Seeded (count, B, T) batches of inputs and targets.

    `batch(iteration)` depends only on (seed, rank, iteration): --resume needs no
    sampler state to continue with the very same batches, and each rank of a
    distributed run draws its own. `next()` draws from one seeded stream (for
    fixed evaluation batches)."""

    def __init__(self, batch_size: int, seed: int, rank: int = 0) -> None:
        self.batch_size, self.seed, self.rank = batch_size, seed, rank
        self.rng = np.random.Generator(np.random.PCG64(seed))

    def _draw(self, rng: np.random.Generator, count: int) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def next(self, count: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """(count, B, T) inputs and targets from the sampler's own stream."""
        return self._draw(self.rng, count)

    def batch(self, iteration: int, count: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """(count, B, T) inputs and targets for one training step."""
        rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([self.seed, self.rank, iteration])))
        return self._draw(rng, count)


class BatchSampler(_Sampler):
    """Random windows of a token array: the targets are the inputs shifted by one."""

    def __init__(self, ids: np.ndarray, batch_size: int, block_size: int, seed: int, rank: int = 0) -> None:
        super().__init__(batch_size, seed, rank)
        self.ids, self.block_size = ids, block_size
        self.offsets = np.arange(block_size + 1)

    def _draw(self, rng: np.random.Generator, count: int) -> tuple[np.ndarray, np.ndarray]:
        starts = rng.integers(0, len(self.ids) - self.block_size, size=(count, self.batch_size))
        windows = self.ids[starts[..., None] + self.offsets].astype(np.int32)  # (count, B, T+1)
        return windows[..., :-1], windows[..., 1:]  # targets are the inputs shifted by one


class RowSampler(_Sampler):
    """Random whole examples (rows of LinesDataset); targets -1 where a short example has ended."""

    def __init__(self, rows: np.ndarray, batch_size: int, end_id: int, seed: int, rank: int = 0) -> None:
        super().__init__(batch_size, seed, rank)
        self.rows, self.end_id = rows, end_id

    def _draw(self, rng: np.random.Generator, count: int) -> tuple[np.ndarray, np.ndarray]:
        rows = self.rows[rng.integers(0, len(self.rows), size=(count, self.batch_size))]  # (count, B, T+1)
        inputs = np.where(rows[..., :-1] < 0, self.end_id, rows[..., :-1])  # any token: nothing is predicted from it
        return inputs, rows[..., 1:]
