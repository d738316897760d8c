"""Number words, English -> French: the original Transformer (encoder-decoder, cross-attention)
against the decoder-only GPT with the source as a prompt, same parameter count, same wall clock.

    python -m experiments.translate_numbers --budget 600            # the measured runs (~25 min)
    python -m experiments.translate_numbers --budget 600 --beam 4   # and beam search for the final score
    python -m experiments.translate_numbers --quick                 # ~30 s: does it all run?
    python -m experiments.translate_numbers --models encdec --budget 120 --n-embd 96   # one model, exploring

The task (mlxgpt/seq2seq/data.py): the numbers 1-9,999 written out by num2words, split *by number*
(split_numbers(1, 9999, 0.1, seed): 8,999 to train on, 1,000 held out), so the held-out score says
whether a model learned how numbers are said, not whether it memorised the pairs
(97 -> "ninety-seven" -> "quatre-vingt-dix-sept"). --target de for German.

The two models, trained one after the other on the same pairs for the same --budget seconds each:

- encdec: mlxgpt.seq2seq.EncoderDecoder (pre-LN, sinusoidal positions, one character vocabulary
  shared by source, target and unembedding), loss on the target (mlxgpt.seq2seq.model.loss).
- gpt: mlxgpt.model.GPT with rotary positions (--gpt-pos rope, mlxgpt's CPU preset's choice; GPT-2's
  learned positions are --gpt-pos learned), trained on lines "source => target\\n" with the loss on
  the target and its "\\n" only (the source and " => " positions get target -1, ignored by
  mlxgpt.training.masked_cross_entropy). Its width and heads are the encoder-decoder's; its depth is
  the one whose parameter count comes closest (ModelArgs.parameter_count), unless --gpt-layers says.

The defaults (2+2 layers, 128 wide, 4 heads against a 5-layer GPT of the same width; batch 32;
warmup 30 steps; peak lr 2e-3 for the encoder-decoder, 3e-3 for the GPT) come from 120-second
exploratory runs: batch 128 -> 64 -> 32 helped both models (more updates in the same time), rotary
positions helped the GPT (0% -> 25% held-out exact match at batch 128; 71% -> 91% at batch 64), and
3e-3 beat 2e-3 for the GPT (91% vs 84% at batch 64) while the encoder-decoder did as well with either.

Both train with mlxgpt/training.py's pieces: the compiled step (make_train_step: model, optimizer
and RNG state as mx.compile's inputs and outputs), AdamW with weight decay on matrices only
(build_optimizer), linear warmup then a cosine that follows the clock (lr_schedule,
clock_learning_rate: it reaches min_lr as the budget ends), gradient clipping; and, like
`mlxgpt train` on a CPU, the batch split over CPU streams (mlxgpt/fast/streams.py; --streams 1 for
the textbook step) and MLX's CPU kernels compiled with mlxgpt's JIT flags (mlxgpt/fast/jit.py).

Time: the budget is training time, counted from the end of the first step: that step traces and
compiles the graph (and, on a cold kernel cache, builds its CPU kernels) and is reported on its own
as compile_s. Evaluations stop the clock. Every --eval-every seconds of training and at the end,
every held-out pair is translated by batched greedy decoding (argmax, one token at a time with a
KV cache, all pairs at once; the GPT's prompts grouped by length, so no row is padded) and scored
by exact match and character error rate (CER: edit distance / reference characters). --beam N adds
beam search (mlxgpt.seq2seq.beam_search, one pair at a time) for the encoder-decoder's final score.

Writes translate_numbers.json and .md to --out (default out/experiments/translate_numbers) and
prints the table, the learning curves and a few translations (97, 71, 80, 1999 are training pairs
with the default seed: the table says which examples were held out).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Callable, Iterator

import mlxgpt  # noqa: F401  (loads the fast BLAS before mlx.core)
import mlx.core as mx
import numpy as np
from mlx.utils import tree_map

from experiments.first_minutes import machine
from experiments.runs import write_results
from mlxgpt.config import ModelArgs, TrainArgs
from mlxgpt.errors import MlxgptError
from mlxgpt.fast import streams as fast_streams
from mlxgpt.fast.device import configure_device
from mlxgpt.fast.jit import setup_jit_flags
from mlxgpt.model import GPT
from mlxgpt.seq2seq.data import (PairVocabulary, batch_rows, character_error_rate, exact_match,
                                 needed_block_size, number_pairs, sample_batches, split_numbers)
from mlxgpt.seq2seq.model import EncoderDecoder, Seq2SeqArgs, beam_search, padding_mask
from mlxgpt.seq2seq.model import loss as seq2seq_loss
from mlxgpt.tokenizers.char import CharTokenizer
from mlxgpt.training import (build_optimizer, clock_learning_rate, lr_schedule, make_train_step,
                             set_learning_rate, value_and_grad)

SEPARATOR = " => "  # the GPT's line: source + SEPARATOR + target + "\n"
EXAMPLES = (97, 71, 80, 1999)  # the examples; held-out ones are added by examples()
QUICK = dict(budget=10.0, eval_every=5.0, val_pairs=200, n_encoder_layers=1, n_decoder_layers=1, n_embd=32,
             n_head=2, batch_size=16)


# ---------------------------------------------------------------- data


@dataclass
class Task:
    train: list[tuple[str, str]]
    val: list[tuple[str, str]]
    train_numbers: list[int]
    val_numbers: list[int]
    target: str


def make_task(target: str, seed: int, val_pairs: int | None) -> Task:
    """The numbers 1-9,999 split by number (split_numbers), written out en -> target."""
    train_numbers, val_numbers = split_numbers(1, 9999, 0.1, seed)
    if val_pairs is not None and val_pairs < len(val_numbers):  # --quick: a seeded subset of the held-out numbers
        keep = np.random.default_rng([seed, 1]).choice(len(val_numbers), val_pairs, replace=False)
        val_numbers = sorted(val_numbers[i] for i in keep)
    return Task(number_pairs(train_numbers, "en", target), number_pairs(val_numbers, "en", target),
                train_numbers, val_numbers, target)


class GptLines:
    """The pairs as GPT training rows: x = line[:-1], y = line[1:], where line = source => target\\n,
    y = -1 on the source and the separator (only the target and its "\\n" are predicted), and every
    row padded to block_size (x with "\\n", y with -1: a padded position comes after the row's end,
    which a causal model's earlier positions never see)."""

    def __init__(self, tokenizer: CharTokenizer, pairs: list[tuple[str, str]], block_size: int) -> None:
        self.tokenizer, self.block_size = tokenizer, block_size
        self.newline = tokenizer.encode("\n")[0]
        self.x = np.full((len(pairs), block_size), self.newline, dtype=np.int32)
        self.y = np.full((len(pairs), block_size), -1, dtype=np.int32)
        for i, (source, target) in enumerate(pairs):
            prompt = self.prompt(source)
            line = prompt + tokenizer.encode(target + "\n")
            if len(line) - 1 > block_size:
                raise MlxgptError(f"{source!r} => {target!r} needs block_size {len(line) - 1}, more than {block_size}")
            self.x[i, :len(line) - 1] = line[:-1]
            self.y[i, len(prompt) - 1:len(line) - 1] = line[len(prompt):]  # from the first target token on

    def prompt(self, source: str) -> list[int]:
        return self.tokenizer.encode(source + SEPARATOR)

    @staticmethod
    def block_size_for(pairs: list[tuple[str, str]]) -> int:
        """The longest line's input: source, separator, target (its "\\n" is only predicted)."""
        return max(len(source) + len(SEPARATOR) + len(target) for source, target in pairs)


# ---------------------------------------------------------------- models


def gpt_depth_matching(target_params: int, base: ModelArgs, max_layers: int = 32) -> int:
    """The GPT depth (width and heads as given) whose parameter count is closest to target_params."""
    counts = {n: ModelArgs(**{**vars(base), "n_layer": n}).parameter_count() for n in range(1, max_layers + 1)}
    return min(counts, key=lambda n: abs(counts[n] - target_params))


def encdec_loss(model: EncoderDecoder, x: mx.array, y: mx.array, pad: int = 0, source_len: int = 0) -> mx.array:
    """mlxgpt.seq2seq.model.loss on a packed batch: x = [src | tgt_in] (B, Ts + Tt), y = tgt_out with -1
    at padding. `pad` extra padding columns on both sides (never attended to, never predicted: the loss
    is unchanged) give each CPU stream's shard its own shapes (see mlxgpt/fast/streams.py, 3.)."""
    src, tgt_in = x[:, :source_len], x[:, source_len:]
    if pad:
        filler = mx.full((x.shape[0], pad), model.args.pad_id, dtype=x.dtype)
        src, tgt_in = mx.concatenate([src, filler], axis=1), mx.concatenate([tgt_in, filler], axis=1)
        y = mx.concatenate([y, mx.full((y.shape[0], pad), -1, dtype=y.dtype)], axis=1)
    return seq2seq_loss(model, src, tgt_in, y)


def sharded_loss_and_grad(loss_and_grad: Callable, model: Any, x: mx.array, y: mx.array, streams: list,
                          deal: Callable) -> tuple[mx.array, Any]:
    """mlxgpt.fast.streams.sharded_loss_and_grad for the encoder-decoder (that one reads model.args.causal,
    which Seq2SeqArgs has not): shard i on stream i, padded by i; gradients weighed by each shard's targets."""
    batch = x.shape[0]
    shards = min(len(streams), batch)
    if shards < 2:
        return loss_and_grad(model, x, y)
    bounds = [batch * i // shards for i in range(shards + 1)]
    results = []
    for pad, (stream, lo, hi) in enumerate(zip(streams, bounds[:-1], bounds[1:])):
        with mx.stream(stream):
            results.append(loss_and_grad(model, x[lo:hi], y[lo:hi], pad=pad))
    targets = [mx.sum(y[lo:hi] >= 0) for lo, hi in zip(bounds[:-1], bounds[1:])]
    weights = [count / sum(targets) for count in targets]
    loss = sum(w * shard_loss for w, (shard_loss, _) in zip(weights, results))
    grads = tree_map(deal(lambda *gs: sum(w * g for w, g in zip(weights, gs))), *[g for _, g in results])
    return loss, grads


def encdec_step(model: EncoderDecoder, optimizer, grad_clip: float, streams: int, source_len: int):
    """training.make_train_step with the encoder-decoder's packed loss, its batch over `streams` CPU streams."""
    loss = partial(encdec_loss, source_len=source_len)
    if streams < 2:
        return make_train_step(model, optimizer, grad_clip, loss_and_grad=value_and_grad(model, loss))
    shard_streams = fast_streams.cpu_streams(streams)
    deal = fast_streams.dealer(shard_streams)
    fast_streams.deal_updates(optimizer, deal)
    return make_train_step(
        model, optimizer, grad_clip,
        loss_and_grad=partial(sharded_loss_and_grad, value_and_grad(model, loss), streams=shard_streams, deal=deal),
        update=lambda grads: fast_streams.clip_and_update(model, optimizer, grads, grad_clip, deal))


# ---------------------------------------------------------------- batched greedy decoding


def encdec_greedy(model: EncoderDecoder, vocab: PairVocabulary, sources: list[str], chunk: int = 500) -> list[str]:
    """Greedy translations of every source, `chunk` at a time: encode once, then one token per step for
    the whole chunk through the decoder's KV cache, until every row has said eos (or block_size)."""
    model.eval()
    out: list[str] = []
    for start in range(0, len(sources), chunk):
        ids = [vocab.encode(s) for s in sources[start:start + chunk]]
        src = np.full((len(ids), max(map(len, ids))), vocab.pad_id, dtype=np.int32)
        for i, row in enumerate(ids):
            src[i, :len(row)] = row
        src = mx.array(src)
        memory, src_mask = model.encode(src), padding_mask(src, vocab.pad_id)
        cache = model.make_cache()
        tokens = mx.full((len(ids), 1), vocab.bos_id, dtype=mx.int32)
        results: list[list[int]] = [[] for _ in ids]
        done = np.zeros(len(ids), dtype=bool)
        for _ in range(model.args.block_size):
            nxt = mx.argmax(model.decode(tokens, memory, src_mask, cache)[:, -1], axis=-1)
            chosen = np.array(nxt)
            for i in np.flatnonzero(~done):
                if chosen[i] == vocab.eos_id:
                    done[i] = True
                else:
                    results[i].append(int(chosen[i]))
            if done.all():
                break
            tokens = nxt[:, None].astype(mx.int32)
        out += [vocab.decode(r) for r in results]
    model.train()
    return out


def gpt_greedy(model: GPT, lines: GptLines, sources: list[str], chunk: int = 500) -> list[str]:
    """Greedy continuations of "source => " until "\\n" (or block_size): the prompts grouped by length,
    each group decoded together, one token per step through the KV cache (no padding anywhere)."""
    model.eval()
    prompts = [lines.prompt(s) for s in sources]
    groups: dict[int, list[int]] = defaultdict(list)
    for i, p in enumerate(prompts):
        groups[len(p)].append(i)
    out: list[list[int]] = [[] for _ in sources]
    block = model.args.block_size
    for length, members in groups.items():
        for start in range(0, len(members), chunk):
            rows = members[start:start + chunk]
            cache = model.make_cache()
            logits = model(mx.array([prompts[i] for i in rows]), cache)[:, -1]
            done = np.zeros(len(rows), dtype=bool)
            while True:
                nxt = mx.argmax(logits, axis=-1)
                chosen = np.array(nxt)
                for j in np.flatnonzero(~done):
                    if chosen[j] == lines.newline:
                        done[j] = True
                    else:
                        out[rows[j]].append(int(chosen[j]))
                if done.all() or cache[0].offset >= block:
                    break
                logits = model(nxt[:, None].astype(mx.int32), cache)[:, -1]
    model.train()
    return [lines.tokenizer.decode(r) for r in out]


# ---------------------------------------------------------------- training for a budget


class CpuShare:
    """How much of the machine's CPU time went to *other* processes between start() and share():
    a timing taken while something else ran is slower than this machine is, and says so.
    Linux only (/proc/stat); None elsewhere."""

    def __init__(self) -> None:
        self.start = self._read()

    @staticmethod
    def _read() -> tuple[float, float, float] | None:
        try:
            fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        except (OSError, ValueError):
            return None
        ticks = os.sysconf("SC_CLK_TCK")
        busy = sum(fields) - fields[3] - (fields[4] if len(fields) > 4 else 0)  # all but idle and iowait
        own = os.times()
        return busy / ticks, own.user + own.system, time.perf_counter()

    def share(self) -> float | None:
        """Other processes' CPU seconds / (wall seconds * cores) since construction."""
        end = self._read()
        if self.start is None or end is None:
            return None
        wall = end[2] - self.start[2]
        others = (end[0] - self.start[0]) - (end[1] - self.start[1])
        return max(0.0, others / (wall * (os.cpu_count() or 1))) if wall > 0 else None


@dataclass
class Contender:
    """One model, ready to train: its step, the state its compiled step carries, its batches, its decoder."""

    name: str
    label: str
    model: Any
    params: int
    shape: dict
    optimizer: Any
    step: Callable
    state: list
    batches: Iterator[tuple[np.ndarray, np.ndarray]]
    positions_per_step: int  # batch * sequence positions computed (padding included)
    translate: Callable[[list[str]], list[str]]
    extra: dict = field(default_factory=dict)


def score(contender: Contender, task: Task) -> dict:
    began = time.perf_counter()
    predictions = contender.translate([s for s, _ in task.val])
    references = [t for _, t in task.val]
    return dict(exact_match=exact_match(predictions, references), cer=character_error_rate(predictions, references),
                decode_s=time.perf_counter() - began, predictions=predictions)


def train_for_budget(c: Contender, targs: TrainArgs, task: Task, eval_every: float) -> dict:
    """Train c until targs.time_budget seconds of training have passed (evaluations and the first,
    compiling step not counted), evaluating every eval_every seconds and at the end."""
    schedule = lr_schedule(targs)
    budget = targs.time_budget

    def run_step(iteration: int, elapsed: float):
        x, y = next(c.batches)
        set_learning_rate(c.optimizer, targs, clock_learning_rate(schedule, targs, iteration, elapsed))
        return c.step(mx.array(x)[None], mx.array(y)[None])

    cpu = CpuShare()
    began = time.perf_counter()
    loss, norm = run_step(0, 0.0)
    mx.eval(c.state, loss, norm)
    compile_s = time.perf_counter() - began
    print(f"  {c.name}: compile + first step {compile_s:.1f} s, loss {loss.item():.3f}", flush=True)

    iters, train_s, curve, last_loss = 1, 0.0, [], loss.item()
    next_eval, next_log = eval_every, 10.0
    clock = time.perf_counter()
    queued = None
    log_iters, log_s = 0, 0.0

    def drain() -> None:
        nonlocal queued, last_loss
        if queued is not None:
            last_loss, queued = queued[0].item(), None

    def evaluate() -> dict:
        nonlocal clock, train_s
        drain()  # the queued step's time is training time
        train_s += time.perf_counter() - clock
        result = score(c, task)
        curve.append(dict(train_s=round(train_s, 1), iters=iters, loss=last_loss, exact_match=result["exact_match"],
                          cer=result["cer"], decode_s=round(result["decode_s"], 2)))
        print(f"  {c.name}: {train_s:6.1f} s, step {iters:5d}, loss {last_loss:.4f}: held-out exact match "
              f"{result['exact_match']:.1%}, CER {result['cer']:.2%} (decoded in {result['decode_s']:.1f} s)",
              flush=True)
        clock = time.perf_counter()
        return result

    final = None
    while True:
        now = time.perf_counter()
        train_s += now - clock
        log_s += now - clock
        clock = now
        if train_s >= budget:
            final = evaluate()
            break
        if train_s >= next_eval:
            evaluate()
            next_eval += eval_every
        if train_s >= next_log:
            print(f"  {c.name}: {train_s:6.1f} s, step {iters:5d}, loss {last_loss:.4f}, "
                  f"lr {c.optimizer.learning_rate.item():.2e}, {1000 * log_s / max(1, log_iters):.0f} ms/step",
                  flush=True)
            next_log += 10.0
            log_iters, log_s = 0, 0.0
        loss, norm = run_step(iters, train_s)
        mx.async_eval(c.state, loss, norm)
        iters, log_iters = iters + 1, log_iters + 1
        previous, queued = queued, (loss, norm)
        if previous is not None:
            last_loss = previous[0].item()
            if not math.isfinite(last_loss):
                raise MlxgptError(f"{c.name} diverged at step {iters}: loss {last_loss}; try a lower --lr")
    others = cpu.share()
    if others is not None and others > 0.05:
        print(f"  WARNING: other processes used {others:.0%} of the CPUs during this run: its timings are slower "
              "than this machine's", flush=True)
    return dict(others_cpu_share=others, compile_s=compile_s, iters=iters, train_s=train_s, final_loss=last_loss,
                curve=curve,
                exact_match=final["exact_match"], cer=final["cer"], predictions=final["predictions"],
                pairs_per_s=(iters - 1) * targs.batch_size / train_s,
                tokens_per_s=(iters - 1) * c.positions_per_step / train_s,
                epochs=iters * targs.batch_size / len(task.train))


# ---------------------------------------------------------------- set-up


def train_args(lr: float, args: argparse.Namespace, budget: float) -> TrainArgs:
    targs = TrainArgs(batch_size=args.batch_size, max_iters=10**9, lr=lr, min_lr=lr * args.min_lr_ratio,
                      warmup_iters=args.warmup, lr_decay_iters=10**9, weight_decay=args.weight_decay,
                      grad_clip=1.0, seed=args.seed, time_budget=budget)
    targs.validate()
    return targs


def build_encdec(task: Task, args: argparse.Namespace, targs: TrainArgs, streams: int) -> Contender:
    vocab = PairVocabulary.from_pairs(task.train)
    needed = needed_block_size(task.train + task.val)
    # one more position than the longest pair needs: room for a CPU stream shard's padding column
    margs = Seq2SeqArgs(vocab_size=vocab.vocab_size, n_encoder_layers=args.encoder_layers,
                        n_decoder_layers=args.decoder_layers, n_head=args.n_head, n_embd=args.n_embd,
                        block_size=needed + streams - 1)
    mx.random.seed(args.seed)
    model = EncoderDecoder(margs)
    optimizer = build_optimizer(targs)
    step, state = encdec_step(model, optimizer, targs.grad_clip, streams, source_len=needed)

    def batches():
        for src, tgt_in, tgt_out in sample_batches(task.train, vocab, targs.batch_size, needed, args.seed):
            yield np.concatenate([src, tgt_in], axis=1), np.where(tgt_out == vocab.pad_id, -1, tgt_out)

    shape = dict(n_encoder_layers=margs.n_encoder_layers, n_decoder_layers=margs.n_decoder_layers,
                 n_embd=margs.n_embd, n_head=margs.n_head, vocab_size=margs.vocab_size, block_size=margs.block_size,
                 pos_embedding=margs.pos_embedding)
    label = f"encoder-decoder {margs.n_encoder_layers}+{margs.n_decoder_layers} layers, {margs.n_embd} wide"
    return Contender("encdec", label, model, model.num_params(), shape, optimizer, step, state, batches(),
                     targs.batch_size * 2 * needed, partial(encdec_greedy, model, vocab), dict(vocab=vocab))


def build_gpt(task: Task, args: argparse.Namespace, targs: TrainArgs, streams: int, match_params: int) -> Contender:
    pairs = task.train + task.val
    tokenizer = CharTokenizer.train("".join(f"{s}{SEPARATOR}{t}\n" for s, t in task.train))
    block_size = GptLines.block_size_for(pairs)
    base = ModelArgs(vocab_size=tokenizer.vocab_size, block_size=block_size, n_layer=1, n_head=args.n_head,
                     n_embd=args.gpt_embd or args.n_embd, dropout=0.0, bias=False, pos_embedding=args.gpt_pos)
    n_layer = args.gpt_layers or gpt_depth_matching(match_params, base)
    margs = ModelArgs(**{**vars(base), "n_layer": n_layer})
    lines = GptLines(tokenizer, task.train, block_size)
    mx.random.seed(args.seed)
    model = GPT(margs)
    optimizer = build_optimizer(targs)
    step, state = fast_streams.make_train_step(model, optimizer, targs.grad_clip, streams)

    def batches():
        index = 0
        while True:
            rows = batch_rows(len(task.train), targs.batch_size, args.seed, index)
            yield lines.x[rows], lines.y[rows]
            index += 1

    shape = dict(n_layer=n_layer, n_embd=margs.n_embd, n_head=margs.n_head, vocab_size=margs.vocab_size,
                 block_size=block_size, pos_embedding=margs.pos_embedding)
    return Contender("gpt", f"GPT {n_layer} layers, {margs.n_embd} wide, {margs.pos_embedding} positions, source as prompt", model,
                     margs.parameter_count(), shape, optimizer, step, state, batches(),
                     targs.batch_size * block_size, partial(gpt_greedy, model, lines))


def examples(task: Task, count: int = 4) -> list[tuple[int, bool]]:
    """(number, held out?): the issue's examples, then the first `count` held-out numbers under 100 and
    a few held-out ones above 1,000 (the split's own, so they differ with --seed)."""
    held = set(task.val_numbers)
    extra = [n for n in task.val_numbers if n < 100][:count] + [n for n in task.val_numbers if n > 1000][::250][:count]
    return [(n, n in held) for n in (*EXAMPLES, *extra)]


def translate_examples(c: Contender, task: Task, numbers: list[tuple[int, bool]]) -> list[dict]:
    pairs = number_pairs([n for n, _ in numbers], "en", task.target)
    outputs = c.translate([s for s, _ in pairs])
    return [dict(number=n, held_out=held, source=s, reference=t, output=o)
            for (n, held), (s, t), o in zip(numbers, pairs, outputs)]


# ---------------------------------------------------------------- report


def markdown(results: dict) -> str:
    m = results["machine"]
    lines = [f"{m['date'][:10]}: {m['cpu']}, {m['cores']} cores; MLX {m['mlx']}; `{results['command']}`; "
             f"en -> {results['target']}, {results['train_pairs']} training / {results['val_pairs']} held-out pairs "
             f"(split by number, seed {results['seed']}); {results['budget']:g} s of training each, "
             f"{results['streams']} CPU stream(s)" + ("; **--quick**" if results["quick"] else ""), "",
             "| model | params | steps | epochs | pairs/s | tokens/s | compile s | train s | held-out exact match "
             "(greedy) | beam | CER | others' CPU |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results["runs"].values():
        beam = f"{r['beam_exact_match']:.1%}" if "beam_exact_match" in r else "—"
        others = "?" if r["others_cpu_share"] is None else f"{r['others_cpu_share']:.0%}"
        lines.append(f"| {r['label']} | {r['params']:,} | {r['iters']} | {r['epochs']:.1f} | {r['pairs_per_s']:.0f} "
                     f"| {r['tokens_per_s'] / 1000:.1f}k | {r['compile_s']:.1f} | {r['train_s']:.0f} "
                     f"| **{r['exact_match']:.1%}** | {beam} | {r['cer']:.2%} |")
    runs = list(results["runs"].values())
    lines += ["", "tokens/s: sequence positions computed per second, padding included (encoder-decoder: source + "
                  "target block; GPT: the whole line). others' CPU: the share of the machine's CPU time other "
                  "processes took during the run (0% for a clean timing)."]
    if len(runs) == 2:
        a, b = runs
        lines += ["", f"{a['label']} − {b['label']}: {100 * (a['exact_match'] - b['exact_match']):+.1f} points of "
                      f"exact match, {100 * (a['cer'] - b['cer']):+.2f} points of CER."]
    lines += ["", "Learning curves (training seconds: held-out exact match / CER):", ""]
    for r in runs:
        points = ", ".join(f"{p['train_s']:.0f} s: {p['exact_match']:.1%} / {p['cer']:.1%}" for p in r["curve"])
        lines.append(f"- {r['name']}: {points}")
    lines += ["", "| number | held out | source | reference | " + " | ".join(r["name"] for r in runs) + " |",
              "|---:|---|---|---|" + "---|" * len(runs)]
    for i, example in enumerate(runs[0]["examples"] if runs else []):
        outs = []
        for r in runs:
            o = r["examples"][i]["output"]
            outs.append(f"{o} ✓" if o == example["reference"] else f"{o} ✗")
        lines.append(f"| {example['number']} | {'yes' if example['held_out'] else 'no (trained)'} | "
                     f"{example['source']} | {example['reference']} | " + " | ".join(outs) + " |")
    for r in runs:
        if r["errors"]:
            lines += ["", f"{r['name']}: first held-out errors: " + "; ".join(
                f"{e['number']}: {e['output']!r} (want {e['reference']!r})" for e in r["errors"][:6])]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m experiments.translate_numbers", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--budget", type=float, default=None, help="seconds of training per model (default 600; "
                   f"--quick: {QUICK['budget']:g})")
    p.add_argument("--models", nargs="+", choices=["encdec", "gpt"], default=["encdec", "gpt"],
                   help="which to train, in this order (default: both)")
    p.add_argument("--target", choices=["fr", "de"], default="fr", help="target language (default fr)")
    p.add_argument("--seed", type=int, default=0, help="the split, the initial weights and the batch order (default 0)")
    p.add_argument("--encoder-layers", type=int, default=2)
    p.add_argument("--decoder-layers", type=int, default=2)
    p.add_argument("--n-embd", type=int, default=128, help="width of both models (default 128)")
    p.add_argument("--n-head", type=int, default=4)
    p.add_argument("--gpt-layers", type=int, default=None, help="the GPT's depth (default: matched to the "
                   "encoder-decoder's parameter count)")
    p.add_argument("--gpt-embd", type=int, default=None, help="the GPT's width (default: --n-embd)")
    p.add_argument("--gpt-pos", choices=["learned", "sinusoidal", "rope"], default="rope",
                   help="the GPT's positions (default rope; learned: GPT-2's)")
    p.add_argument("--batch-size", type=int, default=32, help="pairs per step, both models (default 32)")
    p.add_argument("--lr", type=float, default=2e-3, help="the encoder-decoder's peak learning rate (default 2e-3)")
    p.add_argument("--gpt-lr", type=float, default=3e-3, help="the GPT's peak learning rate (default 3e-3)")
    p.add_argument("--min-lr-ratio", type=float, default=0.1, help="min_lr / lr at the end of the cosine")
    p.add_argument("--warmup", type=int, default=30, help="warmup steps (default 30)")
    p.add_argument("--weight-decay", type=float, default=0.1)
    p.add_argument("--streams", type=int, default=None, help="CPU streams per step (default: as `mlxgpt train`, "
                   "one per core up to 4; 1: the textbook step)")
    p.add_argument("--eval-every", type=float, default=None, help="seconds of training between held-out "
                   "evaluations (default 60; not counted in the budget)")
    p.add_argument("--beam", type=int, default=0, help="beam width for the encoder-decoder's final score "
                   "(0: greedy only)")
    p.add_argument("--val-pairs", type=int, default=None, help="score on this many held-out pairs (default all)")
    p.add_argument("--quick", action="store_true", help=f"tiny models, {QUICK['budget']:g} s each, "
                   f"{QUICK['val_pairs']} held-out pairs: checks the set-up end to end in ~30 s")
    p.add_argument("--out", type=Path, default=Path("out/experiments/translate_numbers"),
                   help="where translate_numbers.json/.md go")
    args = p.parse_args(argv)
    if args.quick:
        for key in ("n_embd", "n_head", "batch_size"):
            if getattr(args, key) == p.get_default(key):
                setattr(args, key, QUICK[key])
        args.encoder_layers, args.decoder_layers = QUICK["n_encoder_layers"], QUICK["n_decoder_layers"]
    budget = args.budget if args.budget is not None else (QUICK["budget"] if args.quick else 600.0)
    eval_every = args.eval_every if args.eval_every is not None else (QUICK["eval_every"] if args.quick else 60.0)
    val_pairs = args.val_pairs if args.val_pairs is not None else (QUICK["val_pairs"] if args.quick else None)
    if budget <= 0 or eval_every <= 0:
        p.error("--budget and --eval-every must be positive")
    command = "python -m experiments.translate_numbers " + " ".join(argv if argv is not None else sys.argv[1:])

    jit = setup_jit_flags()  # before MLX compiles anything, as mlxgpt's own commands do
    settings = configure_device(args.streams)
    try:
        task = make_task(args.target, args.seed, val_pairs)
        # the encoder-decoder is built first (even when only the GPT trains): the GPT's size is matched to it
        contenders = {}
        encdec = build_encdec(task, args, train_args(args.lr, args, budget), settings.streams)
        contenders["encdec"] = encdec
        contenders["gpt"] = build_gpt(task, args, train_args(args.gpt_lr, args, budget), settings.streams,
                                      encdec.params)
    except MlxgptError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"en -> {args.target}: {len(task.train)} training pairs, {len(task.val)} held out; {budget:g} s each; "
          f"{settings.describe() or 'GPU'}; JIT flags: {jit}", flush=True)
    for c in contenders.values():
        print(f"  {c.name}: {c.label}: {c.params:,} parameters", flush=True)
    ratio = contenders["gpt"].params / contenders["encdec"].params
    print(f"  GPT / encoder-decoder parameters: {ratio:.3f}", flush=True)

    results = dict(machine=machine(), command=command.strip(), quick=args.quick, budget=budget, target=args.target,
                   seed=args.seed, train_pairs=len(task.train), val_pairs=len(task.val), streams=settings.streams,
                   blas_threads=settings.blas_threads, jit_flags=jit, batch_size=args.batch_size,
                   warmup=args.warmup, weight_decay=args.weight_decay, min_lr_ratio=args.min_lr_ratio,
                   params_ratio_gpt_over_encdec=ratio, runs={})
    shown = examples(task)
    for name in args.models:
        c = contenders[name]
        lr = args.lr if name == "encdec" else args.gpt_lr
        print(f"\n{c.label} ({c.params:,} parameters), lr {lr:g}, batch {args.batch_size}:", flush=True)
        try:
            row = train_for_budget(c, train_args(lr, args, budget), task, eval_every)
        except MlxgptError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        predictions = row.pop("predictions")
        row.update(name=name, label=c.label, params=c.params, lr=lr, shape=c.shape,
                   examples=translate_examples(c, task, shown),
                   errors=[dict(number=n, output=o, reference=t) for n, o, (_, t)
                           in zip(task.val_numbers, predictions, task.val) if o != t][:50])
        if name == "encdec" and args.beam > 0:
            vocab = c.extra["vocab"]
            began = time.perf_counter()
            c.model.eval()
            beamed = [vocab.decode(beam_search(c.model, vocab.encode(s), vocab.bos_id, vocab.eos_id,
                                               c.model.args.block_size, beam_width=args.beam)) for s, _ in task.val]
            references = [t for _, t in task.val]
            row.update(beam=args.beam, beam_exact_match=exact_match(beamed, references),
                       beam_cer=character_error_rate(beamed, references), beam_s=time.perf_counter() - began)
            print(f"  encdec: beam {args.beam}: exact match {row['beam_exact_match']:.1%}, CER {row['beam_cer']:.2%} "
                  f"({row['beam_s']:.0f} s)", flush=True)
        results["runs"][name] = row
        write_results(args.out, "translate_numbers", markdown(results), results)  # so far: a stopped run keeps it
    print("\n" + markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
