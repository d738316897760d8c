"""GPT-1 classification fine-tuning: `mlxgpt classify train` and `mlxgpt classify predict`.

Radford et al. (2018), "Improving Language Understanding by Generative Pre-Training", fine-tune a
pretrained GPT for classification like this: wrap each text in a start and an extract token, run
the GPT, and feed the extract token's final hidden state (after the last LayerNorm) into a new
linear layer, one output per class. Training minimises the classification loss plus half the
language-model loss on the same texts (the auxiliary objective: it keeps the GPT a language model
and, in the paper, helps larger datasets and converges faster).

mlxgpt's end-of-example token is the newline (pretraining texts hold one example per line), so
it serves as both start and extract token:

    text "abc"  ->  ⏎ a b c ⏎   ->  GPT  ->  hidden state at the last ⏎  ->  Linear  ->  class logits

Read in this order: the labelled data (CSV, the held-out split, tokens), the model and its loss,
the metrics, fine-tuning, the checkpoint, then the two commands at the end.

cli.py imports this module for its flags on every command, so mlxgpt's heavier modules
(checkpoint, training, tokenizers, the run directory) are imported inside the functions that
use them, as cli.py itself does: `--help` stays instant.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import os
import sys
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import mlx.core as mx
import mlx.nn as nn
import numpy as np
from mlx.utils import tree_flatten

from mlxgpt.config import TrainArgs, check_seed
from mlxgpt.errors import MlxgptError
from mlxgpt.flags import add_batch_size_argument, add_checkpoint_argument, add_seed_argument
from mlxgpt.model import GPT

if TYPE_CHECKING:
    from mlxgpt.tokenizers import Tokenizer

MAX_CLASSES = 100
CHECKPOINT = "latest"  # the run directory's checkpoint: the fine-tuned weights after the last step
HEAD = "head.safetensors"
INFO = "classifier.json"
INFO_FORMAT = "mlxgpt-classifier"
INFO_VERSION = 1
METRICS = "metrics.json"
PARENT_FIELDS = ("preset", "data", "data_sha256", "data_format")  # config.json's, kept in the classifier's
GRAD_CLIP = 1.0
WEIGHT_DECAY = 0.01  # GPT-1's
LIST_LIMIT = 6  # names shown in a message before "..."


# ---------------------------------------------------------------- labelled data


@dataclass(frozen=True)
class LabelledTexts:
    """The rows of a labelled CSV file, with labels as class ids."""

    texts: list[str]
    labels: list[int]  # class ids, indices into `classes`
    classes: list[str]  # class names in id order
    places: list[str]  # where each row is, for messages: "line 7 of labels.csv"


def _label_order(name: str) -> tuple[int, int, str]:
    """Sort integer labels by value (2 before 10), any others as text, after them."""
    try:
        return 0, int(name), name  # the name too: "01" and "1" are two labels of one value
    except ValueError:
        return 1, 0, name


def _is_fraction(label: str) -> bool:
    """A number, but not a whole one ("0.5", "1e-3"): a measurement, not a class."""
    try:
        int(label)
        return False
    except ValueError:
        pass
    try:
        float(label)
    except ValueError:
        return False
    return label.lower() not in ("nan", "inf", "-inf", "infinity", "-infinity")


def _shown_list(names: Sequence[str]) -> str:
    return ", ".join(names[:LIST_LIMIT]) + (", ..." if len(names) > LIST_LIMIT else "")


def _csv_rows(text: str, name: str) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """(the header, [(the line a row starts on, its fields)]) of a CSV text; blank lines are skipped."""
    reader = csv.reader(io.StringIO(text.removeprefix("\ufeff"), newline=""))  # a BOM (Excel's) is no column name
    rows = []
    try:
        header = [column.strip() for column in next(reader, [])]
        start = reader.line_num + 1
        for fields in reader:  # a quoted field may span lines: line_num is then the row's last line
            if fields:
                rows.append((start, fields))
            start = reader.line_num + 1
    except csv.Error as exc:
        raise MlxgptError(f"{name} is not valid CSV at line {reader.line_num} ({exc}): write it with a header "
                          "text,label and one quoted or plain row per example") from None
    return header, rows


def read_labelled_csv(path: str | os.PathLike) -> LabelledTexts:
    """A CSV file with a header naming a `text` and a `label` column (others are ignored), one row per
    example. Labels may be numbers or names; sorted, they become the class ids 0, 1, ..."""
    from mlxgpt.data import MAX_DATA_BYTES, TextSource, read_text

    source = TextSource("labelled file", "--data", MAX_DATA_BYTES, "to learn from: a header text,label, then "
                        "one row per example")
    text = read_text(path, source)
    name = f"labelled file {path}"
    header, rows = _csv_rows(text, name)
    missing = [column for column in ("text", "label") if column not in header]
    if missing:
        raise MlxgptError(f"{name} has no {' and no '.join(repr(c) for c in missing)} column (its header is "
                          f"{','.join(header)!r}): the first line must name the columns, e.g. text,label")
    if not rows:
        raise MlxgptError(f"{name} has a header but no rows: add one text,label row per example")
    text_at, label_at = header.index("text"), header.index("label")
    texts, raw_labels, places = [], [], []
    for line, fields in rows:
        if len(fields) <= max(text_at, label_at):
            raise MlxgptError(f"line {line} of {path} has {len(fields)} field(s), the header names {len(header)}: "
                              "quote a text that contains a comma (\"a, b\")")
        label = fields[label_at].strip()
        if not label:
            raise MlxgptError(f"line {line} of {path} has no label: give every row one")
        if _is_fraction(label):
            raise MlxgptError(f"line {line} of {path} has the label {label!r}, a number that is not a whole one: "
                              "labels are class ids (0, 1, ...) or class names, not values to regress on")
        texts.append(fields[text_at])
        raw_labels.append(label)
        places.append(f"line {line} of {path}")
    classes = sorted(set(raw_labels), key=_label_order)
    if len(classes) < 2:
        raise MlxgptError(f"{name} has one class only ({classes[0]!r}): a classifier needs examples of at least two")
    if len(classes) > MAX_CLASSES:
        raise MlxgptError(f"{name} has {len(classes)} classes, more than {MAX_CLASSES}: is the label column "
                          "really a label (it holds e.g. " + _shown_list([repr(c) for c in classes]) + ")?")
    ids = {label: i for i, label in enumerate(classes)}
    data = LabelledTexts(texts, [ids[label] for label in raw_labels], classes, places)
    _check_consistent(data)
    return data


def _check_consistent(data: LabelledTexts) -> None:
    """The same text with two labels cannot be learned, nor split fairly: refuse it."""
    first: dict[str, int] = {}
    for row, text in enumerate(data.texts):
        seen = first.setdefault(text, row)
        if data.labels[seen] != data.labels[row]:
            raise MlxgptError(f"{data.places[row]} gives the text {text[:40]!r} the label "
                              f"{data.classes[data.labels[row]]!r}, but {data.places[seen]} gave it "
                              f"{data.classes[data.labels[seen]]!r}: keep one of the two rows")


def split_by_text(texts: Sequence[str], test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train rows, test rows): data.held_out over the distinct texts, so every copy of a repeated
    text stays on one side (a copy in both would test the model on a text it was trained on)."""
    from mlxgpt.data import held_out

    is_test = held_out(texts, test_fraction, seed)
    return np.flatnonzero(~is_test), np.flatnonzero(is_test)


