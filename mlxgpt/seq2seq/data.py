"""Pairs of sentences -> one shared character vocabulary -> padded (src, tgt_in, tgt_out) batches,
and the two scores a translation gets: exact match and character error rate.

The task that needs no download: numbers written out in words, English to French or German
(97 -> "ninety-seven" -> "quatre-vingt-dix-sept", "siebenundneunzig"). The num2words package
writes them, so there are as many pairs as numbers, every one correct, and the validation numbers
are held out *by number*: the model is scored on numbers it never saw, so it must have learned how
a number is said, not memorised the pairs. French is hard in instructive ways (80 is
"quatre-vingts", four twenties; 71 is "soixante et onze", sixty and eleven), and German reverses
the order of tens and units ("sieben-und-neunzig"): the alignment maps show the decoder reading
the source out of order. A user's own pairs come from a tab-separated file (read_pairs_tsv).

Plain Python and numpy: no mlx here, and num2words (an optional dependency, the `translate`
extra) is imported only when numbers are written out.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
import os
from numbers import Integral
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np

from mlxgpt.config import MetadataFile
from mlxgpt.data import MAX_DATA_BYTES, TextSource, _Sampler, read_text
from mlxgpt.errors import MlxgptError
from mlxgpt.tokenizers.base import visible
from mlxgpt.tokenizers.char import check_characters, encode_characters

# The languages number_pairs offers (num2words knows more; these were checked to write 0-9999 in
# plain letters, spaces, hyphens and commas).
LANGUAGES = {"en": "English", "fr": "French", "de": "German", "es": "Spanish", "it": "Italian", "nl": "Dutch"}

PAIRS_TEXT = TextSource("pairs file", "--pairs", MAX_DATA_BYTES,
                        "to learn from: one pair per line, source<TAB>target")

Pair = tuple[str, str]  # (source, target)


# ---------------------------------------------------------------- number words


def _num2words():
    """num2words' function, imported only when needed: it is an optional dependency."""
    try:
        from num2words import num2words
    except ImportError:
        raise MlxgptError("writing numbers as words needs the num2words package: "
                          "pip install -e '.[translate]' (or pip install num2words)") from None
    return num2words


def _check_language(name: str, lang: str) -> None:
    if lang not in LANGUAGES:
        choices = ", ".join(f"{code} ({language})" for code, language in LANGUAGES.items())
        raise MlxgptError(f"unknown {name} {lang!r}: choose one of {choices}")


def number_pairs(numbers: Iterable[int], source_lang: str = "en", target_lang: str = "fr") -> list[Pair]:
    """Each number written out in both languages, in the order given:
    97 -> ("ninety-seven", "quatre-vingt-dix-sept"); in German, "siebenundneunzig"."""
    _check_language("source language", source_lang)
    _check_language("target language", target_lang)
    num2words = _num2words()
    pairs = []
    for n in numbers:
        if not isinstance(n, Integral) or isinstance(n, bool):
            raise MlxgptError(f"number pairs are made of whole numbers, got {n!r}")
        pairs.append((num2words(int(n), lang=source_lang), num2words(int(n), lang=target_lang)))
    return pairs


def split_numbers(low: int = 1, high: int = 9999, val_fraction: float = 0.1,
                  seed: int = 0) -> tuple[list[int], list[int]]:
    """The numbers low..high (both included), split into (train, val), each sorted, by number.

    A seeded shuffle picks val_fraction of them (at least one, and at least one left to train on)
    to hold out: the same seed gives the same split in every run, and no number is in both."""
    if low > high - 1:
        raise MlxgptError(f"need at least 2 numbers to hold some out: low ({low}) must be below high ({high})")
    if not 0 < val_fraction < 1:
        raise MlxgptError(f"val_fraction must be between 0 and 1 (e.g. 0.1), got {val_fraction}")
    count = high - low + 1
    held = min(count - 1, max(1, round(count * val_fraction)))
    order = np.random.default_rng(seed).permutation(count)
    val = sorted(low + int(i) for i in order[:held])
    train = sorted(low + int(i) for i in order[held:])
    return train, val


# ---------------------------------------------------------------- a user's own pairs


