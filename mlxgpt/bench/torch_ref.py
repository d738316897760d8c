"""A PyTorch mirror of mlxgpt's GPT: nanoGPT's model.py, plus a KV cache.

Only the benchmark and the parity tests import this module (and torch). The
modules and parameter names are nanoGPT's own (`transformer.wte`,
`transformer.h.0.attn.c_attn`, `lm_head`, ...), so a nanoGPT state_dict of the
same shape loads into it, and `from_mlx` copies an mlxgpt model's weights in by
name: MLX `h.0.attn.c_attn.weight` -> torch `transformer.h.0.attn.c_attn.weight`.
Both keep Linear weights as (out, in), so the copy is a plain copy.

It mirrors every ModelArgs switch of model.py (rope, rmsnorm, qk-norm, the MLP
kinds, soft-capping, post-LN, no causal mask, no attention scale, an untied head,
zero-init projections) op for op, with model.py's parameter names (`c_gate`,
`q_norm`, `k_norm`; no `ln_f` parameters with post-LN), so the same copy works.
A switch added to ModelArgs later is refused (common.check_mirrored) until it is
mirrored here too.

The training recipe is nanoGPT's train.py too: AdamW with weight decay on >= 2-D
parameters only, `get_lr` (linear warmup, cosine to min_lr) and global-norm
clipping, written here independently of MLX's optimizers so that the parity
tests compare two implementations, not one with itself.
"""

from __future__ import annotations

import contextlib
import math
import re
from functools import partial
from typing import Any, Iterator

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from mlxgpt.bench.common import check_mirrored
from mlxgpt.config import ModelArgs, TrainArgs


class LayerNorm(nn.Module):
    """LayerNorm with an optional bias (PyTorch's has no bias=False); nanoGPT's."""

    def __init__(self, ndim: int, bias: bool) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(ndim))
        self.bias = nn.Parameter(torch.zeros(ndim)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, self.weight.shape, self.weight, self.bias, 1e-5)