def encode_texts(tokenizer: Tokenizer, texts: Sequence[str], places: Sequence[str], source: str,
                 block_size: int) -> list[list[int]]:
    """Each text as GPT-1 reads it: [end] + tokens + [end], at most block_size tokens. The end token is
    the newline, which ends every example of a `--format lines` model (data.example_rows)."""
    from mlxgpt.tokenizers import UnknownCharactersError

    end = tokenizer.end_id
    if end is None:
        raise MlxgptError("the model has no newline token, which classify puts before and after each text "
                          "(GPT-1's start and extract tokens): pretrain it on text with one example per line")
    try:
        tokenizer.encode("".join(texts))  # all at once, so one message names every unknown character
    except UnknownCharactersError as exc:
        raise MlxgptError(f"{source}: {exc}") from None
    rows = []
    for text, place in zip(texts, places):
        if not text:
            raise MlxgptError(f"{place}: the text is empty; remove it or give it a text")
        if "\n" in text or "\r" in text:
            raise MlxgptError(f"{place}: the text has a line break, which classify keeps for marking where each "
                              "text starts and ends: replace it with a space")
        row = [end, *tokenizer.encode(text), end]
        if len(row) > block_size:
            raise MlxgptError(f"{place}: the text is {len(row) - 2} tokens long, but the model reads at most "
                              f"{block_size - 2} (its block_size {block_size}, less a newline before and after "
                              "the text): shorten or split it, or pretrain with a larger --block-size")
        rows.append(row)
    return rows


