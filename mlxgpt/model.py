"""The GPT itself: token and position embeddings, a stack of transformer blocks,
and an unembedding back to vocabulary logits. Plus the KV cache generation uses.

Read top to bottom; shapes are in the comments as (B, T, C) = (batch, time, channels),
nh = number of heads, hs = head size. Imports mlx, and config.py for ModelArgs.
"""

from __future__ import annotations

import math

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten, tree_map_with_path

from mlxgpt.config import ModelArgs


class KVCache:
    """Keys and values of one attention layer for the tokens seen so far.

    With a cache each new token attends to stored keys/values instead of
    re-running the whole context: O(T) work per token instead of O(T^2).
    Storage grows in chunks of `step` positions so we rarely reallocate.
    The protocol generation relies on: `offset`, `update_and_fetch`, `reset`.
    """

    step = 256

    def __init__(self) -> None:
        self.keys: mx.array | None = None  # (B, nh, capacity, hs)
        self.values: mx.array | None = None
        self.offset = 0  # number of positions filled

    def update_and_fetch(self, keys: mx.array, values: mx.array) -> tuple[mx.array, mx.array]:
        """Append (B, nh, T, hs) keys/values; return everything cached so far."""
        start, length = self.offset, keys.shape[2]
        if self.keys is None or start + length > self.keys.shape[2]:
            batch, heads, _, head_size = keys.shape
            chunks = (length + self.step - 1) // self.step
            shape = (batch, heads, chunks * self.step, head_size)
            new_keys, new_values = mx.zeros(shape, keys.dtype), mx.zeros(shape, values.dtype)
            if self.keys is None:
                self.keys, self.values = new_keys, new_values
            else:
                self.keys = mx.concatenate([self.keys[..., :start, :], new_keys], axis=2)
                self.values = mx.concatenate([self.values[..., :start, :], new_values], axis=2)
        self.offset += length
        self.keys[..., start:self.offset, :] = keys
        self.values[..., start:self.offset, :] = values
        return self.keys[..., : self.offset, :], self.values[..., : self.offset, :]

    def reset(self) -> None:
        """Forget every position (storage is kept for reuse)."""
        self.offset = 0


def position_angles(positions: mx.array, dims: int, base: float = 10000.0) -> mx.array:
    """Angle p / base^(2i/d) of position p on clock i = 0 .. d/2 - 1: fast clocks first,
    each one slower by a constant factor.  -> (T, d/2)"""
    i = mx.arange(0, dims, 2, dtype=mx.float32)
    inv_freq = mx.exp(-math.log(base) * i / dims)  # (d/2,)
    return positions.astype(mx.float32)[:, None] * inv_freq[None, :]


def sinusoidal_positions(positions: mx.array, dims: int) -> mx.array:
    """The fixed encodings of "Attention Is All You Need":
    PE[p, 2i] = sin(p / 10000^(2i/d)), PE[p, 2i+1] = cos(p / 10000^(2i/d)).  -> (T, d)"""
    angles = position_angles(positions, dims)  # (T, d/2)
    # interleave: even channels sin, odd channels cos
    return mx.stack([mx.sin(angles), mx.cos(angles)], axis=-1).reshape(positions.shape[0], dims)


