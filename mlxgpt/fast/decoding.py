"""Faster generation: compiled one-token steps, single-row matmuls on a CPU, and the
fused attention kernel on a GPU. generate.py plugs these in unless --plain.

1. Compiled decoding (`compiled_decoding`). model.KVCache returns exactly the filled
   positions, so every new token changes the arrays' shapes and mx.compile would
   trace again. StaticKVCache keeps the same shapes at every step: storage is the
   whole block from the start, `offset` is an mx.array, and attention sees every slot
   (the causal mask, keys after the query's position hidden, also hides the unfilled
   ones). So a one-token step is one fixed graph, traced once and replayed as one
   fused graph. Measured: baby-size cached generation on a 2-core CPU ~700 -> ~1,100
   tokens/s (docs/benchmarks.md). MLX itself has no fixed-shape cache for compile;
   mlx-lm's caches are eager for the same reason.
2. Single-row matmuls (`RowLinear`, CPU only). Decoding feeds every Linear one row;
   for one row, x @ W^T makes OpenBLAS copy (pack) all of W before multiplying, on
   every call, while W @ x^T reads W once. Same product; a compiled decoding step at
   shakespeare-char size ran ~1.4x faster (167 -> 246 tokens/s). An OpenBLAS
   behaviour (gemm packs B whatever the size of A), not MLX's.
3. Fused attention (`use_fused_attention`, GPU only). On Metal and CUDA
   mx.fast.scaled_dot_product_attention is one kernel for what model.py writes out
   (scores, mask, softmax, weighted sum). On a CPU the written-out version is faster:
   mx.compile fuses its softmax into the neighbouring elementwise work. With dropout
   on the attention weights while training, the written-out version runs everywhere.
"""

from __future__ import annotations

from functools import partial
from typing import Callable

import mlx.core as mx
import mlx.nn as nn

from mlxgpt.fast.device import on_gpu
from mlxgpt.model import GPT, CausalSelfAttention, causal_mask

Predict = Callable[[mx.array, list, mx.array], tuple[mx.array, mx.array]]


class StaticKVCache:
    """model.KVCache's protocol (offset, update_and_fetch, reset) with the same shapes at
    every step. Its arrays live in `self.state` so that mx.compile can take them as state."""

    def __init__(self, batch: int, heads: int, capacity: int, head_size: int, dtype: mx.Dtype) -> None:
        shape = (batch, heads, capacity, head_size)
        self.state = {"keys": mx.zeros(shape, dtype), "values": mx.zeros(shape, dtype),
                      "offset": mx.zeros((1,), mx.int32)}

    @property
    def offset(self) -> mx.array:
        return self.state["offset"]  # (1,): positions filled so far

    def update_and_fetch(self, keys: mx.array, values: mx.array) -> tuple[mx.array, mx.array]:
        """Write (B, nh, T, hs) keys/values at `offset`; return all capacity slots."""
        state, start = self.state, self.state["offset"]
        state["keys"] = mx.slice_update(state["keys"], keys, start, axes=(2,))
        state["values"] = mx.slice_update(state["values"], values, start, axes=(2,))
        state["offset"] = start + keys.shape[2]
        return state["keys"], state["values"]

    def reset(self) -> None:
        """Empty the cache (stale slots are masked, so they need no clearing)."""
        self.state["offset"] = mx.zeros((1,), mx.int32)


def make_static_cache(model: GPT, batch: int = 1) -> list[StaticKVCache]:
    a = model.args
    return [StaticKVCache(batch, a.n_head, a.block_size, a.head_dim, model.wte.weight.dtype) for _ in model.h]


class RowLinear(nn.Linear):
    """nn.Linear that computes a single row of x as W @ x^T (see 2. above); more rows as usual."""

    def __call__(self, x: mx.array) -> mx.array:
        if x.size != x.shape[-1]:  # more than one row: the ordinary matmul
            return super().__call__(x)
        y = (self.weight @ x.reshape(-1, 1)).reshape(*x.shape[:-1], -1)
        return y + self.bias if "bias" in self else y


def use_row_matmul(model: nn.Module) -> None:
    """Swap every nn.Linear of `model` for a RowLinear holding the same arrays (in place)."""
    for _, module in model.named_modules():
        for name, child in list(module.children().items()):
            if type(child) is nn.Linear:
                row = RowLinear(1, 1, bias="bias" in child)
                row.update(child.parameters())
                row.train(child.training)
                setattr(module, name, row)


def fused_attend(attention: CausalSelfAttention, dropout: float, q: mx.array, k: mx.array, v: mx.array,
                 start: int | mx.array | None) -> mx.array:
    """CausalSelfAttention.attend through mx.fast.scaled_dot_product_attention."""
    if attention.training and dropout > 0:  # dropout acts on the weights: keep them written out
        return CausalSelfAttention.attend(attention, q, k, v, start)
    # "causal" keeps the kernel on its fast path (queries aligned to the keys' end); one new
    # token may see everything cached; a StaticKVCache (start an array) needs the explicit mask
    if not attention.causal:  # --no-causal-mask: every key visible
        mask = None
    elif isinstance(start, mx.array):
        mask = causal_mask(q.shape[2], k.shape[2], start)
    else:
        mask = "causal" if q.shape[2] > 1 else None
    return mx.fast.scaled_dot_product_attention(q, k, v, scale=attention.scale, mask=mask)


def use_fused_attention(model: GPT) -> None:
    for block in model.h:
        block.attn.attend = partial(fused_attend, block.attn, model.args.dropout)


def accelerate(model: GPT) -> GPT:
    """What helps this device: fused attention on a GPU, single-row matmuls on a CPU. Same math.
    In place: the model keeps them afterwards (a model that sampled during training too), and
    they compute what the textbook modules do for every input."""
    if on_gpu():
        use_fused_attention(model)
    else:
        use_row_matmul(model)
    return model


def compiled_decoding(model: GPT, predict: Predict) -> tuple[list[StaticKVCache], Callable]:
    """A StaticKVCache and a compiled `step(token, key) -> predict(token as (1, 1), cache, key)`.

    The caches' arrays are the compiled function's state, so each step updates them in place."""
    accelerate(model)
    cache = make_static_cache(model)
    state = [layer.state for layer in cache]
    step = mx.compile(lambda token, key: predict(token.reshape(1, 1), cache, key), inputs=state, outputs=state)
    return cache, step