def pad_rows(rows: Sequence[Sequence[int]]) -> tuple[mx.array, mx.array]:
    """(ids (B, T), lengths (B,)): rows of different lengths padded on the right to the longest.

    The padding's value never matters: with causal attention a position sees only those before
    it, so no real position (and no row's last one, which the head reads) sees the padding, and
    the language-model loss masks it out."""
    lengths = np.array([len(row) for row in rows], dtype=np.int32)
    ids = np.zeros((len(rows), lengths.max()), dtype=np.int32)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = row
    return mx.array(ids), mx.array(lengths)


# ---------------------------------------------------------------- the model and its loss


def final_hidden(gpt: GPT, idx: mx.array) -> mx.array:
    """The GPT without its unembedding: token ids (B, T) -> final hidden states (B, T, C), after ln_f."""
    x = gpt.embed(idx)
    for block in gpt.h:
        x = block(x)
    return gpt.ln_f(x)


class Classifier(nn.Module):
    """A pretrained GPT plus GPT-1's linear head on each row's last (extract) token."""

    def __init__(self, gpt: GPT, n_classes: int) -> None:
        super().__init__()
        self.gpt = gpt
        self.head = nn.Linear(gpt.args.n_embd, n_classes)
        # the GPT's own initialisation: small random weights, zero bias, so training starts near uniform
        self.head.weight = mx.random.normal(self.head.weight.shape, scale=0.02)
        self.head.bias = mx.zeros((n_classes,))

    def __call__(self, idx: mx.array, lengths: mx.array) -> tuple[mx.array, mx.array]:
        """(class logits (B, K), hidden states (B, T, C)) for right-padded rows of the given lengths."""
        hidden = final_hidden(self.gpt, idx)  # (B, T, C)
        extract = hidden[mx.arange(idx.shape[0]), lengths - 1]  # (B, C): each row's last real position
        return self.head(extract), hidden


def lm_loss(gpt: GPT, hidden: mx.array, idx: mx.array, lengths: mx.array) -> mx.array:
    """Mean next-token cross-entropy over the real positions of padded rows (GPT-1's auxiliary loss)."""
    from mlxgpt.training import masked_cross_entropy

    inside = mx.arange(idx.shape[1] - 1)[None, :] < (lengths - 1)[:, None]  # (B, T-1): targets within the row
    targets = mx.where(inside, idx[:, 1:], -1)  # -1: no target (the padding), as in --format lines
    return masked_cross_entropy(gpt.unembed(hidden[:, :-1]), targets)  # position t predicts token t+1


def classify_loss(model: Classifier, idx: mx.array, lengths: mx.array, labels: mx.array,
                  lm_weight: float) -> tuple[mx.array, mx.array, mx.array]:
    """(total, classification, language-model) loss: GPT-1's L3 = L2 + lm_weight * L1."""
    logits, hidden = model(idx, lengths)
    classification = nn.losses.cross_entropy(logits, labels, reduction="mean")
    if lm_weight == 0:  # the auxiliary loss off: skip the unembedding altogether
        return classification, classification, mx.array(0.0)
    language = lm_loss(model.gpt, hidden, idx, lengths)
    return classification + lm_weight * language, classification, language


def make_classify_step(model: Classifier, optimizer, lm_weight: float):
    """One compiled AdamW step on a batch, as training.make_train_step does for pretraining."""
    from mlxgpt.training import clip_and_update

    state = [model.state, optimizer.state, mx.random.state]
    loss_and_grad = nn.value_and_grad(model, partial(classify_loss, lm_weight=lm_weight))

    @partial(mx.compile, inputs=state, outputs=state)
    def step(idx: mx.array, lengths: mx.array, labels: mx.array) -> tuple[mx.array, mx.array, mx.array]:
        (loss, classification, language), grads = loss_and_grad(model, idx, lengths, labels)
        clip_and_update(model, optimizer, GRAD_CLIP, grads)
        return loss, classification, language

    return step, state


def predict_probs(model: Classifier, rows: Sequence[Sequence[int]], batch_size: int) -> np.ndarray:
    """Class probabilities (N, K) of encoded rows, in eval mode (no dropout)."""
    training = model.training
    model.eval()
    probs = []
    for start in range(0, len(rows), batch_size):
        logits, _ = model(*pad_rows(rows[start:start + batch_size]))
        probs.append(np.array(mx.softmax(logits.astype(mx.float32), axis=-1)))
    model.train(training)
    return np.concatenate(probs)