def read_pairs_tsv(path: str | os.PathLike) -> list[Pair]:
    """Pairs from a UTF-8 file of `source<TAB>target` lines. Blank lines are skipped; spaces around
    each side are dropped (a vocabulary would otherwise learn them). Every way the file can be
    wrong is one MlxgptError line naming the line and saying what to do."""
    text = read_text(path, PAIRS_TEXT).removeprefix("\ufeff")  # a byte-order mark is not part of the text
    pairs = []
    for number, line in enumerate(text.split("\n"), start=1):
        line = line.rstrip("\r")  # Windows line ends
        if not line.strip():
            continue
        tabs = line.count("\t")
        if tabs != 1:
            shown = line if len(line) <= 40 else line[:37] + "..."
            raise MlxgptError(f"line {number} of {path} has {tabs} tabs ({shown!r}): write each pair as "
                              "source<TAB>target, exactly one tab per line")
        source, target = (side.strip() for side in line.split("\t"))
        if not source or not target:
            side = "source" if not source else "target"
            raise MlxgptError(f"line {number} of {path} has an empty {side}: give both sides, source<TAB>target")
        pairs.append((source, target))
    if not pairs:
        raise MlxgptError(f"{path} has no pairs, only blank lines: write one source<TAB>target pair per line")
    return pairs


# ---------------------------------------------------------------- the vocabulary

FILENAME = "pair_vocab.json"
SPECIALS = ("<pad>", "<bos>", "<eos>")
PAD_ID, BOS_ID, EOS_ID = 0, 1, 2


class PairVocabulary:
    """One character vocabulary for source and target (see Seq2SeqArgs: one embedding serves both).

    Ids 0, 1, 2 are the specials: pad (fills a short row; never attended to, never predicted),
    bos (the decoder's first input: "begin") and eos (its last output: "stop"). Then the characters
    of the training pairs, sorted, so that ids are the same in every run (a set's order is not).
    The specials come first so that their ids never depend on the data, and pad = 0 is
    Seq2SeqArgs' default pad_id: Seq2SeqArgs(vocab_size=vocab.vocab_size) needs nothing else."""

    kind = "pairs"  # config.json's tokenizer.kind for an encoder-decoder checkpoint
    pad_id, bos_id, eos_id = PAD_ID, BOS_ID, EOS_ID

    def __init__(self, chars: Sequence[str]) -> None:
        self.chars = list(chars)
        self.index = {c: i + len(SPECIALS) for i, c in enumerate(self.chars)}

    @classmethod
    def from_pairs(cls, pairs: Iterable[Pair]) -> "PairVocabulary":
        """Every character of the pairs' sources and targets (the training pairs: validation's
        characters must be among them, or encode says which are not)."""
        chars = sorted({c for source, target in pairs for c in source + target})
        if not chars:
            raise MlxgptError("no characters to build a vocabulary from: give at least one non-empty pair")
        return cls(chars)

    @property
    def vocab_size(self) -> int:
        return len(SPECIALS) + len(self.chars)

    def encode(self, text: str) -> list[int]:
        """Characters -> ids (no specials added: make_batch places bos, eos and pad)."""
        return encode_characters(self.index, text, "the vocabulary",
                                 "the vocabulary knows only the characters of its training pairs")

    def decode(self, ids: Iterable[int]) -> str:
        """Ids -> characters, the specials dropped."""
        return "".join(self.chars[i - len(SPECIALS)] for i in ids if i >= len(SPECIALS))

    def token_label(self, token_id: int) -> str:
        """How a token is shown on an alignment map's axis: "<bos>" or the character, visibly."""
        if token_id < len(SPECIALS):
            return SPECIALS[token_id]
        return visible(self.chars[token_id - len(SPECIALS)])

    def save(self, directory: str | os.PathLike) -> list[str]:
        """Write pair_vocab.json into the directory; -> the names of the files written."""
        (Path(directory) / FILENAME).write_text(json.dumps({"chars": self.chars}, ensure_ascii=False),
                                                encoding="utf-8")
        return [FILENAME]

    @classmethod
    def load(cls, directory: str | os.PathLike) -> "PairVocabulary":
        """The vocabulary, checked: at least one character, each a single one, none twice (a
        repeated one would give two ids one character, and decode(encode(text)) would change it)."""
        file = MetadataFile(Path(directory) / FILENAME, "retrain, or restore it from a backup",
                            label="vocabulary file")
        chars = file.check(file.read(), {"chars": list[str]}, required=["chars"])["chars"]
        if not chars:
            raise file.error("chars is empty")
        return cls(check_characters(chars, file))