class RMSNorm(nn.Module):
    """mlx.nn.RMSNorm (--norm rmsnorm, --qk-norm): x * rsqrt(mean(x^2) + eps) * weight, eps 1e-5
    inside the root, a gain and no bias. Written out rather than torch.nn.RMSNorm, whose eps
    defaults to the dtype's machine epsilon."""

    def __init__(self, ndim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(ndim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()  # in float32 whatever x is, as MLX's fused rms_norm accumulates
        normed = xf * torch.rsqrt(xf.pow(2).mean(dim=-1, keepdim=True) + self.eps)
        return (normed * self.weight).to(x.dtype)


def make_norm(args: ModelArgs, dims: int | None = None) -> nn.Module:
    """mlxgpt.model.make_norm: LayerNorm, or RMSNorm with --norm rmsnorm."""
    dims = dims or args.n_embd
    return RMSNorm(dims) if args.norm == "rmsnorm" else LayerNorm(dims, bias=args.bias)


def position_angles(positions: torch.Tensor, dims: int, base: float = 10000.0) -> torch.Tensor:
    """mlxgpt.model.position_angles, op for op: angle p / base^(2i/d) of clock i.  -> (T, d/2)"""
    i = torch.arange(0, dims, 2, dtype=torch.float32, device=positions.device)
    inv_freq = torch.exp(-math.log(base) * i / dims)
    return positions.float()[:, None] * inv_freq[None, :]


def sinusoidal_positions(positions: torch.Tensor, dims: int) -> torch.Tensor:
    """The same interleaved sin/cos table as mlxgpt.model.sinusoidal_positions.  -> (T, d)"""
    angles = position_angles(positions, dims)
    return torch.stack([torch.sin(angles), torch.cos(angles)], dim=-1).reshape(positions.shape[0], dims)


def rotary(x: torch.Tensor, offset: int = 0) -> torch.Tensor:
    """mlxgpt.model.rotary (--pos-embedding rope): the non-interleaved ("halves", GPT-NeoX) layout,
    channel i paired with i + hs/2, base 10000; `offset` = position of x's first token (the KV
    cache's fill).  (B, nh, T, hs) -> same"""
    T, hs = x.shape[2], x.shape[3]
    angles = position_angles(torch.arange(offset, offset + T, device=x.device), hs)  # (T, hs/2)
    cos, sin = torch.cos(angles), torch.sin(angles)
    x1, x2 = x[..., : hs // 2], x[..., hs // 2:]
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1).to(x.dtype)


class KVCache:
    """Keys and values of one layer, preallocated to block_size positions."""

    def __init__(self) -> None:
        self.keys: torch.Tensor | None = None  # (B, nh, block_size, hs)
        self.values: torch.Tensor | None = None
        self.offset = 0

    def update_and_fetch(self, k: torch.Tensor, v: torch.Tensor, capacity: int) -> tuple[torch.Tensor, torch.Tensor]:
        B, nh, T, hs = k.shape
        if self.keys is None:
            self.keys = k.new_empty(B, nh, capacity, hs)
            self.values = v.new_empty(B, nh, capacity, hs)
        start, self.offset = self.offset, self.offset + T
        self.keys[:, :, start:self.offset] = k
        self.values[:, :, start:self.offset] = v
        return self.keys[:, :, :self.offset], self.values[:, :, :self.offset]


class CausalSelfAttention(nn.Module):
    def __init__(self, args: ModelArgs) -> None:
        super().__init__()
        self.c_attn = nn.Linear(args.n_embd, 3 * args.n_embd, bias=args.bias)
        self.qk_norm = args.qk_norm
        if args.qk_norm:  # model.py's --qk-norm: RMSNorm of each head's queries and keys, before the rotation
            self.q_norm = RMSNorm(args.head_dim)
            self.k_norm = RMSNorm(args.head_dim)
        self.c_proj = nn.Linear(args.n_embd, args.n_embd, bias=args.bias)
        self.resid_dropout = nn.Dropout(args.dropout)
        self.n_head, self.n_embd, self.dropout = args.n_head, args.n_embd, args.dropout
        self.block_size = args.block_size
        self.rotary = args.pos_embedding == "rope"
        self.causal = args.causal  # --no-causal-mask: no mask at all, with or without the cache
        self.scale = 1.0 / math.sqrt(args.head_dim) if args.attn_scale else 1.0  # --no-attn-scale: 1

    def forward(self, x: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        B, T, C = x.size()
        offset = cache.offset if cache is not None else 0  # position of x's first token
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        if self.qk_norm:
            q, k = self.q_norm(q), self.k_norm(k)
        if self.rotary:  # rotated at their own positions, before the keys enter the cache (as model.py)
            q, k = rotary(q, offset), rotary(k, offset)
        if cache is not None:
            k, v = cache.update_and_fetch(k, v, self.block_size)
        dropout = self.dropout if self.training else 0.0
        sdpa = partial(F.scaled_dot_product_attention, dropout_p=dropout, scale=self.scale)
        if not self.causal or (offset > 0 and T == 1):  # no mask; or one new token sees every cached position
            y = sdpa(q, k, v)
        elif offset == 0:  # nanoGPT's flash path
            y = sdpa(q, k, v, is_causal=True)
        else:  # queries are the last T of offset + T positions
            allowed = torch.ones(T, offset + T, dtype=torch.bool, device=x.device).tril(diagonal=offset)
            y = sdpa(q, k, v, attn_mask=allowed)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # re-assemble all head outputs side by side
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    """model.py's MLP: up (c_fc), a nonlinearity (--mlp), down (c_proj); width ModelArgs.mlp_hidden."""

    def __init__(self, args: ModelArgs) -> None:
        super().__init__()
        self.kind = args.mlp
        self.c_fc = nn.Linear(args.n_embd, args.mlp_hidden, bias=args.bias)
        if args.mlp == "swiglu":  # --mlp swiglu: silu(c_gate(x)) * c_fc(x)
            self.c_gate = nn.Linear(args.n_embd, args.mlp_hidden, bias=args.bias)
        elif args.mlp == "gelu":
            self.gelu = nn.GELU()  # exact (erf), like mlx.nn.gelu (the parity tests swap it out)
        self.c_proj = nn.Linear(args.mlp_hidden, args.n_embd, bias=args.bias)
        self.dropout = nn.Dropout(args.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "swiglu":
            h = F.silu(self.c_gate(x)) * self.c_fc(x)
        elif self.kind == "gelu":
            h = self.gelu(self.c_fc(x))
        elif self.kind == "relu":
            h = F.relu(self.c_fc(x))
        else:  # relu2: model.py's mx.square(nn.relu(h))
            h = torch.square(F.relu(self.c_fc(x)))
        return self.dropout(self.c_proj(h))


class Block(nn.Module):
    def __init__(self, args: ModelArgs) -> None:
        super().__init__()
        self.post_ln = args.post_ln
        self.ln_1 = make_norm(args)
        self.attn = CausalSelfAttention(args)
        self.ln_2 = make_norm(args)
        self.mlp = MLP(args)

    def forward(self, x: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        if self.post_ln:  # --post-ln: the original paper's x = ln(x + sublayer(x))
            x = self.ln_1(x + self.attn(x, cache))
            return self.ln_2(x + self.mlp(x))
        x = x + self.attn(self.ln_1(x), cache)
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    """nanoGPT's GPT (model.py), with the options mlxgpt's ModelArgs has."""

    def __init__(self, args: ModelArgs) -> None:
        super().__init__()
        check_mirrored(args)  # a ModelArgs switch this file does not know: refuse, never compare another model
        self.args = args
        modules: dict[str, nn.Module] = dict(wte=nn.Embedding(args.vocab_size, args.n_embd))
        if args.pos_embedding == "learned":
            modules["wpe"] = nn.Embedding(args.block_size, args.n_embd)
        # post-LN blocks end with a norm already: model.py's ln_f is then nn.Identity (no parameters)
        modules.update(drop=nn.Dropout(args.dropout), h=nn.ModuleList([Block(args) for _ in range(args.n_layer)]),
                       ln_f=nn.Identity() if args.post_ln else make_norm(args))
        self.transformer = nn.ModuleDict(modules)
        self.lm_head = nn.Linear(args.n_embd, args.vocab_size, bias=False)
        if args.tie_embeddings:
            self.transformer.wte.weight = self.lm_head.weight  # weight tying, as in nanoGPT
        # nanoGPT's init (the benchmark then copies the MLX model's weights over it; the cold-start
        # rows train from this one), with model.py's --zero-init-proj
        self.apply(self._init_weights)
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                if args.zero_init_proj:
                    torch.nn.init.zeros_(p)
                else:
                    torch.nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * args.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                torch.nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def get_num_params(self, non_embedding: bool = True) -> int:
        """nanoGPT's count: tied weights once; non_embedding leaves out wpe."""
        n = sum(p.numel() for p in self.parameters())
        if non_embedding and "wpe" in self.transformer:
            n -= self.transformer.wpe.weight.numel()
        return n

    def unembed(self, x: torch.Tensor) -> torch.Tensor:
        """mlxgpt.model.GPT.unembed: the head, then --logit-softcap's cap * tanh(logits / cap)."""
        logits = self.lm_head(x)
        cap = self.args.logit_softcap
        if cap:
            logits = cap * torch.tanh(logits / cap)
        return logits

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None,
                cache: list[KVCache] | None = None, last_only: bool = False):
        """(B, T) ids -> (logits, loss). last_only: logits of the last position only
        (nanoGPT's inference shortcut), (B, 1, V)."""
        B, T = idx.size()
        offset = cache[0].offset if cache else 0
        if offset + T > self.args.block_size:
            raise ValueError(f"sequence of {offset + T} tokens exceeds block_size {self.args.block_size}")
        pos = torch.arange(offset, offset + T, dtype=torch.long, device=idx.device)
        x = self.transformer.wte(idx)
        if self.args.pos_embedding == "learned":
            x = x + self.transformer.wpe(pos)
        elif self.args.pos_embedding == "sinusoidal":
            x = x + sinusoidal_positions(pos, self.args.n_embd)
        # rope: no position vector here; the attention rotates q and k instead
        x = self.transformer.drop(x)
        for i, block in enumerate(self.transformer.h):
            x = block(x, cache[i] if cache else None)
        x = self.transformer.ln_f(x)
        if targets is not None:
            logits = self.unembed(x)
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1), ignore_index=-1)
            return logits, loss
        if last_only:
            return self.unembed(x[:, [-1], :]), None
        return self.unembed(x), None

    def make_cache(self) -> list[KVCache]:
        return [KVCache() for _ in self.transformer.h]


# ---------------------------------------------------------------- MLX <-> torch


def torch_name(mlx_name: str) -> str:
    """MLX parameter path -> nanoGPT parameter name."""
    return mlx_name if mlx_name.startswith("lm_head.") else f"transformer.{mlx_name}"


def mlx_name(torch_name_: str) -> str:
    return torch_name_.removeprefix("transformer.")


def mlx_weights(mlx_model) -> dict[str, np.ndarray]:
    """The MLX model's parameters as float32 numpy arrays, by MLX name."""
    from mlx.utils import tree_flatten

    return {name: np.array(w, dtype=np.float32) for name, w in tree_flatten(mlx_model.parameters())}


def from_mlx(mlx_model, device: str | torch.device = "cpu") -> GPT:
    """A torch GPT holding exactly the MLX model's weights (copied, fp32)."""
    model = GPT(mlx_model.args)
    load_mlx_weights(model, mlx_weights(mlx_model))
    return model.to(device)


def load_mlx_weights(model: GPT, weights: dict[str, np.ndarray]) -> None:
    params = dict(model.named_parameters())  # tied weights appear once, as transformer.wte.weight
    names = {torch_name(n) for n in weights}
    if names != set(params):
        missing, extra = sorted(set(params) - names), sorted(names - set(params))
        raise ValueError(f"MLX and torch models differ: torch-only {missing}, MLX-only {extra}")
    with torch.no_grad():
        for name, w in weights.items():
            target = params[torch_name(name)]
            if tuple(target.shape) != w.shape:
                raise ValueError(f"{name}: MLX shape {w.shape} vs torch {tuple(target.shape)}")
            target.copy_(torch.from_numpy(w))


def torch_weights(model: GPT) -> dict[str, np.ndarray]:
    """Parameters by MLX name (for comparisons)."""
    return {mlx_name(n): p.detach().cpu().numpy() for n, p in model.named_parameters()}


def torch_grads(model: GPT) -> dict[str, np.ndarray]:
    return {mlx_name(n): p.grad.detach().cpu().numpy() for n, p in model.named_parameters() if p.grad is not None}


# ---------------------------------------------------------------- training (nanoGPT's train.py)


def get_lr(it: int, args: TrainArgs) -> float:
    """nanoGPT's learning-rate schedule: linear warmup, then cosine decay to min_lr."""
    if it < args.warmup_iters:
        return args.lr * (it + 1) / (args.warmup_iters + 1)
    if it > args.decay_iters:
        return args.min_lr
    decay_ratio = (it - args.warmup_iters) / max(1, args.decay_iters - args.warmup_iters)
    coeff = 0.5 * (1.0 + math.cos(math.pi * decay_ratio))
    return args.min_lr + coeff * (args.lr - args.min_lr)


def configure_optimizer(model: GPT, args: TrainArgs, device_type: str = "cpu") -> torch.optim.AdamW:
    """nanoGPT's configure_optimizers: weight decay on >= 2-D parameters only."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": args.weight_decay},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=args.lr, betas=(args.beta1, args.beta2), eps=1e-8,
                             fused=device_type == "cuda")


class Trainer:
    """One nanoGPT training step at a time: set lr, forward, backward, clip, AdamW step.

    `dtype` (e.g. torch.bfloat16) runs the forward pass and the loss under torch.autocast, as
    nanoGPT's `ctx` does, with float32 weights and optimizer state (mixed precision; no GradScaler,
    which only float16 needs). nanoGPT skips autocast on a CPU; here it applies on every device,
    so that a bfloat16 comparison with MLX is bfloat16 on both sides."""

    def __init__(self, model: nn.Module, args: TrainArgs, device_type: str = "cpu", forward=None,
                 dtype: torch.dtype | None = None) -> None:
        self.model, self.args = model, args
        self.forward = model if forward is None else forward  # a torch.compile'd model, or the model
        self.optimizer = configure_optimizer(model, args, device_type)
        self.iter = 0
        self.device_type = device_type
        self.dtype = None if dtype in (None, torch.float32) else dtype

    def autocast(self):
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)

    def step(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x, y: (accum, B, T). Returns (mean loss, gradient norm before clipping)."""
        lr = get_lr(self.iter, self.args)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        accum = x.shape[0]
        total = torch.zeros((), device=x.device)
        for i in range(accum):
            with self.autocast():
                _, loss = self.forward(x[i], y[i])
            (loss / accum).backward()
            total = total + loss.detach()
        if self.args.grad_clip > 0:
            norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.args.grad_clip)
        else:
            norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in self.model.parameters()]))
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.iter += 1
        return total / accum, norm


