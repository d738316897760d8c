"""The training step on a multi-core CPU: each batch split over concurrent MLX streams.

Upstream behaviour worked around: MLX's CPU backend runs every op except matmul on
one thread per stream (ml-explore/mlx issues #1218, #2185). A step on one stream uses
one core for everything but the matmuls. So training.make_train_step gets two pieces
from here, with the same math:

1. `sharded_loss_and_grad`: the batch's shards run concurrently, one per stream; the
   batch's gradient is the size-weighted mean of the shards' (the loss is a mean over
   tokens). Measured on 2 cores: baby step 98.6 -> 54.8 ms.
2. `deal`: everything after the backward pass (combining the shards, clipping, AdamW)
   is elementwise per parameter, so parameter i's share runs on stream i mod n instead
   of all on one. Same arithmetic (losses bit-identical); baby step ~5% faster.
3. Shard padding: shard i runs with i extra positions after its last token (zero
   vectors, dropped from the logits; a position never sees later ones, so the real
   logits are unchanged). mx.compile's graph simplification merges nodes with the
   same operation and inputs without comparing their streams, so with equal shapes
   each constant-only node (a scalar broadcast to the activations' shape, ...) would
   exist once, on the first shard's stream, and the other shard would wait for it.
   Different shapes keep them apart: baby step 3-7%, shakespeare-char 14% faster
   (docs/benchmarks.md, "mx.compile merges the two shards' identical nodes").
"""

from __future__ import annotations

import itertools
from functools import partial
from typing import Any, Callable

import mlx.core as mx
import mlx.optimizers as optim
from mlx.utils import tree_flatten, tree_map

from mlxgpt.distributed import SINGLE, World
from mlxgpt.fast.decoding import use_fused_attention
from mlxgpt.fast.device import on_gpu
from mlxgpt.model import GPT
from mlxgpt import training

Deal = Callable[[Callable], Callable]


def _same(f: Callable) -> Callable:
    return f


def cpu_streams(count: int) -> list[mx.Stream]:
    """The default stream and count - 1 new ones on the default device."""
    device = mx.default_device()
    return [mx.default_stream(device)] + [mx.new_stream(device) for _ in range(count - 1)]


def dealer(streams: list[mx.Stream]) -> Deal:
    """deal(f): f, applied to one parameter's arrays, on the next of `streams` in turn
    (parameter i on stream i mod n). With one stream, f itself."""
    if len(streams) < 2:
        return _same
    turns = itertools.cycle(streams)

    def deal(f: Callable) -> Callable:
        def on_next_stream(*arrays: Any) -> Any:
            with mx.stream(next(turns)):
                return f(*arrays)
        return on_next_stream
    return deal


def deal_updates(optimizer: optim.Optimizer, deal: Deal) -> None:
    """Let each AdamW (alone or inside a MultiOptimizer) place its per-parameter updates
    with `deal`: its apply_single, wrapped on the instance. Same arithmetic, same state."""
    for adamw in getattr(optimizer, "optimizers", [optimizer]):
        adamw.apply_single = deal(type(adamw).apply_single.__get__(adamw))


def padded_logits(model: GPT, x: mx.array, pad: int) -> mx.array:
    """model(x) computed with `pad` zero vectors after the last position (see 3. above)."""
    h = model.embed(x)
    if pad:
        h = mx.concatenate([h, mx.zeros((h.shape[0], pad, h.shape[2]), h.dtype)], axis=1)
    for block in model.h:
        h = block(h)
    return model.unembed(model.ln_f(h))[:, : x.shape[1]]


def padded_loss(model: GPT, x: mx.array, y: mx.array, pad: int = 0) -> mx.array:
    return training.masked_cross_entropy(padded_logits(model, x, pad).astype(mx.float32), y)


def sharded_loss_and_grad(loss_and_grad: Callable, model: GPT, x: mx.array, y: mx.array,
                          streams: list[mx.Stream], deal: Deal = _same) -> tuple[mx.array, Any]:
    """Loss and gradients of the batch (x, y), its shards computed concurrently, one per stream."""
    batch = x.shape[0]
    if len(streams) == 1 or batch < 2:
        return loss_and_grad(model, x, y)
    shards = min(len(streams), batch)
    bounds = [batch * i // shards for i in range(shards + 1)]
    results = []
    causal = model.args.causal  # without the mask the padding would be seen: no padding then
    for pad, (stream, lo, hi) in enumerate(zip(streams, bounds[:-1], bounds[1:])):
        with mx.stream(stream):
            results.append(loss_and_grad(model, x[lo:hi], y[lo:hi], pad=pad if causal else 0))
    # each shard's loss is a mean over its targets: weigh it by its share of the batch's targets
    targets = [mx.sum(y[lo:hi] >= 0) for lo, hi in zip(bounds[:-1], bounds[1:])]
    weights = [count / sum(targets) for count in targets]
    loss = sum(w * shard_loss for w, (shard_loss, _) in zip(weights, results))
    grads = tree_map(deal(lambda *gs: sum(w * g for w, g in zip(weights, gs))), *[g for _, g in results])
    return loss, grads


def clip_and_update(model: GPT, optimizer: optim.Optimizer, grads: Any, grad_clip: float,
                    deal: Deal = _same) -> mx.array:
    """training.clip_and_update, with each gradient's share of the norm and the scaling
    placed by `deal` (optim.clip_grad_norm's arithmetic: scale by min(1, max / (norm + 1e-6)))."""
    squares = tree_flatten(tree_map(deal(lambda g: mx.sum(g * g)), grads))
    norm = mx.sqrt(sum(square for _, square in squares))
    if grad_clip > 0:
        normalizer = mx.minimum(grad_clip / (norm + 1e-6), 1.0)
        grads = tree_map(deal(lambda g: g * normalizer), grads)
    optimizer.update(model, grads)
    return norm


def make_train_step(model: GPT, optimizer: optim.Optimizer, grad_clip: float, streams: int = 1,
                    world: World = SINGLE, dtype: mx.Dtype = mx.float32):
    """training.make_train_step with its batch split over `streams` CPU streams (1: the
    textbook step itself) and, on a GPU, the fused attention kernel."""
    if on_gpu():
        use_fused_attention(model)
    if streams < 2:
        return training.make_train_step(model, optimizer, grad_clip, world, dtype=dtype)
    shard_streams = cpu_streams(streams)
    deal = dealer(shard_streams)
    deal_updates(optimizer, deal)
    loss_and_grad = training.value_and_grad(model, padded_loss, dtype)
    return training.make_train_step(
        model, optimizer, grad_clip, world,
        loss_and_grad=partial(sharded_loss_and_grad, loss_and_grad, streams=shard_streams, deal=deal),
        update=lambda grads: clip_and_update(model, optimizer, grads, grad_clip, deal))


def step_factory(streams: int) -> training.StepFactory:
    """What runner.py puts into Run.make_step: this module's step with `streams` fixed."""
    return lambda model, optimizer, grad_clip, world=SINGLE, dtype=mx.float32: make_train_step(
        model, optimizer, grad_clip, streams, world, dtype)