# ---------------------------------------------------------------- batches


def needed_block_size(pairs: Iterable[Pair]) -> int:
    """The smallest block_size that holds every pair: its longest source, or its longest target
    plus one (the decoder reads bos + target and predicts target + eos). One id per character."""
    return max((max(len(source), len(target) + 1) for source, target in pairs), default=1)


def make_batch(pairs: Sequence[Pair], vocab: PairVocabulary,
               block_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(src, tgt_in, tgt_out), each (len(pairs), block_size) int32, right-padded with pad:

        src      s1 s2 s3 pad pad ...
        tgt_in   bos t1 t2 pad ...     what the decoder reads
        tgt_out  t1 t2 eos pad ...     what it must predict at each position: tgt_in shifted left

    The loss ignores pad targets. Every batch has the same shape, so a compiled training step is
    traced once."""
    src = np.full((len(pairs), block_size), vocab.pad_id, dtype=np.int32)
    tgt_in, tgt_out = src.copy(), src.copy()
    for i, (source, target) in enumerate(pairs):
        s, t = vocab.encode(source), vocab.encode(target)
        if len(s) > block_size or len(t) + 1 > block_size:
            shown = f"{source!r} -> {target!r}"
            shown = shown if len(shown) <= 60 else shown[:57] + "..."
            raise MlxgptError(f"pair {i + 1} ({shown}) needs block_size {max(len(s), len(t) + 1)} (its source, or "
                              f"its target plus bos), more than {block_size}: use block_size "
                              f"{needed_block_size(pairs)} (the longest of these pairs), or drop the long pairs")
        src[i, :len(s)] = s
        tgt_in[i, :len(t) + 1] = [vocab.bos_id, *t]
        tgt_out[i, :len(t) + 1] = [*t, vocab.eos_id]
    return src, tgt_in, tgt_out


def epoch_order(count: int, seed: int, epoch: int) -> np.ndarray:
    """The order of the pairs in one epoch: a shuffle seeded by (seed, epoch) alone."""
    return np.random.default_rng([seed, epoch]).permutation(count)


def batch_rows(count: int, batch_size: int, seed: int, index: int) -> np.ndarray:
    """Which of `count` pairs make batch `index` (0, 1, ...). The batches cut one endless stream,
    epoch after shuffled epoch, into batch_size pieces: every pair once per epoch, every batch
    full (one may straddle two epochs). Depends only on its arguments, so a resumed run can start
    at any batch without replaying the ones before."""
    rows: list[int] = []
    position = index * batch_size  # where the batch starts in the stream
    while len(rows) < batch_size:
        epoch, offset = divmod(position, count)
        taken = epoch_order(count, seed, epoch)[offset:offset + batch_size - len(rows)]
        rows.extend(taken.tolist())
        position += len(taken)
    return np.array(rows)


def sample_batches(pairs: Sequence[Pair], vocab: PairVocabulary, batch_size: int, block_size: int, seed: int,
                   start: int = 0) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Training batches (src, tgt_in, tgt_out) forever, from batch `start` on, in a seeded order
    (batch_rows). Every pair is encoded, and checked against block_size, once, before the first."""
    if batch_size < 1:
        raise MlxgptError(f"batch_size must be at least 1, got {batch_size}")
    if not pairs:
        raise MlxgptError("no pairs to train on: give at least one pair")
    src, tgt_in, tgt_out = make_batch(pairs, vocab, block_size)
    index = start
    while True:
        rows = batch_rows(len(pairs), batch_size, seed, index)
        yield src[rows], tgt_in[rows], tgt_out[rows]
        index += 1


# ---------------------------------------------------------------- for the training loop


@dataclass
class PairsDataset:
    """Translation pairs in the shape mlxgpt's training loop takes (training.train, the GPT's loop):
    a row's input is its source and target input stacked, (2, T), which EncoderDecoder splits; its
    targets are tgt_out with -1 at padding, masked_cross_entropy's "nothing to predict here". So the
    loop, its compiled step, evaluation and checkpoints serve the encoder-decoder unchanged."""

    train: tuple[np.ndarray, np.ndarray]  # inputs (N, 2, T), targets (N, T)
    val: tuple[np.ndarray, np.ndarray]
    train_chars: int  # target characters, each target with one for its end (bits per character)
    val_chars: int

    @classmethod
    def from_pairs(cls, train: Sequence[Pair], val: Sequence[Pair], vocab: PairVocabulary,
                   block_size: int) -> "PairsDataset":
        def rows(pairs: Sequence[Pair]) -> tuple[np.ndarray, np.ndarray]:
            src, tgt_in, tgt_out = make_batch(pairs, vocab, block_size)
            return np.stack([src, tgt_in], axis=1), np.where(tgt_out == vocab.pad_id, -1, tgt_out).astype(np.int32)

        if not train or not val:
            raise MlxgptError(f"{'training' if not train else 'validation'} split has no pairs: give more pairs")
        return cls(rows(train), rows(val), sum(len(t) + 1 for _, t in train), sum(len(t) + 1 for _, t in val))

    def sampler(self, split: str, batch_size: int, block_size: int, seed: int, rank: int = 0) -> "PairSampler":
        return PairSampler(*getattr(self, split), batch_size, seed, rank)

    def target_tokens(self, split: str) -> int:
        return int((getattr(self, split)[1] >= 0).sum())


class PairSampler(_Sampler):
    """Random pairs (rows of PairsDataset), seeded like the GPT's samplers: batch(iteration)
    depends only on (seed, rank, iteration), so --resume continues with the same batches."""

    def __init__(self, inputs: np.ndarray, targets: np.ndarray, batch_size: int, seed: int, rank: int = 0) -> None:
        super().__init__(batch_size, seed, rank)
        self.inputs, self.targets = inputs, targets

    def _draw(self, rng: np.random.Generator, count: int) -> tuple[np.ndarray, np.ndarray]:
        rows = rng.integers(0, len(self.inputs), size=(count, self.batch_size))
        return self.inputs[rows], self.targets[rows]  # (count, B, 2, T), (count, B, T)


# ---------------------------------------------------------------- scores


def _check_lengths(predictions: Sequence[str], references: Sequence[str]) -> None:
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} references")
    if not references:
        raise ValueError("no references to score against")