def rotary(x: mx.array, offset: int | mx.array = 0) -> mx.array:
    """Rotary position embedding, RoPE (Su et al. 2021, RoFormer; GPT-NeoX, Llama, modded-nanogpt).
    Instead of adding a position vector to the residual stream, rotate each query and key: channel
    pair (i, i + hs/2) turns by the sinusoidal clock's angle for its position. A rotation keeps
    lengths, and q·k of two rotated vectors depends only on the difference of their positions, so
    attention sees relative positions.  (B, nh, T, hs) -> same; `offset` = position of the first."""
    T, hs = x.shape[2], x.shape[3]
    angles = position_angles(mx.arange(T) + offset, hs)  # (T, hs/2)
    cos, sin = mx.cos(angles), mx.sin(angles)
    x1, x2 = x[..., : hs // 2], x[..., hs // 2:]  # the two halves of each pair
    rotated = mx.concatenate([x1 * cos - x2 * sin, x1 * sin + x2 * cos], axis=-1)
    return rotated.astype(x.dtype)


def make_norm(args: ModelArgs, dims: int | None = None) -> nn.Module:
    """LayerNorm (GPT-2: subtract the mean, divide by the standard deviation, then a gain and
    maybe a bias), or with --norm rmsnorm RMSNorm (Zhang & Sennrich 2019; Llama, modded-nanogpt):
    divide by the root mean square only, a gain and no bias. Cheaper, and at scale as good."""
    dims = dims or args.n_embd
    return nn.RMSNorm(dims) if args.norm == "rmsnorm" else nn.LayerNorm(dims, bias=args.bias)


def causal_mask(Tq: int, Tk: int, start: int | mx.array | None = None) -> mx.array:
    """(Tq, Tk) booleans: query i, at key position start + i, may see keys 0..start + i.
    By default the queries are the *last* Tq of the Tk positions (as with a KV cache)."""
    start = Tk - Tq if start is None else start
    return (mx.arange(Tq)[:, None] + start) >= mx.arange(Tk)[None, :]


def attention_weights(q: mx.array, k: mx.array, scale: float, start: int | mx.array | None = None,
                      causal: bool = True, mask: mx.array | None = None) -> mx.array:
    """softmax(q k^T / sqrt(hs)) under the causal mask: (B, nh, Tq, Tk), rows sum to 1.
    `mask` (booleans broadcastable to the scores, True = may attend) hides more keys, e.g. padding."""
    # the scores and their softmax in float32 even when the model computes in bfloat16 (--dtype):
    # a sum of many small exponentials is where half precision loses the most
    scores = ((q * scale) @ k.transpose(0, 1, 3, 2)).astype(mx.float32)
    if causal:  # --no-causal-mask skips this: every position then sees the token it must predict
        allowed = causal_mask(q.shape[2], k.shape[2], start)
        scores = mx.where(allowed, scores, mx.array(-mx.inf, scores.dtype))
    if mask is not None:
        scores = mx.where(mask, scores, mx.array(-mx.inf, scores.dtype))
    # softmax written out: subtract the row max (stability), exponentiate, normalise
    weights = mx.exp(scores - mx.max(scores, axis=-1, keepdims=True))
    return (weights / mx.sum(weights, axis=-1, keepdims=True)).astype(q.dtype)


class CausalSelfAttention(nn.Module):
    """Every position asks (query) every earlier position (key) what it holds (value)."""

    def __init__(self, args: ModelArgs) -> None:
        super().__init__()
        self.n_head = args.n_head
        # 1/sqrt(hs) keeps the scores' variance near 1 whatever the head size, so the softmax does not
        # saturate; --no-attn-scale drops it to show why (the softmax turns nearly one-hot)
        self.scale = 1.0 / math.sqrt(args.head_dim) if args.attn_scale else 1.0
        self.causal = args.causal
        self.rotary = args.pos_embedding == "rope"
        self.c_attn = nn.Linear(args.n_embd, 3 * args.n_embd, bias=args.bias)  # q, k, v in one matmul
        if args.qk_norm:  # QK-norm (Dehghani et al. 2023; OLMo 2, modded-nanogpt): RMSNorm of each head's
            self.q_norm = nn.RMSNorm(args.head_dim)  # queries and keys bounds the scores, so attention
            self.k_norm = nn.RMSNorm(args.head_dim)  # cannot turn one-hot early in training
        self.c_proj = nn.Linear(args.n_embd, args.n_embd, bias=args.bias)
        self.attn_dropout = nn.Dropout(args.dropout)
        self.resid_dropout = nn.Dropout(args.dropout)

    def qkv(self, x: mx.array, offset: int | mx.array = 0) -> tuple[mx.array, mx.array, mx.array]:
        """Project x (B, T, C) to queries, keys, values, each (B, nh, T, hs); `offset` is the
        position of x's first token (for rotary positions)."""
        B, T, C = x.shape
        q, k, v = mx.split(self.c_attn(x), 3, axis=-1)
        heads = lambda t: t.reshape(B, T, self.n_head, C // self.n_head).transpose(0, 2, 1, 3)
        q, k, v = heads(q), heads(k), heads(v)
        if "q_norm" in self:
            q, k = self.q_norm(q), self.k_norm(k)
        if self.rotary:
            q, k = rotary(q, offset), rotary(k, offset)
        return q, k, v

    def attend(self, q: mx.array, k: mx.array, v: mx.array, start: int | mx.array | None) -> mx.array:
        """The weighted sum of values: (B, nh, Tq, hs). (On a GPU, mlxgpt/fast swaps in
        the fused kernel mx.fast.scaled_dot_product_attention: same math, one kernel.)"""
        return self.attn_dropout(attention_weights(q, k, self.scale, start, self.causal)) @ v

    def __call__(self, x: mx.array, cache: KVCache | None = None) -> mx.array:
        B, T, C = x.shape
        start = None  # position of the first query among the keys (None: the last T of them)
        if cache is not None:
            start = cache.offset
        q, k, v = self.qkv(x, 0 if start is None else start)
        if cache is not None:
            k, v = cache.update_and_fetch(k, v)  # (B, nh, offset + T, hs)
        y = self.attend(q, k, v, start)  # (B, nh, T, hs)
        y = y.transpose(0, 2, 1, 3).reshape(B, T, C)  # re-assemble heads side by side
        return self.resid_dropout(self.c_proj(y))


ACTIVATIONS = {
    "gelu": nn.gelu,  # GPT-2's smooth ReLU, x * Phi(x)
    "relu": nn.relu,  # the original Transformer's (and the lecture's) max(0, x)
    "relu2": lambda h: mx.square(nn.relu(h)),  # ReLU squared (So et al. 2021, Primer; modded-nanogpt)
}


class MLP(nn.Module):
    """Per-position feed-forward: expand 4x, a nonlinearity, project back."""

    def __init__(self, args: ModelArgs) -> None:
        super().__init__()
        self.kind = args.mlp
        self.c_fc = nn.Linear(args.n_embd, args.mlp_hidden, bias=args.bias)
        if args.mlp == "swiglu":  # SwiGLU (Shazeer 2020; PaLM, Llama): a second projection gates the first,
            self.c_gate = nn.Linear(args.n_embd, args.mlp_hidden, bias=args.bias)  # silu(x Wg) * (x W)
        self.c_proj = nn.Linear(args.mlp_hidden, args.n_embd, bias=args.bias)
        self.dropout = nn.Dropout(args.dropout)

    def __call__(self, x: mx.array) -> mx.array:
        if self.kind == "swiglu":
            h = nn.silu(self.c_gate(x)) * self.c_fc(x)
        else:
            h = ACTIVATIONS[self.kind](self.c_fc(x))
        return self.dropout(self.c_proj(h))


class Block(nn.Module):
    """Pre-LayerNorm transformer block: x + attn(ln(x)), then x + mlp(ln(x)).

    With --post-ln, the original paper's "Add & Norm": x = ln(x + attn(x)), x = ln(x + mlp(x)).
    Every block then rescales the whole stream, and the gradient reaching early blocks passes
    through every norm after them: it needs a warmup and a small learning rate (Xiong et al. 2020)."""

    def __init__(self, args: ModelArgs) -> None:
        super().__init__()
        self.post_ln = args.post_ln
        self.ln_1 = make_norm(args)
        self.attn = CausalSelfAttention(args)
        self.ln_2 = make_norm(args)
        self.mlp = MLP(args)

    def __call__(self, x: mx.array, cache: KVCache | None = None) -> mx.array:
        if self.post_ln:
            x = self.ln_1(x + self.attn(x, cache))
            return self.ln_2(x + self.mlp(x))
        x = x + self.attn(self.ln_1(x), cache)
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    def __init__(self, args: ModelArgs) -> None:
        super().__init__()
        self.args = args
        self.wte = nn.Embedding(args.vocab_size, args.n_embd)  # token embedding
        if args.pos_embedding == "learned":
            self.wpe = nn.Embedding(args.block_size, args.n_embd)
        self.drop = nn.Dropout(args.dropout)
        self.h = [Block(args) for _ in range(args.n_layer)]
        # the final norm before the unembedding (post-LN blocks already end with one)
        self.ln_f = nn.Identity() if args.post_ln else make_norm(args)
        if not args.tie_embeddings:  # --untie-head: a separate unembedding matrix (modded-nanogpt)
            self.lm_head = nn.Linear(args.n_embd, args.vocab_size, bias=False)
        self._init_weights()

    def _init_weights(self) -> None:
        """GPT-2 init: N(0, 0.02) weights, zero biases, and residual projections
        scaled by 1/sqrt(2 * n_layer) so the residual stream's variance does not
        grow with depth (each block adds two of them). With --zero-init-proj those
        projections start at zero (modded-nanogpt): every block starts as the identity."""
        std, residual_std = 0.02, 0.02 / math.sqrt(2 * self.args.n_layer)

        def init(path: str, w: mx.array) -> mx.array:
            if path.endswith("bias"):
                return mx.zeros_like(w)
            if w.ndim == 1:
                return mx.ones_like(w)  # the norms' gains
            if path.endswith("c_proj.weight"):
                if self.args.zero_init_proj:
                    return mx.zeros_like(w)
                return mx.random.normal(w.shape, scale=residual_std, dtype=w.dtype)
            return mx.random.normal(w.shape, scale=std, dtype=w.dtype)

        self.update(tree_map_with_path(init, self.parameters()))

    def embed(self, idx: mx.array, offset: int | mx.array = 0) -> mx.array:
        """Token ids (B, T) -> vectors (B, T, C): what each token is, plus where it stands."""
        positions = mx.arange(idx.shape[1]) + offset
        tok = self.wte(idx)  # (B, T, C)
        if self.args.pos_embedding == "learned":
            return self.drop(tok + self.wpe(positions))  # (T, C) broadcast over the batch
        if self.args.pos_embedding == "sinusoidal":
            return self.drop(tok + sinusoidal_positions(positions, self.args.n_embd).astype(tok.dtype))
        return self.drop(tok)  # rope: positions enter inside attention, as rotations of q and k

    def unembed(self, x: mx.array) -> mx.array:
        """Vectors (B, T, C) -> one score per vocabulary token (B, T, vocab_size)."""
        if self.args.tie_embeddings:
            logits = self.wte.as_linear(x)  # reuse the embedding matrix: logits = x @ wte^T
        else:
            logits = self.lm_head(x)
        cap = self.args.logit_softcap
        if cap:  # logit soft-capping (Gemma 2, modded-nanogpt): a smooth clamp to (-cap, cap), so no
            logits = cap * mx.tanh(logits / cap)  # logit can grow without bound to push a loss down
        return logits

    def __call__(self, idx: mx.array, cache: list[KVCache] | None = None) -> mx.array:
        """Token ids (B, T) -> next-token logits (B, T, vocab_size), at every position."""
        T = idx.shape[1]
        offset = cache[0].offset if cache else 0  # tokens already in the cache
        if isinstance(offset, int) and offset + T > self.args.block_size:
            raise ValueError(f"sequence of {offset + T} tokens exceeds block_size {self.args.block_size}")
        x = self.embed(idx, offset)  # (B, T, C)
        for i, block in enumerate(self.h):
            x = block(x, cache[i] if cache else None)
        return self.unembed(self.ln_f(x))

    def make_cache(self) -> list[KVCache]:
        """One cache per layer, for generation."""
        return [KVCache() for _ in self.h]

    def num_params(self, non_embedding: bool = True) -> int:
        """Parameter count; like nanoGPT, non_embedding leaves out the position
        embedding (token embeddings stay in: they double as the unembedding)."""
        total = sum(w.size for _, w in tree_flatten(self.parameters()))
        if non_embedding and self.args.pos_embedding == "learned":
            total -= self.wpe.weight.size
        return total


def flops_per_token(args: ModelArgs, n_params: int) -> int:
    """Training FLOPs per token, PaLM/nanoGPT style: 6N for the matmuls plus
    12 * L * T * C for attention scores and weighted sums (forward + backward)."""
    return 6 * n_params + 12 * args.n_layer * args.block_size * args.n_embd
