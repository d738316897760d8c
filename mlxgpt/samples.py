"""Whole examples from a --format lines model, and how they compare with its training split.

A lines model was trained on rows [end] example [end]: the end token (the newline) at
position 0 is the start state, and nothing ever followed a final [end]. So every sample
starts afresh from [end] at position 0 and stops at its own end token (or at a length
cap); continuing one stream past an end token would be out of distribution.

    samples = sample_examples(model, tokenizer, 1000, seed=0)        # batched through the KV cache
    print(report(samples, training_examples, alphabet="ACDEFGHIKLMNPQRSTVWY", min_len=8, max_len=30))

The report counts valid, unique and novel samples and finds each sample's nearest training
example by Levenshtein distance with Myers' bit-parallel algorithm (ExampleIndex), vectorised
over all training examples at once. `mlxgpt sample` writes the samples and the report;
generate.py uses sample_examples for lines runs (print_examples).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence, TextIO

import mlx.core as mx
import numpy as np

from mlxgpt.config import check_seed
from mlxgpt.errors import MlxgptError
from mlxgpt.flags import (add_batch_size_argument, add_checkpoint_argument, add_data_argument,
                          add_sampling_arguments, add_seed_argument)
from mlxgpt.sampling import Sampler, Transform, check_sampling_args, make_sampler, make_transform

if TYPE_CHECKING:
    from mlxgpt.model import GPT
    from mlxgpt.tokenizers import Tokenizer

DEFAULT_BATCH = 64


# ---------------------------------------------------------------- sampling


@dataclass(frozen=True)
class Sample:
    """One whole example: its text and tokens (the prefix's included, no start or end
    token), and whether it was cut at the length cap instead of ending by itself."""

    text: str
    tokens: list[int]
    capped: bool = False


def sample_key(seed: int, i: int) -> mx.array:
    """Sample i's own random key, hashed from (seed, i) by numpy's SeedSequence: it depends on
    neither the number of samples nor the batch size, and seeds 1 and 2 share no sample (with
    seed + i they would share all but one)."""
    return mx.array(np.random.SeedSequence([seed, i]).generate_state(2), dtype=mx.uint32)


def length_cap(block_size: int, prefix_tokens: int, max_tokens: int | None = None) -> int:
    """The most tokens a sample may add after its prefix: max_tokens, but never more than the
    longest example the model was trained on (block_size - 1 tokens, prefix included)."""
    room = block_size - 1 - prefix_tokens
    if room < 1:
        raise MlxgptError(f"the prompt is {prefix_tokens} tokens long, but this model's examples are at most "
                          f"{block_size - 1} tokens: pass a shorter prompt")
    if max_tokens is not None and max_tokens < 1:
        raise MlxgptError(f"the length cap must be at least 1 token, got {max_tokens}")
    return room if max_tokens is None else min(max_tokens, room)


def sample_examples(model: GPT, tokenizer: Tokenizer, n: int, *, batch_size: int = DEFAULT_BATCH,
                    temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
                    min_p: float | None = None, seed: int | None = None, max_tokens: int | None = None,
                    prefix: str = "") -> list[Sample]:
    """n whole examples, batch_size at a time, each from the start state [end] (+ prefix).

    Sample i draws its tokens with its own random key (sample_key), so it does not depend on
    n or on the batch size (up to float rounding in the batched matmuls, which could only flip
    a draw that sits on a tie)."""
    from mlxgpt.generate import check_can_generate  # here: importing samples.py stays light (--help)

    check_can_generate(model)
    end = tokenizer.end_id
    if end is None:
        raise MlxgptError("the tokenizer has no newline token, which ends every example of a --format lines model")
    if "\n" in prefix:
        raise MlxgptError("the prompt is the beginning of each example: it cannot contain a newline (the end token)")
    if n < 1 or batch_size < 1:
        raise MlxgptError(f"the number of samples and the batch size must be at least 1, got {n} and {batch_size}")
    check_seed(seed)
    prefix_ids = tokenizer.encode(prefix)  # unknown characters raise their own one-line error
    cap = length_cap(model.args.block_size, len(prefix_ids), max_tokens)
    transform = make_transform(temperature, top_k, top_p, min_p)
    sampler = mx.vmap(make_sampler(temperature))  # one key per row: (B, V) logprobs, (B, 2) keys -> (B,)
    seed = seed if seed is not None else int.from_bytes(os.urandom(8), "little")
    was_training = model.training
    model.eval()  # no dropout while sampling
    try:
        samples = []
        for first in range(0, n, batch_size):
            keys = mx.stack([sample_key(seed, i) for i in range(first, min(n, first + batch_size))])
            drawn = _sample_batch(model, transform, sampler, keys, [end, *prefix_ids], end, cap)
            for row in drawn:
                capped = end not in row
                tokens = prefix_ids + (row[:cap] if capped else row[:row.index(end)])
                samples.append(Sample(tokenizer.decode(tokens), tokens, capped))
        return samples
    finally:
        model.train(was_training)


def _sample_batch(model: GPT, transform: Transform, sampler: Sampler, keys: mx.array, start: list[int], end: int,
                  cap: int) -> list[list[int]]:
    """The tokens drawn for B rows (B = len(keys)), at most cap + 1 each: the last draw only
    tells whether an example of exactly `cap` tokens ends there or runs on (then it is capped).

    One forward of the start state, then one token per step for every row through the KV
    cache; a finished row keeps being computed (its tokens are ignored) until all rows are."""
    batch = keys.shape[0]
    split_rows = mx.vmap(mx.random.split)  # (B, 2) keys -> (B, 2, 2): each row's next key and subkey
    cache = model.make_cache()
    logits = model(mx.array([start] * batch, dtype=mx.int32), cache)[:, -1]  # (B, V)
    drawn, finished = [], np.zeros(batch, dtype=bool)
    for step in range(cap + 1):
        pairs = split_rows(keys)
        keys = pairs[:, 0]
        token = sampler(transform(logits), pairs[:, 1]).astype(mx.int32)  # (B,)
        if step < cap:  # queue the next step before reading this one: the device works while Python waits
            logits = model(token[:, None], cache)[:, -1]
            mx.async_eval(token, logits, keys)
        ids = np.array(token)
        drawn.append(ids)
        finished |= ids == end
        if finished.all():
            break
    return np.stack(drawn, axis=1).tolist()  # (B, steps)


# ---------------------------------------------------------------- nearest training example

WORD = 64  # bits per machine word of the bit vectors
_ONE, _HIGH = np.uint64(1), np.uint64(WORD - 1)


@dataclass(frozen=True)
class Nearest:
    example: str  # the training example
    distance: int  # Levenshtein edits from the sample
    identity: float  # 1 - distance / max(len(sample), len(example))


def identity(distance: int, a: str, b: str) -> float:
    """1 - distance / the longer length: 1 for equal texts, 0 when nothing lines up."""
    longest = max(len(a), len(b))
    return 1.0 - distance / longest if longest else 1.0


class ExampleIndex:
    """The training examples, prepared for Levenshtein distances from one text to all of them.

    Myers (1999), "A fast bit-vector algorithm for approximate string matching based on
    dynamic programming": one column of the edit-distance table (a training example's
    characters down, the text's across) is kept as bit vectors of +1/-1 vertical steps, Pv
    and Mv, and a whole column advances with about 20 word operations per text character.
    numpy does those operations for every training example at once, and examples longer
    than 64 characters span several words (Myers' blocks). 1,000 texts against 5,000
    examples of up to 64 characters take a few seconds, where the textbook table would take
    minutes in numpy."""

    def __init__(self, examples: Sequence[str]) -> None:
        self.examples = list(dict.fromkeys(examples))  # distinct, in order of first appearance
        if not self.examples:
            raise MlxgptError("there are no training examples to compare the samples with")
        self.lengths = np.array([len(e) for e in self.examples], dtype=np.int64)
        if self.lengths.min() == 0:
            raise MlxgptError("a training example is empty: every example needs at least one character")
        chars = sorted(set("".join(self.examples)))
        self.char_index = {c: i for i, c in enumerate(chars)}  # a character no example has: row len(chars)
        words = -(-int(self.lengths.max()) // WORD)
        # peq[c, w, e]: bit k of word w is set where example e has character c at position 64 w + k
        self.peq = np.zeros((len(chars) + 1, words, len(self.examples)), dtype=np.uint64)
        for e, example in enumerate(self.examples):
            for k, c in enumerate(example):
                self.peq[self.char_index[c], k // WORD, e] |= _ONE << np.uint64(k % WORD)
        # last[w, e]: the bit of each example's last character, in the word that holds it
        last = self.lengths - 1
        self.last = np.zeros((words, len(self.examples)), dtype=np.uint64)
        self.last[last // WORD, np.arange(len(self.examples))] = _ONE << (last % WORD).astype(np.uint64)

    def distances(self, text: str) -> np.ndarray:
        """The Levenshtein distance (insertions, deletions, substitutions, each 1) from text to
        every training example: (examples,) int64."""
        words, count = self.peq.shape[1:]
        pv = np.full((words, count), np.iinfo(np.uint64).max, dtype=np.uint64)  # column 0: 0, 1, 2, ... down
        mv = np.zeros((words, count), dtype=np.uint64)
        score = self.lengths.copy()  # the bottom cell of column 0: the example's length
        unknown = len(self.char_index)
        for c in text:
            eq_rows = self.peq[self.char_index.get(c, unknown)]
            h_plus, h_minus = np.ones(count, np.uint64), np.zeros(count, np.uint64)  # row 0 rises by 1 per column
            for w in range(words):
                eq, p, m = eq_rows[w], pv[w], mv[w]
                xv = eq | m
                eq = eq | h_minus
                xh = (((eq & p) + p) ^ p) | eq  # uint64 additions wrap around, as the algorithm wants
                ph = m | ~(xh | p)
                mh = p & xh
                score += ((ph & self.last[w]) != 0).astype(np.int64) - ((mh & self.last[w]) != 0)
                out_plus, out_minus = ph >> _HIGH, mh >> _HIGH  # the horizontal step into the next word
                ph = (ph << _ONE) | h_plus
                mh = (mh << _ONE) | h_minus
                pv[w], mv[w] = mh | ~(xv | ph), ph & xv
                h_plus, h_minus = out_plus, out_minus
        return score

    def nearest(self, text: str) -> Nearest:
        """The training example at the least edit distance; of several, the one with the highest identity
        (the longest), then the first."""
        distances = self.distances(text)
        tied = np.flatnonzero(distances == distances.min())
        best = int(tied[np.argmax(self.lengths[tied])])
        return Nearest(self.examples[best], int(distances[best]), identity(int(distances[best]), text,
                                                                          self.examples[best]))


# ---------------------------------------------------------------- the report


@dataclass(frozen=True)
class Rules:
    """What makes a sample valid: every character in the alphabet, the length within range (None: any)."""

    alphabet: str | None = None
    min_len: int | None = None
    max_len: int | None = None

    def __post_init__(self) -> None:
        if self.alphabet is not None and not self.alphabet:
            raise MlxgptError("--alphabet is empty: pass the characters a valid sample may use, e.g. ACDEFGHIKLMNPQRSTVWY")
        if self.alphabet is not None and any(c in self.alphabet for c in "\r\n"):
            raise MlxgptError("--alphabet contains a line break, which no sample can hold (it ends the example)")
        for flag, value in (("--min-len", self.min_len), ("--max-len", self.max_len)):
            if value is not None and value < (1 if flag == "--max-len" else 0):
                raise MlxgptError(f"{flag} must be at least {1 if flag == '--max-len' else 0}, got {value}")
        if self.min_len is not None and self.max_len is not None and self.min_len > self.max_len:
            raise MlxgptError(f"--min-len {self.min_len} is more than --max-len {self.max_len}: no sample could be valid")

    def valid(self, text: str) -> bool:
        return ((self.alphabet is None or set(text) <= set(self.alphabet))
                and (self.min_len is None or len(text) >= self.min_len)
                and (self.max_len is None or len(text) <= self.max_len))

    def describe(self) -> str:
        parts = []
        if self.alphabet is not None:
            shown = self.alphabet if len(self.alphabet) <= 30 else self.alphabet[:27] + "..."
            parts.append(f"characters from {shown}")
        if self.min_len is not None or self.max_len is not None:
            parts.append(f"length {self.min_len or 0} to {'any' if self.max_len is None else self.max_len}")
        return ", ".join(parts) or "no --alphabet, --min-len or --max-len given: every sample counts"


@dataclass
class Report:
    """Per-sample facts (lists in sample order), and the fractions they add up to."""

    texts: list[str]
    valid: list[bool]
    novel: list[bool]  # not among the training split's examples
    capped: list[bool]
    nearest: list[Nearest]
    rules: Rules = field(default_factory=Rules)
    search_seconds: float = 0.0  # time of the nearest-example search

    @property
    def n(self) -> int:
        return len(self.texts)

    @property
    def valid_fraction(self) -> float:
        return sum(self.valid) / self.n

    @property
    def unique_fraction(self) -> float:
        return len(set(self.texts)) / self.n

    @property
    def novel_fraction(self) -> float:
        return sum(self.novel) / self.n

    @property
    def capped_count(self) -> int:
        return sum(self.capped)

    @property
    def mean_identity(self) -> float:
        return sum(near.identity for near in self.nearest) / self.n

    def summary(self) -> dict[str, Any]:
        return {"n": self.n, "valid_fraction": self.valid_fraction, "unique_fraction": self.unique_fraction,
                "novel_fraction": self.novel_fraction, "capped": self.capped_count,
                "mean_identity": self.mean_identity, "rules": asdict(self.rules),
                "nearest_search_s": self.search_seconds}

    def rows(self) -> list[dict[str, Any]]:
        """One JSON object per sample."""
        return [{"text": text, "valid": valid, "novel": novel, "capped": capped, "nearest": near.example,
                 "distance": near.distance, "identity": near.identity}
                for text, valid, novel, capped, near in zip(self.texts, self.valid, self.novel, self.capped,
                                                            self.nearest)]


def report(samples: Sequence[Sample], training_examples: Sequence[str], *, alphabet: str | None = None,
           min_len: int | None = None, max_len: int | None = None) -> Report:
    """Valid, unique and novel samples, the capped ones, and each sample's nearest training example."""
    if not samples:
        raise MlxgptError("there are no samples to report on")
    rules = Rules(alphabet, min_len, max_len)
    texts = [s.text for s in samples]
    started = time.perf_counter()
    index = ExampleIndex(training_examples)
    nearest = [index.nearest(text) for text in texts]
    seconds = time.perf_counter() - started
    seen = set(index.examples)
    return Report(texts, [rules.valid(t) for t in texts], [t not in seen for t in texts],
                  [s.capped for s in samples], nearest, rules, seconds)


# ---------------------------------------------------------------- commands


def add_sample_arguments(p: argparse.ArgumentParser) -> None:
    p.description = ("Draw whole examples from a --format lines model, each from the start state to its end "
                     "token, in batches; write them one per line with a report: valid, unique and novel fractions "
                     "and each sample's nearest training example (Levenshtein identity).")
    add_checkpoint_argument(p)
    p.add_argument("-n", "--num-samples", type=int, default=1000, help="examples to draw")
    p.add_argument("--out", required=True, help="text file for the samples, one per line")
    p.add_argument("--json", help="the report as JSON (default: --out with the suffix .json)")
    add_data_argument(p, "the text the model was trained on, to compare with its training split (default: "
                         "the run's own)")
    g = p.add_argument_group("what a valid sample is")
    g.add_argument("--alphabet", help="the characters a valid sample may use (default: any)")
    g.add_argument("--min-len", type=int, help="the fewest characters of a valid sample")
    g.add_argument("--max-len", type=int, help="the most characters of a valid sample")
    g = p.add_argument_group("sampling")
    add_sampling_arguments(g, temperature=1.0)
    add_seed_argument(g, "random seed for reproducible samples (sample i depends on the seed and i alone)")
    add_batch_size_argument(g, "examples sampled in parallel", default=DEFAULT_BATCH)


def _output_path(path: Path, flag: str) -> Path:
    """A file that can be written: not a directory, in a directory that exists."""
    if path.is_dir():
        raise MlxgptError(f"{flag} {path} is a directory: pass the path of a file to write")
    if not path.parent.is_dir():
        raise MlxgptError(f"{flag} {path}: the directory {path.parent} does not exist")
    return path


def _check_sample_flags(args: argparse.Namespace) -> tuple[Path, Path, Rules]:
    """Every flag that needs no model, checked before loading one: (samples file, JSON file, rules)."""
    check_sampling_args(args.temperature, args.top_k, args.top_p, args.min_p)
    if args.num_samples < 1 or args.batch_size < 1:
        raise MlxgptError("--num-samples and --batch-size must be at least 1")
    check_seed(args.seed)
    rules = Rules(args.alphabet, args.min_len, args.max_len)
    out = _output_path(Path(args.out).expanduser(), "--out")
    default_json = out.with_suffix(".json") if out.suffix != ".json" else out.with_name(out.name + ".json")
    json_path = _output_path(Path(args.json).expanduser() if args.json else default_json, "--json")
    if json_path.resolve() == out.resolve():
        raise MlxgptError(f"--json and --out are the same file ({out}): pass another --json")
    return out, json_path, rules


def _training_examples(directory: Path, config: dict[str, Any], data: str | None) -> list[str]:
    """The run's training split: the examples of its text (or --data), checked against the text's hash."""
    import hashlib

    from mlxgpt.data import read_text, resolve_data, split_examples

    spec = data or config.get("data")
    if not spec:
        raise MlxgptError(f"{directory} does not name a text that can be read again (standard input cannot): "
                          "pass --data PATH with the text it was trained on")
    text = read_text(resolve_data(spec))
    if config.get("data_sha256") not in (None, hashlib.sha256(text.encode("utf-8")).hexdigest()):
        raise MlxgptError(f"{spec} is not the text {directory} was trained on (its SHA-256 differs), so its "
                          "training split would be another: pass --data with the original text")
    return split_examples(text)[0]


def _not_lines(directory: Path) -> MlxgptError:
    return MlxgptError(f"{directory} was not trained with --format lines (one example per line): train with "
                       "--format lines to sample whole examples, or use generate.py to continue a text")


def _write(path: Path, text: str) -> None:
    from mlxgpt.files import write_atomic

    try:
        write_atomic(path, text)
    except OSError as exc:
        raise MlxgptError(f"cannot write {path} ({exc.strerror or exc})") from None


def cmd_sample(args: argparse.Namespace, out: TextIO = sys.stdout) -> int:
    """`mlxgpt sample`: draw, report, write the samples and the JSON, print the table."""
    from mlxgpt.checkpoint import latest_run, load_checkpoint_tokenizer, load_model, read_config, resolve_checkpoint

    samples_path, json_path, rules = _check_sample_flags(args)
    directory = resolve_checkpoint(args.checkpoint or latest_run())
    config = read_config(directory)
    if config.get("data_format") != "lines":
        raise _not_lines(directory)
    training = _training_examples(directory, config, args.data)
    model, tokenizer = load_model(directory, config), load_checkpoint_tokenizer(directory, config)
    started = time.perf_counter()
    samples = sample_examples(model, tokenizer, args.num_samples, batch_size=args.batch_size,
                              temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, min_p=args.min_p,
                              seed=args.seed)
    per_second = len(samples) / (time.perf_counter() - started)
    result = report(samples, training, alphabet=rules.alphabet, min_len=rules.min_len, max_len=rules.max_len)
    settings = {"checkpoint": str(directory), "temperature": args.temperature, "top_k": args.top_k,
                "top_p": args.top_p, "min_p": args.min_p, "seed": args.seed, "batch_size": args.batch_size,
                "length_cap": length_cap(model.args.block_size, 0), "samples_per_s": per_second}
    _write(samples_path, "".join(text + "\n" for text in result.texts))
    _write(json_path, json.dumps({**settings, **result.summary(), "samples": result.rows()}, indent=1,
                                 ensure_ascii=False, allow_nan=False) + "\n")
    capped = (f", {result.capped_count:,} reached the length cap ({settings['length_cap']} tokens)"
              if result.capped_count else ", none reached the length cap")
    print(f"checkpoint  {directory}", file=out)
    print(f"samples     {result.n:,} at {per_second:,.1f} samples/s (batch {args.batch_size}){capped}", file=out)
    print(f"valid       {result.valid_fraction:.1%}  ({rules.describe()})", file=out)
    print(f"unique      {result.unique_fraction:.1%}", file=out)
    print(f"novel       {result.novel_fraction:.1%}  (not among the {len(set(training)):,} distinct training "
          "examples)", file=out)
    print(f"nearest     mean identity {result.mean_identity:.3f} to the nearest training example "
          f"(searched in {result.search_seconds:.1f} s)", file=out)
    print(f"wrote       {samples_path} and {json_path}", file=out)
    return 0


def print_examples(directory: Path, config: dict[str, Any], prompt: str, args: argparse.Namespace,
                   out: TextIO = sys.stdout) -> int:
    """generate.py on a lines run: --num-samples whole examples, one per line, each from the start
    state with the prompt as its beginning; --max-new-tokens caps each one."""
    from mlxgpt.checkpoint import load_checkpoint_tokenizer, load_model

    for flag, given in (("--stop", args.stop is not None), ("--show-probs", args.show_probs is not None),
                        ("--no-cache", args.no_cache)):
        if given:
            raise MlxgptError(f"{flag} does not apply to {directory}: it was trained with --format lines, so each "
                              "sample is one whole example, ended by its end token")
    prefix = prompt.strip("\r\n")  # the default prompt, a newline, is the start state itself
    model, tokenizer = load_model(directory, config), load_checkpoint_tokenizer(directory, config)
    samples = sample_examples(model, tokenizer, args.num_samples, temperature=args.temperature, top_k=args.top_k,
                              top_p=args.top_p, min_p=args.min_p, seed=args.seed, max_tokens=args.max_new_tokens,
                              prefix=prefix)
    for sample in samples:
        out.write(sample.text + "\n")
    capped = sum(s.capped for s in samples)
    if capped:
        cap = length_cap(model.args.block_size, len(tokenizer.encode(prefix)), args.max_new_tokens)
        print(f"{capped} of {len(samples)} samples reached the length cap ({cap} tokens after the prompt) without "
              "an end token", file=sys.stderr)
    return 0