# ---------------------------------------------------------------- metrics (numpy)


def accuracy(labels: np.ndarray, predicted: np.ndarray) -> float:
    return float(np.mean(labels == predicted))


def matthews_corrcoef(labels: np.ndarray, predicted: np.ndarray, n_classes: int) -> float:
    """Matthews' correlation between true and predicted classes: 1 perfect, 0 chance, -1 inverted.

    Gorodkin's K-class form, from the confusion matrix C (rows true, columns predicted) with
    t = row sums, p = column sums, c = trace, s = total:
        MCC = (c s - p.t) / sqrt((s^2 - p.p) (s^2 - t.t))
    For two classes it is Matthews' (TP TN - FP FN) / sqrt((TP+FP)(TP+FN)(TN+FP)(TN+FN)).
    Unlike accuracy it is not fooled by an imbalanced test set. 0 where undefined (one class
    predicted, or present, only), as scikit-learn does."""
    confusion = np.zeros((n_classes, n_classes), dtype=np.float64)
    np.add.at(confusion, (labels, predicted), 1)
    t, p = confusion.sum(axis=1), confusion.sum(axis=0)
    c, s = np.trace(confusion), confusion.sum()
    denominator = math.sqrt((s * s - p @ p) * (s * s - t @ t))
    return float((c * s - p @ t) / denominator) if denominator else 0.0


def average_ranks(values: np.ndarray) -> np.ndarray:
    """Ranks 1..N of values, tied values sharing the mean of their ranks: [5, 1, 5] -> [2.5, 1, 2.5]."""
    order = np.argsort(values, kind="stable")
    _, first, counts = np.unique(values[order], return_index=True, return_counts=True)
    ranks = np.empty(len(values))
    ranks[order] = np.repeat(first + (counts + 1) / 2, counts)  # a tie group at 0-based first..first+n-1
    return ranks