def exact_match(predictions: Sequence[str], references: Sequence[str]) -> float:
    """The fraction of predictions equal to their reference, character for character."""
    _check_lengths(predictions, references)
    return sum(p == r for p, r in zip(predictions, references)) / len(references)


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance: the fewest one-character insertions, deletions and substitutions
    that turn a into b ("kitten" -> "sitting": 3).

    Dynamic programming, one row at a time: before looking at a[i], previous[j] is the distance
    from a[:i] to b[:j]. a[:i+1] becomes b[:j+1] by the cheapest of: a[:i] -> b[:j+1] and delete
    a[i]; a[:i+1] -> b[:j] and insert b[j]; a[:i] -> b[:j] and substitute b[j] for a[i] (free if
    they are equal). O(len(a) * len(b)) time, O(len(b)) memory."""
    previous = list(range(len(b) + 1))  # "" -> b[:j]: j insertions
    for i, ca in enumerate(a):
        current = [i + 1]  # a[:i+1] -> "": i+1 deletions
        for j, cb in enumerate(b):
            current.append(min(previous[j + 1] + 1,  # delete ca
                               current[j] + 1,  # insert cb
                               previous[j] + (ca != cb)))  # substitute (or keep)
        previous = current
    return previous[-1]


def character_error_rate(predictions: Sequence[str], references: Sequence[str]) -> float:
    """Total edit distance over total reference characters: the fraction of the references'
    characters a reader must fix. 0 is perfect; it can exceed 1 (a prediction far too long)."""
    _check_lengths(predictions, references)
    total = sum(len(r) for r in references)
    if total == 0:
        raise ValueError("the references have no characters to score against")
    return sum(edit_distance(p, r) for p, r in zip(predictions, references)) / total
