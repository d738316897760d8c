"""The training loop: a compiled step, the learning-rate schedule, evaluation, checkpoints.

Read in this order: the loss, the optimizer and its schedule, the compiled step,
then `train()`, the loop itself. It reports what happens as events (events.py) and
knows nothing of screens. mlxgpt/fast may plug its own step into the loop (Run.make_step).

Coming from PyTorch: MLX is functional and lazy. `nn.value_and_grad(model, loss_fn)`
returns a function that computes the loss *and* the gradients with respect to the
model's parameters (no .backward(), no .grad on tensors); operations only build a
graph until `mx.eval` runs it; and `mx.compile` turns the whole step into one graph
that MLX can fuse and replay, with the model, optimizer and RNG declared as state.
"""

from __future__ import annotations

import math
import signal
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any, Callable, Iterator

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np
from mlx.utils import tree_map

from mlxgpt.checkpoint import save_checkpoint
from mlxgpt.config import TrainArgs
from mlxgpt.data import Dataset, LinesDataset
from mlxgpt.distributed import SINGLE, World, mean_across
from mlxgpt.events import (CheckpointSaved, EvalDone, EventHandler, RunFinished, SampleGenerated,
                           StepLogged)
from mlxgpt.generate import generate
from mlxgpt.model import GPT
from mlxgpt.tokenizers import Tokenizer


def loss_fn(model: GPT, x: mx.array, y: mx.array) -> mx.array:
    """Mean next-token cross-entropy in nats, over every position of every row that has a target.
    (In float32 even when the model computes in bfloat16: a log-softmax over the vocabulary
    needs the precision.)"""
    return masked_cross_entropy(model(x).astype(mx.float32), y)


def masked_cross_entropy(logits: mx.array, y: mx.array) -> mx.array:
    """The mean cross-entropy over the positions with a target: y is -1 where nothing is to be
    predicted (after a short example has ended, in --format lines); continuous text has none."""
    has_target = y >= 0
    losses = nn.losses.cross_entropy(logits, mx.maximum(y, 0), reduction="none")
    return mx.sum(mx.where(has_target, losses, 0.0)) / mx.sum(has_target)


def lr_schedule(args: TrainArgs) -> Callable[[mx.array], mx.array]:
    """nanoGPT's schedule: linear warmup to lr, then cosine decay to min_lr by decay_iters.

    Warmup keeps the first, largest and least informed updates small while AdamW's
    moment estimates settle; the cosine then lowers the step size as the loss flattens.
    Built from mlx.optimizers schedules, so the step count (and thus the lr)
    lives in the optimizer state and survives a checkpoint."""
    cosine = optim.cosine_decay(args.lr, max(1, args.decay_iters - args.warmup_iters), end=args.min_lr)
    if args.warmup_iters == 0:
        return cosine
    # linear from lr/(w+1) at step 0 to lr at step w: lr * (step + 1) / (w + 1), as in nanoGPT
    warmup = optim.linear_schedule(args.lr / (args.warmup_iters + 1), args.lr, args.warmup_iters)
    return optim.join_schedules([warmup, cosine], [args.warmup_iters])


def clock_learning_rate(schedule: Callable[[mx.array], mx.array], args: TrainArgs, iteration: int,
                        elapsed: float) -> mx.array:
    """The learning rate of a --time-budget run: the lower of the schedule at the steps taken
    and at the share of the budget spent (times lr_decay_iters), if that is further along.

    So the cosine follows the clock: the run reaches min_lr as its budget ends on a slow
    machine as on a fast one (one that reaches max_iters first follows its steps, as
    without a budget), while the warmup still takes its warmup_iters steps however long
    the first evaluation and compilation took. The price: the schedule depends on how
    fast this machine was, so such a run is not bit-reproducible; step-based runs are."""
    by_clock = max(float(iteration), elapsed / args.time_budget * args.decay_iters)
    return mx.minimum(schedule(mx.array(float(iteration))), schedule(mx.array(by_clock)))