# ---------------------------------------------------------------- generation


@torch.inference_mode()
def generate_tokens(model: GPT, prompt_ids: list[int], max_new_tokens: int, *, use_cache: bool,
                    keep: int, device: str | torch.device = "cpu") -> Iterator[int]:
    """Greedy tokens. Without the cache: nanoGPT's sample.py (crop the context to the
    last block_size tokens and re-run it for every token). With it: the same
    sliding-window KV-cache algorithm as mlxgpt.generate.generate_tokens
    (refill from the newest `keep` tokens when the window is full)."""
    block_size = model.args.block_size
    tokens = list(prompt_ids[-block_size:])
    start = 0

    def forward(context: list[int], cache) -> torch.Tensor:
        idx = torch.tensor([context], dtype=torch.long, device=device)
        return model(idx, cache=cache, last_only=True)[0][0, -1]

    cache = model.make_cache() if use_cache else None
    logits = forward(tokens, cache)
    for _ in range(max_new_tokens):
        token = int(torch.argmax(logits))
        tokens.append(token)
        if len(tokens) - start > block_size:
            start = len(tokens) - (keep if use_cache else block_size)
            cache = model.make_cache() if use_cache else None
            logits = forward(tokens[start:], cache)
        elif use_cache:
            logits = forward([token], cache)
        else:
            logits = forward(tokens[start:], None)
        yield token


