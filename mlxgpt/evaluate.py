"""The loss on a whole split: every token scored once, instead of a 20-batch estimate.

Training evaluates on `eval_iters` random windows (nanoGPT's `estimate_loss`)
because it runs every few hundred steps and must be quick. That estimate moves
with the draw of windows (`estimate_spread`: a standard deviation of 0.015 for
the baby preset's 20 batches of 12x64), as much as the differences people
compare (two seeds, two tokenizers, MLX and PyTorch). Here every token of the
split is predicted exactly once, so the number is exact and the same every time.

Windows of block_size tokens laid end to end (the default stride) give each
token the same spread of context lengths, 0 to block_size-1, as the random
windows of training's estimate, so the two numbers measure the same thing. A
smaller stride overlaps the windows and scores only each window's last `stride`
tokens: every token then sees at least block_size-stride tokens of context,
which shows how much the model gains from context.

`evaluate_checkpoint` is `mlxgpt eval`: it loads a run, scores a split and
prints the numbers.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from typing import TextIO

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from mlxgpt.checkpoint import latest_run, load_checkpoint_tokenizer, load_model, read_config, resolve_checkpoint
from mlxgpt.config import TrainArgs
from mlxgpt.data import BatchSampler, is_stdin, make_dataset, read_text, resolve_data
from mlxgpt.errors import MlxgptError
from mlxgpt.model import GPT
from mlxgpt.tokenizers import UnknownCharactersError
from mlxgpt.training import bits_per_char, make_eval_loss, masked_cross_entropy, mean_loss


@dataclass(frozen=True)
class SplitLoss:
    """The mean next-token loss over a split, and the same in the units people quote."""

    loss: float  # nats per predicted token
    tokens: int  # tokens predicted (every id but the first)
    bits_per_char: float
    examples: int | None = None  # --format lines: whole examples scored

    @property
    def per_example(self) -> float | None:
        """Nats per whole example (--format lines)."""
        return self.loss * self.tokens / self.examples if self.examples else None

    @property
    def perplexity(self) -> float:
        return math.exp(self.loss)


def windows(n_ids: int, block_size: int, stride: int) -> tuple[np.ndarray, np.ndarray]:
    """(starts, first_scored) of the windows that predict each of ids[1:] exactly once.

    A window at `start` reads ids[start : start+block_size] and predicts the next id
    at each position; it scores positions from `first_scored` on, the ones no earlier
    window scored. The last window is moved back to end at the last id, so every
    window is full length and one compiled shape serves them all."""
    if not 1 <= stride <= block_size:
        raise ValueError(f"stride must be between 1 and block_size ({block_size}), got {stride}")
    if n_ids < block_size + 1:
        raise ValueError(f"{n_ids} ids are fewer than one window needs ({block_size + 1})")
    last = n_ids - 1 - block_size  # the start of the window that ends at the last id
    starts = np.arange(0, last, stride)
    starts = np.append(starts, last)
    # A window at `start` predicts ids[start+1 : start+block_size+1]; the windows
    # before it have predicted ids up to index `done` (none of ids[0], which has no context).
    done = np.concatenate([[0], starts[:-1] + block_size])
    return starts, done - starts


def _window_losses(model: GPT):
    """Summed loss of a batch of windows, counting only the scored positions."""

    def summed(x: mx.array, y: mx.array, first_scored: mx.array) -> mx.array:
        losses = nn.losses.cross_entropy(model(x), y, reduction="none")  # (B, T)
        scored = mx.arange(x.shape[1])[None, :] >= first_scored[:, None]
        return mx.sum(mx.where(scored, losses, 0.0))

    return mx.compile(summed, inputs=model.state)


def split_loss(model: GPT, ids: np.ndarray, chars: int, stride: int | None = None,
               batch_size: int = 32) -> SplitLoss:
    """Predict every token of `ids` (but the first) once and average the loss.

    `chars` is the split's length in characters, for bits per character; `stride`
    defaults to block_size (windows end to end)."""
    block_size = model.args.block_size
    starts, first_scored = windows(len(ids), block_size, stride or block_size)
    offsets = np.arange(block_size + 1)
    was_training = model.training
    model.eval()  # no dropout
    summed = _window_losses(model)
    totals = []
    for i in range(0, len(starts), batch_size):
        rows = ids[starts[i:i + batch_size, None] + offsets].astype(np.int32)  # (B, T+1)
        totals.append(summed(mx.array(rows[:, :-1]), mx.array(rows[:, 1:]), mx.array(first_scored[i:i + batch_size])))
        if len(totals) % 8 == 0:
            mx.eval(totals)  # bound the graph that waits to run
    model.train(was_training)
    total = sum(total.item() for total in totals)
    tokens = len(ids) - 1
    return SplitLoss(total / tokens, tokens, bits_per_char(total / tokens, tokens, chars))


def rows_loss(model: GPT, rows: np.ndarray, chars: int, batch_size: int = 32) -> SplitLoss:
    """--format lines: every example of a split (LinesDataset rows) scored once, every target counted."""
    was_training = model.training
    model.eval()
    summed = mx.compile(lambda x, y: masked_cross_entropy(model(x), y) * mx.sum(y >= 0), inputs=model.state)
    end = int(rows[0, 0])  # every row starts with the end token
    totals = []
    for i in range(0, len(rows), batch_size):
        batch = rows[i:i + batch_size]
        totals.append(summed(mx.array(np.where(batch[:, :-1] < 0, end, batch[:, :-1])), mx.array(batch[:, 1:])))
        if len(totals) % 8 == 0:
            mx.eval(totals)
    model.train(was_training)
    total, tokens = sum(t.item() for t in totals), int((rows[:, 1:] >= 0).sum())
    return SplitLoss(total / tokens, tokens, bits_per_char(total / tokens, tokens, chars), len(rows))


def estimate_spread(model: GPT, ids: np.ndarray, batch_size: int, eval_iters: int, draws: int,
                    seed: int = 0) -> np.ndarray:
    """Training's estimate (the mean loss of `eval_iters` random batches), drawn
    `draws` times from fresh windows: how far the printed val loss moves by luck."""
    was_training = model.training
    model.eval()
    batch_loss = make_eval_loss(model)
    sampler = BatchSampler(ids, batch_size, model.args.block_size, seed)
    estimates = []
    for _ in range(draws):
        x, y = sampler.next(eval_iters)
        estimates.append(mean_loss(batch_loss, [(mx.array(x[i]), mx.array(y[i])) for i in range(eval_iters)]))
    model.train(was_training)
    return np.array(estimates)


def evaluate_checkpoint(checkpoint: str | None, data: str | None = None, split: str = "val", stride: int | None = None,
                        batch_size: int = 32, draws: int = 0, out: TextIO = sys.stdout) -> SplitLoss:
    """`mlxgpt eval`: score a split of the checkpoint's text (or of `data`) whole and print the numbers;
    with `draws`, also the spread of training's estimate over that many fresh draws."""
    if batch_size < 1:
        raise MlxgptError(f"--batch-size must be at least 1, got {batch_size}")
    if draws < 0:
        raise MlxgptError(f"--draws must be 0 or more, got {draws}")
    directory = resolve_checkpoint(checkpoint or latest_run())
    config = read_config(directory)
    model, tokenizer = load_model(directory, config), load_checkpoint_tokenizer(directory, config)
    block_size = model.args.block_size
    if stride is not None and not 1 <= stride <= block_size:
        raise MlxgptError(f"--stride must be between 1 and the model's block size ({block_size}), got {stride}")
    if not (data or config.get("data")):
        raise MlxgptError(f"{directory} does not name a text that can be read again (standard input cannot): "
                          "pass --data PATH, or --data - with the text on standard input")
    path = resolve_data(data or config["data"])
    shown = "standard input" if is_stdin(path) else path
    lines = config.get("data_format", "text") == "lines"
    if lines and (stride is not None or draws):
        raise MlxgptError(f"{directory} was trained with --format lines: every example is scored whole, so "
                          "--stride and --draws do not apply")
    try:
        dataset = make_dataset(read_text(path), tokenizer, block_size, config.get("data_format", "text"))
    except UnknownCharactersError as exc:
        raise MlxgptError(f"{shown}: {exc}") from None
    ids, chars = (dataset.val, dataset.val_chars) if split == "val" else (dataset.train, dataset.train_chars)
    if lines:
        result = rows_loss(model, ids, chars, batch_size)
        print(f"checkpoint  {directory}", file=out)
        print(f"text        {shown}, {split} split: {result.examples:,} examples, {chars:,} characters", file=out)
        print(f"{split} loss    {result.loss:.4f} nats/token   {result.per_example:.4f} nats/example   "
              f"{result.bits_per_char:.4f} bits/char   ({result.tokens:,} tokens predicted)", file=out)
        return result
    result = split_loss(model, ids, chars, stride, batch_size)

    stride = stride or block_size
    context = ("end to end" if stride == block_size
               else f"every {stride} (each token sees at least {block_size - stride} tokens of context)")
    print(f"checkpoint  {directory}", file=out)
    print(f"text        {shown}, {split} split: {chars:,} characters, {len(ids):,} tokens", file=out)
    print(f"windows     {block_size} tokens, {context}", file=out)
    print(f"{split} loss    {result.loss:.4f} nats/token   perplexity {result.perplexity:.3f}   "
          f"{result.bits_per_char:.4f} bits/char   ({result.tokens:,} tokens predicted)", file=out)
    if draws:
        train_args = TrainArgs.from_dict(config.get("train", {}))  # the run's, or the defaults
        estimates = estimate_spread(model, ids, train_args.batch_size, train_args.eval_iters, draws)
        spread = f"sd {estimates.std(ddof=1):.4f}, " if draws > 1 else ""
        print(f"estimate    {draws} draws of training's estimate ({train_args.eval_iters} random batches of "
              f"{train_args.batch_size}x{block_size}): mean {estimates.mean():.4f}, {spread}"
              f"range {estimates.min():.4f} to {estimates.max():.4f}", file=out)
    return result