def build_optimizer(args: TrainArgs) -> optim.MultiOptimizer:
    """AdamW with weight decay on matrices (>= 2-D: matmul weights, embeddings) only,
    not on biases and LayerNorm gains (nanoGPT's configure_optimizers): decay pulls
    weights towards zero, which regularises a matrix but would only fight a gain.

    --optimizer muon puts the blocks' weight matrices on Muon instead (K. Jordan,
    "Muon: an optimizer for hidden layers", 2024; the modded-nanogpt speed records):
    momentum whose update matrix is orthogonalised by a few Newton-Schulz steps, so
    every direction of the matrix moves, not just the dominant few. Embeddings, the
    head and the gains stay on AdamW, as there. Measured on tiny Shakespeare, 1200
    steps of cpu-speedrun: val 1.781 (AdamW) -> 1.627 (Muon, lr 0.02), each step ~15%
    slower (docs/benchmarks.md).

    With a --time-budget, the learning rates are set by the loop before each step
    (clock_learning_rate); without one, the optimizers' own step counts drive the schedule."""
    def schedule_for(peak: float):
        scaled = lr_schedule(replace(args, lr=peak, min_lr=args.min_lr * peak / args.lr))
        return scaled if args.time_budget is None else scaled(mx.array(0.0))

    adamw = partial(optim.AdamW, learning_rate=schedule_for(args.lr), betas=[args.beta1, args.beta2], eps=1e-8,
                    bias_correction=True)  # PyTorch's AdamW corrects the moment estimates' bias
    if args.optimizer == "muon":
        muon = optim.Muon(learning_rate=schedule_for(args.muon_lr), momentum=0.95, weight_decay=0.0)
        return optim.MultiOptimizer([adamw(weight_decay=args.weight_decay), muon, adamw(weight_decay=0.0)],
                                    [lambda path, weight: weight.ndim >= 2 and not is_block_matrix(path, weight),
                                     is_block_matrix])
    return optim.MultiOptimizer([adamw(weight_decay=args.weight_decay), adamw(weight_decay=0.0)],
                                [lambda path, weight: weight.ndim >= 2])


def is_block_matrix(path: str, weight: mx.array) -> bool:
    """A transformer block's weight matrix (attention and MLP projections): Muon's share."""
    return weight.ndim == 2 and path.startswith("h.")


def set_learning_rate(optimizer: optim.MultiOptimizer, args: TrainArgs, lr: mx.array) -> None:
    """Set AdamW's learning rate to `lr`, and Muon's (if any) in proportion: muon_lr / lr."""
    for part in optimizer.optimizers:
        part.learning_rate = lr * (args.muon_lr / args.lr) if isinstance(part, optim.Muon) else lr


def clip_and_update(model: GPT, optimizer: optim.Optimizer, grad_clip: float, grads: Any) -> mx.array:
    """Scale the gradients down if their global norm exceeds grad_clip (0: never), apply the
    optimizer, and return the norm before clipping (the dashboard shows it)."""
    grads, norm = optim.clip_grad_norm(grads, grad_clip if grad_clip > 0 else math.inf)
    optimizer.update(model, grads)
    return norm


@contextmanager
def computing_in(model: GPT, dtype: mx.Dtype) -> Iterator[None]:
    """Run the model in `dtype` (bfloat16, float16) inside the block, its float32 weights back after.

    Mixed precision, as torch.autocast does it: the matmuls run in half precision (on a
    GPU, twice as fast and half the activation memory) while the weights that AdamW
    updates stay float32, so that small updates are not rounded away."""
    if dtype == mx.float32:
        yield
        return
    weights = model.parameters()
    model.update(tree_map(lambda w: w.astype(dtype), weights))
    try:
        yield
    finally:
        model.update(weights)


def value_and_grad(model: GPT, loss: Callable, dtype: mx.Dtype = mx.float32) -> Callable:
    """nn.value_and_grad(model, loss), computed in `dtype`. The gradients come back float32
    (the cast's own gradient casts them back), so clipping and AdamW work in float32."""
    if dtype == mx.float32:
        return nn.value_and_grad(model, loss)

    def loss_of(weights, *args, **kwargs):
        model.update(weights)
        with computing_in(model, dtype):
            return loss(*args, **kwargs)

    loss_and_grad = mx.value_and_grad(loss_of)
    return lambda *args, **kwargs: loss_and_grad(model.trainable_parameters(), *args, **kwargs)