def binary_auc(is_positive: np.ndarray, scores: np.ndarray) -> float | None:
    """ROC-AUC: the chance that a random positive scores above a random negative (a tie counts half).

    The rank form (Mann-Whitney U): (sum of the positives' ranks - n+(n+ + 1)/2) / (n+ n-).
    None when either class is missing: with no pairs to compare there is no AUC."""
    n_pos = int(is_positive.sum())
    n_neg = len(is_positive) - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    rank_sum = average_ranks(scores)[is_positive].sum()
    return float((rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def roc_auc(labels: np.ndarray, probs: np.ndarray) -> float | None:
    """Binary: the AUC of class 1's probability. More classes: the macro mean of one-vs-rest AUCs
    over the classes the test set has both examples and non-examples of (None if it has none)."""
    classes = [1] if probs.shape[1] == 2 else range(probs.shape[1])
    aucs = [auc for k in classes if (auc := binary_auc(labels == k, probs[:, k])) is not None]
    return float(np.mean(aucs)) if aucs else None


def classification_metrics(labels: np.ndarray, probs: np.ndarray) -> dict[str, float | None]:
    """Loss (classification cross-entropy in nats), accuracy, MCC and ROC-AUC of probabilities (N, K)."""
    predicted = probs.argmax(axis=1)
    picked = np.clip(probs[np.arange(len(labels)), labels], 1e-12, 1.0)
    return {"loss": float(-np.log(picked).mean()), "accuracy": accuracy(labels, predicted),
            "mcc": matthews_corrcoef(labels, predicted, probs.shape[1]), "roc_auc": roc_auc(labels, probs)}


def _shown_metric(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def metrics_line(metrics: dict[str, float | None]) -> str:
    return (f"loss {_shown_metric(metrics['loss'])}, accuracy {_shown_metric(metrics['accuracy'])}, "
            f"MCC {_shown_metric(metrics['mcc'])}, ROC-AUC {_shown_metric(metrics['roc_auc'])}")


# ---------------------------------------------------------------- fine-tuning


@dataclass(frozen=True)
class FineTuneArgs:
    """How to fine-tune (the flags of `classify train`)."""

    lm_weight: float = 0.5  # GPT-1's lambda
    epochs: int = 3  # GPT-1's
    max_iters: int | None = None  # steps instead of epochs
    lr: float = 1e-4
    batch_size: int = 16
    seed: int = TrainArgs.seed
    freeze_layers: int = 0
    test_fraction: float = 0.2

    def validate(self) -> None:
        for name, value in asdict(self).items():
            if isinstance(value, float) and not math.isfinite(value):
                raise MlxgptError(f"--{name.replace('_', '-')} must be a finite number, got {value}")
        if self.lm_weight < 0:
            raise MlxgptError(f"--lm-weight must be >= 0 (0 turns the language-model loss off), got {self.lm_weight}")
        if self.lr <= 0:
            raise MlxgptError(f"--lr must be positive, got {self.lr}")
        for name in ("epochs", "max_iters", "batch_size"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise MlxgptError(f"--{name.replace('_', '-')} must be at least 1, got {value}")
        if self.freeze_layers < 0:
            raise MlxgptError(f"--freeze-layers must be >= 0, got {self.freeze_layers}")
        if not 0 < self.test_fraction < 1:
            raise MlxgptError(f"--test-fraction must be between 0 and 1, got {self.test_fraction}")
        check_seed(self.seed)

    def schedule(self, n_train: int) -> tuple[int, int]:
        """(steps, steps per epoch)."""
        per_epoch = math.ceil(n_train / self.batch_size)
        return (self.max_iters or self.epochs * per_epoch), per_epoch

    def optimizer_args(self, steps: int) -> TrainArgs:
        """The TrainArgs that training.build_optimizer reads: AdamW with a 10% linear warmup, then a
        cosine decay to lr/10 at the last step (config.json keeps them as the fine-tuning recipe)."""
        return TrainArgs(batch_size=self.batch_size, max_iters=steps, lr=self.lr, min_lr=self.lr / 10,
                         warmup_iters=steps // 10, weight_decay=WEIGHT_DECAY, grad_clip=GRAD_CLIP, seed=self.seed,
                         sample_tokens=0)


def batches(n_rows: int, batch_size: int, steps: int, seed: int) -> list[np.ndarray]:
    """Row indices of each step's batch: one seeded shuffle per epoch, read in order and carried
    across epoch boundaries, so every batch is full and every row is seen once per epoch."""
    rng = np.random.default_rng(seed)
    order = np.concatenate([rng.permutation(n_rows) for _ in range(math.ceil(steps * batch_size / n_rows))])
    return [order[i * batch_size:(i + 1) * batch_size] for i in range(steps)]


def fine_tune(model: Classifier, rows: list[list[int]], labels: np.ndarray, train: np.ndarray, test: np.ndarray,
              args: FineTuneArgs, log: Callable[[str], None] = partial(print, flush=True)) -> list[dict[str, Any]]:
    """Train the GPT and head on the train rows; evaluate on the test rows after each epoch and at the
    end. Returns one record per evaluation: {"step", "epoch", "train": losses, "test": metrics}."""
    from mlxgpt.training import build_optimizer

    steps, per_epoch = args.schedule(len(train))
    optimizer = build_optimizer(args.optimizer_args(steps))
    step, state = make_classify_step(model, optimizer, args.lm_weight)
    test_rows = [rows[i] for i in test]
    model.train()
    history, sums, since = [], np.zeros(3), 0
    for i, batch in enumerate(batches(len(train), args.batch_size, steps, args.seed), 1):
        picked = train[batch]
        idx, lengths = pad_rows([rows[j] for j in picked])
        losses = step(idx, lengths, mx.array(labels[picked]))
        mx.eval(state, losses)  # the one evaluation per step (training.py explains why)
        sums, since = sums + [loss.item() for loss in losses], since + 1
        if i % per_epoch == 0 or i == steps:
            metrics = classification_metrics(labels[test], predict_probs(model, test_rows, args.batch_size))
            train_loss, classification, language = sums / since
            lm_part = f", LM {language:.4f}" if args.lm_weight else ""
            log(f"step {i:>5}/{steps} (epoch {i / per_epoch:.1f}): train loss {train_loss:.4f} "
                f"(classification {classification:.4f}{lm_part}); test {metrics_line(metrics)}")
            history.append({"step": i, "epoch": i / per_epoch, "test": metrics,
                            "train": {"loss": train_loss, "classification": classification,
                                      "lm": language if args.lm_weight else None}})
            sums, since = np.zeros(3), 0
    model.eval()
    return history


# ---------------------------------------------------------------- the checkpoint


def save_classifier(out: Path, model: Classifier, tokenizer: Tokenizer, info: dict[str, Any],
                    train_args: TrainArgs, parent_config: dict[str, Any]) -> Path:
    """out/latest/: the fine-tuned GPT exactly as training saves one (mlxgpt.load, generate and eval work
    on it), plus head.safetensors and classifier.json. Written into a temporary sibling and renamed into
    place, so a crash leaves no half-written classifier (RunLock.claim clears the leftover)."""
    from mlxgpt.checkpoint import save_checkpoint
    from mlxgpt.files import fsync_dir, write_atomic

    head = dict(tree_flatten(model.head.parameters()))
    if not all(mx.all(mx.isfinite(w)).item() for w in head.values()):
        raise MlxgptError("refusing to save a classifier head with non-finite weights: fine-tuning diverged; "
                          "lower --lr")
    # what the parent was trained on, so `mlxgpt eval` on the classifier scores the same text the same way
    extra = {key: parent_config[key] for key in PARENT_FIELDS if key in parent_config}
    staged = save_checkpoint(out / f".{CHECKPOINT}.tmp-{os.getpid()}", model.gpt, tokenizer,
                             train_args=asdict(train_args), extra=extra)
    mx.save_safetensors(str(staged / HEAD), head, metadata={"format": "mlx"})
    with open(staged / HEAD, "rb") as f:
        os.fsync(f.fileno())
    write_atomic(staged / INFO, json.dumps(info, indent=2, ensure_ascii=False, allow_nan=False) + "\n")
    final = out / CHECKPOINT
    try:
        os.replace(staged, final)  # none there: claim() removed it with --overwrite, else we refused to start
    except OSError as exc:
        raise MlxgptError(f"cannot put the classifier in {final} ({exc.strerror or exc}): move it away, or "
                          "choose another --out") from None
    fsync_dir(out)
    return final


INFO_SCHEMA = {"format": str, "format_version": int, "labels": list[str], "lm_weight": float}


def read_info(directory: Path) -> dict[str, Any]:
    """classifier.json, checked: our format, and 2..MAX_CLASSES distinct non-empty labels."""
    from mlxgpt.config import MetadataFile

    path = directory / INFO
    if not path.is_file():
        raise MlxgptError(f"{directory} is not a classifier (it has no {INFO}): fine-tune one with "
                          "`python -m mlxgpt classify train --init-from RUN --data labels.csv --out DIR`")
    file = MetadataFile(path, "fine-tune the classifier again")
    info = file.check(file.read(), INFO_SCHEMA, required=INFO_SCHEMA)
    if info["format"] != INFO_FORMAT:
        raise file.error(f"format must be {INFO_FORMAT!r}, got {info['format']!r}")
    if info["format_version"] > INFO_VERSION:
        raise MlxgptError(f"{path} was written by a newer mlxgpt: upgrade mlxgpt")
    labels = info["labels"]
    if not 2 <= len(labels) <= MAX_CLASSES or len(set(labels)) != len(labels) or "" in labels:
        raise file.error(f"labels must be 2 to {MAX_CLASSES} distinct non-empty names, got {len(labels)} "
                         f"({_shown_list(labels)})")
    return info


def load_classifier(path: str | os.PathLike) -> tuple[Classifier, Tokenizer, list[str]]:
    """(model, tokenizer, class names) from a classify run directory or its checkpoint, every file checked
    (the head's header against the shape classifier.json and config.json imply) before it is read."""
    from mlxgpt.checkpoint import _load_arrays, load_checkpoint_tokenizer, load_model, read_config, resolve_checkpoint

    directory = resolve_checkpoint(path)
    info = read_info(directory)
    config = read_config(directory)
    model = Classifier(load_model(directory, config), len(info["labels"]))
    shapes = {name: tuple(w.shape) for name, w in tree_flatten(model.head.parameters())}
    model.head.load_weights(list(_load_arrays(directory / HEAD, "classifier head", lambda name: "F32",
                                              shapes).items()))
    model.eval()
    return model, load_checkpoint_tokenizer(directory, config), info["labels"]


# ---------------------------------------------------------------- the commands


def add_classify_arguments(p: argparse.ArgumentParser) -> None:
    p.description = ("GPT-1 classification: fine-tune a trained model with a linear head on each text's last "
                     "token (plus the auxiliary language-model loss), then predict class probabilities.")
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    fmt = p.formatter_class

    t = actions.add_parser("train", help="fine-tune on a labelled CSV (text,label); report test metrics",
                           description="Fine-tune a trained model on a CSV with a header text,label (one row per "
                                       "example; labels are numbers or names). A seeded split of the distinct "
                                       "texts is held out for testing: loss, accuracy, MCC and ROC-AUC.",
                           formatter_class=fmt)
    t.add_argument("--init-from", required=True, metavar="DIR", help="run directory or checkpoint to start from")
    t.add_argument("--data", required=True, help="the labelled CSV file")
    t.add_argument("--out", required=True, help="run directory for the classifier (new, empty, or an mlxgpt run)")
    t.add_argument("--overwrite", action="store_true", help="replace a run already in --out")
    t.add_argument("--lm-weight", type=float, default=FineTuneArgs.lm_weight,
                   help="weight of the auxiliary language-model loss (0 turns it off; GPT-1 used 0.5)")
    length = t.add_mutually_exclusive_group()
    length.add_argument("--epochs", type=int, default=FineTuneArgs.epochs, help="passes over the training texts")
    length.add_argument("--max-iters", type=int, help="optimizer steps instead of --epochs")
    t.add_argument("--lr", type=float, default=FineTuneArgs.lr, help="peak learning rate (10%% warmup, cosine)")
    add_batch_size_argument(t, "texts per step", default=FineTuneArgs.batch_size)
    add_seed_argument(t, "seed of the head, the split and the batches", default=FineTuneArgs.seed)
    t.add_argument("--freeze-layers", type=int, default=FineTuneArgs.freeze_layers,
                   help="keep the embeddings and the first N transformer blocks as pretrained")
    t.add_argument("--test-fraction", type=float, default=FineTuneArgs.test_fraction,
                   help="share of the distinct texts held out for testing")
    t.set_defaults(action_func=cmd_train)

    q = actions.add_parser("predict", help="class probabilities of new texts",
                           description="Print each text's class probabilities (one column per class).",
                           formatter_class=fmt)
    add_checkpoint_argument(q)
    q.add_argument("texts", nargs="*", metavar="TEXT", help="texts to classify")
    q.add_argument("--file", help="read the texts from this UTF-8 file instead, one per line (blank lines skipped)")
    add_batch_size_argument(q, "texts per forward pass", default=FineTuneArgs.batch_size)
    q.set_defaults(action_func=cmd_predict)


def cmd_classify(args: argparse.Namespace) -> int:
    return args.action_func(args)


def _fine_tune_args(args: argparse.Namespace) -> FineTuneArgs:
    fine = FineTuneArgs(lm_weight=args.lm_weight, epochs=args.epochs, max_iters=args.max_iters, lr=args.lr,
                        batch_size=args.batch_size, seed=args.seed, freeze_layers=args.freeze_layers,
                        test_fraction=args.test_fraction)
    fine.validate()
    return fine


def _load_parent(init_from: str) -> tuple[GPT, Tokenizer, Path, dict[str, Any]]:
    """The pretrained model to fine-tune, with its checkpoint directory and config."""
    from mlxgpt.checkpoint import load_checkpoint_tokenizer, load_model, read_config, resolve_checkpoint

    try:
        directory = resolve_checkpoint(init_from)
    except MlxgptError as exc:
        raise MlxgptError(f"--init-from: {exc}") from None
    config = read_config(directory)
    return load_model(directory, config), load_checkpoint_tokenizer(directory, config), directory, config


def _final_table(metrics: dict[str, float | None], n_test: int) -> str:
    names = {"loss": "loss (nats)", "accuracy": "accuracy", "mcc": "MCC", "roc_auc": "ROC-AUC"}
    lines = [f"held-out test split ({n_test} texts):"]
    lines += [f"  {names[key]:<12} {_shown_metric(value)}" for key, value in metrics.items()]
    return "\n".join(lines)


def _refuse_a_run(out: Path, overwrite: bool) -> None:
    from mlxgpt.rundir import refuse_existing_run

    if not overwrite:
        refuse_existing_run(out, how="add --overwrite to replace it")


def cmd_train(args: argparse.Namespace) -> int:
    from mlxgpt.files import write_atomic
    from mlxgpt.finetune import freeze_layers
    from mlxgpt.rundir import RunLock, check_writable

    fine = _fine_tune_args(args)
    out = Path(args.out)
    check_writable(out)
    _refuse_a_run(out, args.overwrite)
    gpt, tokenizer, parent, parent_config = _load_parent(args.init_from)
    data = read_labelled_csv(args.data)
    rows = encode_texts(tokenizer, data.texts, data.places, f"labelled file {args.data}", gpt.args.block_size)
    train, test = split_by_text(data.texts, fine.test_fraction, fine.seed)
    mx.random.seed(fine.seed)  # the head's initial weights depend on --seed only
    model = Classifier(gpt, len(data.classes))
    freeze_layers(model.gpt, fine.freeze_layers)  # what `train.py --init-from --freeze-layers` keeps, too
    steps, per_epoch = fine.schedule(len(train))
    print(f"classify: fine-tuning {parent} ({gpt.args.n_layer} layers, {gpt.args.n_embd} embd, block "
          f"{gpt.args.block_size}) on {len(train)} train / {len(test)} test texts, {len(data.classes)} classes "
          f"({_shown_list(data.classes)}); {steps} steps ({per_epoch} per epoch), batch {fine.batch_size}, "
          f"lr {fine.lr:g}, LM weight {fine.lm_weight:g}", flush=True)

    with RunLock(out).claim(replace=args.overwrite):
        _refuse_a_run(out, args.overwrite)  # one may have been saved since we looked
        history = fine_tune(model, rows, np.array(data.labels, dtype=np.int32), train, test, fine)
        final = history[-1]["test"]
        info = {"format": INFO_FORMAT, "format_version": INFO_VERSION, "labels": data.classes,
                "lm_weight": fine.lm_weight, "parent": str(parent.resolve()), "freeze_layers": fine.freeze_layers,
                "train_texts": len(train), "test_texts": len(test), "test_metrics": final}
        checkpoint = save_classifier(out, model, tokenizer, info, fine.optimizer_args(steps), parent_config)
        report = {"labels": data.classes, "settings": asdict(fine), "evals": history, "test": final}
        write_atomic(out / METRICS, json.dumps(report, indent=2, ensure_ascii=False, allow_nan=False) + "\n")
    print(_final_table(final, len(test)))
    print(f"classifier saved to {checkpoint}; metrics in {out / METRICS}\n"
          f"predict with: python -m mlxgpt classify predict --checkpoint {out} \"TEXT\"")
    return 0


def _predict_inputs(args: argparse.Namespace) -> tuple[list[str], list[str], str]:
    """(texts, where each is, where they all are) from the command line or --file."""
    if args.file and args.texts:
        raise MlxgptError("pass the texts on the command line or with --file, not both")
    if args.file:
        from mlxgpt.data import MAX_PROMPT_BYTES, TextSource, read_text

        text = read_text(args.file, TextSource("text file", "--file", MAX_PROMPT_BYTES, "to classify, one per line"))
        numbered = [(n, line) for n, line in enumerate(text.splitlines(), 1) if line.strip()]
        return ([line for _, line in numbered], [f"line {n} of {args.file}" for n, _ in numbered],
                f"text file {args.file}")
    if not args.texts:
        raise MlxgptError("no texts to classify: pass them as arguments (\"TEXT\" ...) or with --file FILE")
    return list(args.texts), [f"argument {i}" for i in range(1, len(args.texts) + 1)], "the arguments"


def probability_table(texts: Sequence[str], classes: Sequence[str], probs: np.ndarray) -> str:
    """Plain text: a column per class probability, then the text (so long texts do not break the columns)."""
    headers = [f"P({name})" for name in classes]
    widths = [max(len(header), 6) for header in headers]
    lines = ["  ".join(header.rjust(width) for header, width in zip(headers, widths)) + "  text"]
    for text, row in zip(texts, probs):
        lines.append("  ".join(f"{p:.4f}".rjust(width) for p, width in zip(row, widths)) + f"  {text}")
    return "\n".join(lines)


def _print_rich_table(texts: Sequence[str], classes: Sequence[str], probs: np.ndarray) -> None:
    """The same table in a terminal, each text's most likely class in bold."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    table = Table(*[Text(f"P({name})") for name in classes], "text")  # Text: a "[" in a name is no markup
    for column in table.columns[:-1]:
        column.justify = "right"
    for text, row in zip(texts, probs):
        best = int(row.argmax())
        table.add_row(*[Text(f"{p:.4f}", style="bold" if k == best else "") for k, p in enumerate(row)], Text(text))
    Console(highlight=False).print(table)


def cmd_predict(args: argparse.Namespace) -> int:
    from mlxgpt.checkpoint import latest_run

    if args.batch_size < 1:
        raise MlxgptError(f"--batch-size must be at least 1, got {args.batch_size}")
    texts, places, source = _predict_inputs(args)
    model, tokenizer, classes = load_classifier(args.checkpoint or latest_run())
    rows = encode_texts(tokenizer, texts, places, source, model.gpt.args.block_size)
    probs = predict_probs(model, rows, args.batch_size)
    if sys.stdout.isatty() and os.environ.get("TERM") != "dumb":
        _print_rich_table(texts, classes, probs)
    else:
        print(probability_table(texts, classes, probs))
    return 0