def synchronize(device: torch.device | str) -> None:
    """Wait for queued device work (CPU ops are synchronous)."""
    kind = torch.device(device).type
    if kind == "cuda":
        torch.cuda.synchronize()
    elif kind == "mps":
        torch.mps.synchronize()


def set_tf32(allowed: bool) -> None:
    """TF32 for float32 matmuls (and cuDNN) on CUDA: off (allowed=False) means true float32, what
    the parity check and the benchmark's comparable rows need; on, what torch calls "high"
    precision. Harmless without CUDA. The benchmark's PyTorch processes start with it off."""
    torch.backends.cuda.matmul.allow_tf32 = allowed
    torch.backends.cudnn.allow_tf32 = allowed
    torch.set_float32_matmul_precision("high" if allowed else "highest")


def mps_available() -> bool:
    return getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()


def matching_device(mlx_device: str | None, requested: str | None = None) -> tuple[str, str | None]:
    """PyTorch's device for a comparison with MLX on `mlx_device` (common.matching_torch_device, fed
    what this torch has). Without `mlx_device`: the best device available, as before."""
    from mlxgpt.bench.common import matching_torch_device

    if mlx_device is None:
        return requested or best_device(), None
    return matching_torch_device(mlx_device, torch.cuda.is_available(), mps_available(), requested)


def best_device() -> str:
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def describe_build() -> dict[str, Any]:
    """What this torch was built with: version, BLAS/LAPACK, OpenMP, threads."""
    found = re.search(r"BLAS_INFO=(\w+)", torch.__config__.show())
    return {"version": torch.__version__, "blas": found.group(1) if found else "?",
            "cpu_capability": torch.backends.cpu.get_cpu_capability(), "mkl": torch.backends.mkl.is_available(),
            "mkldnn": torch.backends.mkldnn.is_available(), "openmp": torch.backends.openmp.is_available(),
            "threads": torch.get_num_threads(), "interop_threads": torch.get_num_interop_threads(),
            "cuda": torch.version.cuda, "float32_matmul_precision": torch.get_float32_matmul_precision(),
            "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None}