StepFactory = Callable[..., tuple[Callable[[mx.array, mx.array], tuple[mx.array, mx.array]], list]]


def make_train_step(model: GPT, optimizer: optim.Optimizer, grad_clip: float, world: World = SINGLE, *,
                    dtype: mx.Dtype = mx.float32, loss_and_grad: Callable | None = None,
                    update: Callable | None = None):
    """One optimizer step, compiled: `step(x, y)` with x, y of shape (accum, B, T).

    The model's parameters, the optimizer's moments and MLX's RNG (dropout) are
    declared as state so the compiled functions may read and replace them; the caller
    then runs it all with one mx.eval per step (mlx-examples' transformer_lm).

    Gradient accumulation (accum > 1) averages the gradients of `accum` micro-batches,
    each evaluated on its own before the next starts: that is accumulation's point, a
    big batch in small memory. (In one graph, MLX would keep every micro-batch's
    activations until the end: measured 7.0 GiB for shakespeare-char as 16 x 4, against
    2.05 GiB for one micro-batch of 16.) With one micro-batch the whole step is one graph.

    In a distributed run every rank computes gradients on its own batch and they
    are averaged across ranks inside the compiled step, before clipping, so all
    ranks apply the same update and keep identical parameters.

    `dtype` is the precision of the forward and backward passes (see computing_in).
    mlxgpt/fast/streams.py passes its own `loss_and_grad(model, x, y)` (the batch split
    over CPU streams) and `update(grads) -> norm` (dealt out over them): same math."""
    state = [model.state, optimizer.state, mx.random.state]
    loss_and_grad = loss_and_grad or value_and_grad(model, loss_fn, dtype)
    update = update or partial(clip_and_update, model, optimizer, grad_clip)

    def apply(loss: mx.array, grads: Any) -> tuple[mx.array, mx.array]:
        if world.size > 1:
            grads = nn.average_gradients(grads, group=world.group)
            loss = mx.distributed.all_sum(loss, group=world.group) / world.size
        return loss, update(grads)

    @partial(mx.compile, inputs=state, outputs=state)
    def whole_step(x: mx.array, y: mx.array) -> tuple[mx.array, mx.array]:
        return apply(*loss_and_grad(model, x, y))

    micro_step = mx.compile(partial(loss_and_grad, model), inputs=state, outputs=state)
    apply_mean = mx.compile(lambda total, grads, accum: apply(total / accum, tree_map(lambda g: g / accum, grads)),
                            inputs=state, outputs=state)

    def step(x: mx.array, y: mx.array) -> tuple[mx.array, mx.array]:
        accum = x.shape[0]
        if accum == 1:
            return whole_step(x[0], y[0])
        total, grads = micro_step(x[0], y[0])
        for i in range(1, accum):
            mx.eval(total, grads)  # this micro-batch's activations are freed before the next one's
            micro_loss, micro_grads = micro_step(x[i], y[i])
            total, grads = total + micro_loss, tree_map(mx.add, grads, micro_grads)
        return apply_mean(total, grads, mx.array(accum, mx.float32))

    return step, state


def make_eval_loss(model: GPT, dtype: mx.Dtype = mx.float32):
    """Compiled mean loss of a batch, for evaluation (no gradients, no dropout), in `dtype`."""
    def eval_loss(x: mx.array, y: mx.array) -> mx.array:
        with computing_in(model, dtype):
            return loss_fn(model, x, y)

    return mx.compile(eval_loss, inputs=model.state)


@dataclass
class LoopState:
    """Everything besides weights and optimizer that --resume needs to continue exactly."""

    iter: int = 0  # optimizer steps completed
    best_val_loss: float = math.inf
    best_val_bpc: float = math.inf
    last_val_loss: float = math.inf
    evaluated_at: int = -1
    world_size: int = 1  # ranks that trained it (resume needs the same number)
    evals_without_improvement: int = 0  # for --early-stop-evals
    elapsed_s: float = 0.0  # wall-clock seconds of training so far, evaluations included (--time-budget)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "LoopState":
        """From state.json, where null stands for "no loss yet" (infinity)."""
        return cls(**{k: math.inf if v is None else v for k, v in values.items() if k in cls.__dataclass_fields__})

    def to_dict(self) -> dict[str, Any]:
        """For state.json: strict JSON has no infinity, so "no loss yet" is null."""
        return {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in asdict(self).items()}


@dataclass
class Run:
    """A training run, assembled by runner.py and consumed by train()."""

    model: GPT
    optimizer: optim.MultiOptimizer
    tokenizer: Tokenizer
    data: Dataset | LinesDataset
    args: TrainArgs
    out_dir: Path
    config_extra: dict[str, Any]  # saved into config.json (preset, data path, ...)
    state: LoopState = field(default_factory=LoopState)
    resume_command: str = ""
    world: World = SINGLE  # this process's rank among the training processes
    make_step: StepFactory = make_train_step  # mlxgpt/fast plugs its own in here
    plain: bool = False  # --plain: samples too are drawn without mlxgpt/fast
    dtype: mx.Dtype = mx.float32  # precision of the forward and backward passes (--dtype)
    sample: Callable[["Run"], str] | None = None  # the eval-time sample's text (default: continue sample_prompt)


def train(run: Run, on_event: EventHandler) -> RunFinished:
    """Train until max_iters (or the time budget, or Ctrl-C); save best/ and latest/."""
    model, args, state = run.model, run.args, run.state
    block_size = model.args.block_size
    model.train()
    rank = run.world.rank
    sampler = run.data.sampler("train", args.batch_size, block_size, args.seed, rank)
    eval_batches = {split: fixed_batches(run.data, split, args, block_size, args.seed + i + 2 * rank)
                    for i, split in ((1, "train"), (2, "val"))}
    step, step_state = run.make_step(model, run.optimizer, args.grad_clip, run.world, dtype=run.dtype)
    eval_loss = make_eval_loss(model, run.dtype)
    tokens_per_iter = args.batch_size * args.grad_accum * block_size * run.world.size
    state.world_size = run.world.size

    started = time.perf_counter()
    train_seconds, interval_seconds, interval_steps, tokens_done = 0.0, 0.0, 0, 0
    reason, diverged = "completed", None
    queued = None  # the last step handed to the device and not yet read back: (iter, loss, norm, lr)
    clock = started  # training time runs from here (evaluations are not counted)

    spent_before = state.elapsed_s  # a resumed run continues the budget it had spent
    schedule = lr_schedule(args)

    def elapsed() -> float:
        return spent_before + time.perf_counter() - started

    def over_budget() -> bool:
        return args.time_budget is not None and elapsed() >= args.time_budget

    def read_back(iteration: int, loss: mx.array, norm: mx.array, lr: mx.array) -> str | None:
        """Wait for a queued step, check it, count its time and log it; a divergence message if it went wrong."""
        nonlocal clock, train_seconds, interval_seconds, interval_steps, tokens_done
        loss_value, norm_value = loss.item(), norm.item()  # waits for the step to finish
        if not (math.isfinite(loss_value) and math.isfinite(norm_value)):
            # the update is already applied: these weights are lost, the last checkpoint is not
            return _divergence(run, f"at iter {iteration} the loss is {loss_value:g} and the gradient norm "
                                    f"{norm_value:g}")
        now = time.perf_counter()
        train_seconds, interval_seconds = train_seconds + now - clock, interval_seconds + now - clock
        clock, interval_steps, tokens_done = now, interval_steps + 1, tokens_done + tokens_per_iter
        if iteration % args.log_interval == 0 or iteration == 1:
            on_event(StepLogged(iter=iteration, max_iters=args.max_iters, train_loss=loss_value,
                                lr=lr.item(), grad_norm=norm_value,
                                ms_per_iter=1000 * interval_seconds / interval_steps,
                                tokens_per_s=tokens_per_iter * interval_steps / interval_seconds,
                                elapsed_s=now - started, active_memory_mb=mx.get_active_memory() / 2**20,
                                peak_memory_mb=mx.get_peak_memory() / 2**20))
            interval_seconds, interval_steps = 0.0, 0
        return None

    with stop_on_interrupt() as stop:
        while True:
            finishing = state.iter >= args.max_iters or over_budget() or stop.requested
            if (state.iter % args.eval_interval == 0 or finishing) and state.evaluated_at != state.iter:
                if queued:  # evaluate and save only the weights of a finished, checked step
                    diverged, queued = read_back(*queued), None
                    if diverged:
                        break
                losses = _evaluate(run, eval_loss, eval_batches)
                bad = [f"{split} loss is {loss:g}" for split, loss in losses.items() if not math.isfinite(loss)]
                if bad:
                    diverged = _divergence(run, f"at iter {state.iter} the {' and the '.join(bad)}")
                    break
                bpc = bits_per_char(losses["val"], run.data.target_tokens("val"), run.data.val_chars)
                is_best = losses["val"] < state.best_val_loss
                if is_best:
                    state.best_val_loss, state.best_val_bpc = losses["val"], bpc
                state.evals_without_improvement = 0 if is_best else state.evals_without_improvement + 1
                state.last_val_loss, state.evaluated_at, state.elapsed_s = losses["val"], state.iter, elapsed()
                on_event(EvalDone(iter=state.iter, train_loss=losses["train"], val_loss=losses["val"], val_bpc=bpc,
                                  lr=_current_lr(run.optimizer),
                                  tokens_per_s=tokens_done / train_seconds if train_seconds else 0.0,
                                  best_val_loss=state.best_val_loss, is_best=is_best,
                                  val_loss_per_example=per_example(run.data, losses["val"])))
                if args.sample_tokens > 0 and run.world.is_main:
                    text = (run.sample or _sample)(run)
                    on_event(SampleGenerated(iter=state.iter, prompt=args.sample_prompt, text=text))
                if is_best:
                    _save(run, "best", on_event)
                _save(run, "latest", on_event)
                clock = time.perf_counter()
                if args.early_stop_evals and state.evals_without_improvement >= args.early_stop_evals:
                    reason = "early stop"  # the val loss stopped improving: best/ holds the model to keep
                    break
            if finishing:
                if state.iter < args.max_iters:
                    reason = "interrupted" if stop.requested else "time budget"
                break

            x, y = sampler.batch(state.iter, args.grad_accum)
            mx.random.seed(step_seed(args.seed, state.iter))  # dropout masks depend on (seed, step) only
            if args.time_budget is not None:  # the schedule follows the clock
                set_learning_rate(run.optimizer, args, clock_learning_rate(schedule, args, state.iter, elapsed()))
            loss, norm = step(mx.array(x), mx.array(y))
            # MLX is lazy: step() only *built* the graph (forward, backward, clip, AdamW).
            # mx.async_eval hands it to the device and returns at once, the new parameters,
            # optimizer moments and RNG state evaluated together. Then, while the device
            # runs this step, Python reads back the *previous* one (its loss, for the log and
            # the divergence check) and prepares the next batch, so a GPU is never left
            # waiting for Python between steps.
            mx.async_eval(step_state, loss, norm)
            state.iter += 1
            previous, queued = queued, (state.iter, loss, norm, _learning_rate(run.optimizer))
            if previous:
                diverged = read_back(*previous)
                if diverged:
                    break

    if diverged:
        reason = "diverged"
    finished = RunFinished(iter=state.iter, reason=reason, best_val_loss=state.best_val_loss,
                           best_val_bpc=state.best_val_bpc, final_val_loss=state.last_val_loss,
                           train_seconds=train_seconds, wall_seconds=time.perf_counter() - started,
                           tokens_per_s=tokens_done / train_seconds if train_seconds else 0.0,
                           out_dir=str(run.out_dir),
                           resume_command=run.resume_command if reason == "interrupted" else None, message=diverged)
    on_event(finished)
    return finished


def _divergence(run: Run, what: str) -> str:
    """The one line that tells a user their run diverged, and what to try."""
    args, state = run.args, run.state
    clip = f"--grad-clip {args.grad_clip:g}" if args.grad_clip > 0 else "--grad-clip 1 (now off)"
    kept = (f"{run.out_dir / 'latest'} keeps iter {state.evaluated_at}" if state.evaluated_at >= 0
            else "no checkpoint was saved")
    return (f"training diverged: {what}; stopped without saving ({kept}); try a lower --lr (now {args.lr:g}) "
            f"or {clip}, then --resume or start a new run")


def _learning_rate(optimizer: optim.MultiOptimizer) -> mx.array:
    """The learning rate the last update used (lazy: the step may still be running)."""
    lr = optimizer.learning_rate
    return lr if isinstance(lr, mx.array) else mx.array(lr)


def _current_lr(optimizer: optim.MultiOptimizer) -> float:
    return _learning_rate(optimizer).item()


def fixed_batches(data: Dataset | LinesDataset, split: str, args: TrainArgs, block_size: int,
                  seed: int) -> list[tuple[mx.array, mx.array]]:
    """The same eval batches every time: eval curves compare like with like, and
    --resume needs no eval RNG state."""
    x, y = data.sampler(split, args.batch_size, block_size, seed).next(args.eval_iters)
    return [(mx.array(x[i]), mx.array(y[i])) for i in range(args.eval_iters)]


def mean_loss(eval_loss, batches: list[tuple[mx.array, mx.array]]) -> float:
    """nanoGPT's estimate: the mean of the batches' losses, all evaluated in one go."""
    values = [eval_loss(x, y) for x, y in batches]
    mx.eval(values)
    return float(np.mean([v.item() for v in values]))


def _evaluate(run: Run, eval_loss, batches: dict[str, list]) -> dict[str, float]:
    run.model.eval()
    losses = {split: mean_loss(eval_loss, split_batches) for split, split_batches in batches.items()}
    run.model.train()
    return dict(zip(losses, mean_across(run.world, list(losses.values()))))


def step_seed(seed: int, iteration: int) -> int:
    """MLX's global RNG cannot be saved and restored, so each step reseeds it
    from (seed, step): --resume then draws the very same dropout masks."""
    return int(np.random.SeedSequence([seed, iteration]).generate_state(1)[0])


def per_example(data: Dataset | LinesDataset, val_loss: float) -> float | None:
    """Nats per whole example (--format lines): the loss per token times the split's tokens per example."""
    if not isinstance(data, LinesDataset):
        return None
    return val_loss * data.target_tokens("val") / data.examples("val")


def bits_per_char(loss_per_token: float, tokens: int, chars: int) -> float:
    """Total nats over the split / characters / ln 2: comparable across tokenizers."""
    return loss_per_token * tokens / chars / math.log(2)


def _save(run: Run, which: str, on_event: EventHandler) -> None:
    if not run.world.is_main:
        return  # rank 0 writes; the others hold identical parameters
    state = run.state
    path = save_checkpoint(run.out_dir / which, run.model, run.tokenizer, train_args=asdict(run.args),
                           extra=run.config_extra, optimizer_state=run.optimizer.state, state=state.to_dict())
    on_event(CheckpointSaved(iter=state.iter, which=which, path=str(path)))


class StopRequests:
    """Ctrl-C asks the loop to stop at the next step boundary (so the checkpoint it
    saves is consistent); a second Ctrl-C stops at once."""

    def __init__(self) -> None:
        self.requested = False

    def _handler(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True


@contextmanager
def stop_on_interrupt() -> Iterator[StopRequests]:
    stop = StopRequests()
    try:
        previous = signal.signal(signal.SIGINT, stop._handler)
    except ValueError:  # not the main thread: no signal handling, Ctrl-C behaves as usual
        yield stop
        return
    try:
        yield stop
    finally:
        signal.signal(signal.SIGINT, previous)


def _sample(run: Run) -> str:
    """A short sample from a fixed prompt and seed, so samples show progress, not luck.
    It uses its own RNG key, so the training RNG (and --resume) is untouched."""
    args = run.args
    pieces = generate(run.model, run.tokenizer, args.sample_prompt, args.sample_tokens,
                      temperature=0.8, seed=args.seed, fast=not run.plain)
    return "".join(piece.text for piece in pieces)
