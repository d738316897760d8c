"""A PyTorch mirror of mlxgpt's GPT: nanoGPT's model.py, plus a KV cache.

Only the benchmark and the parity tests import this module (and torch). The
modules and parameter names are nanoGPT's own (`transformer.wte`,
`transformer.h.0.attn.c_attn`, `lm_head`, ...), so a nanoGPT state_dict of the
same shape loads into it, and `from_mlx` copies an mlxgpt model's weights in by
name: MLX `h.0.attn.c_attn.weight` -> torch `transformer.h.0.attn.c_attn.weight`.
Both keep Linear weights as (out, in), so the copy is a plain copy.

The training recipe is nanoGPT's train.py too: AdamW with weight decay on >= 2-D
parameters only, `get_lr` (linear warmup, cosine to min_lr) and global-norm
clipping, written here independently of MLX's optimizers so that the parity
tests compare two implementations, not one with itself.
"""

from __future__ import annotations

import contextlib
import math
import re
from typing import Any, Iterator

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from mlxgpt.config import ModelArgs, TrainArgs


class LayerNorm(nn.Module):
    """LayerNorm with an optional bias (PyTorch's has no bias=False); nanoGPT's."""

    def __init__(self, ndim: int, bias: bool) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(ndim))
        self.bias = nn.Parameter(torch.zeros(ndim)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, self.weight.shape, self.weight, self.bias, 1e-5)


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
        self.c_proj = nn.Linear(args.n_embd, args.n_embd, bias=args.bias)
        self.resid_dropout = nn.Dropout(args.dropout)
        self.n_head, self.n_embd, self.dropout = args.n_head, args.n_embd, args.dropout
        self.block_size = args.block_size

    def forward(self, x: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        offset = 0
        if cache is not None:
            offset = cache.offset
            k, v = cache.update_and_fetch(k, v, self.block_size)
        dropout = self.dropout if self.training else 0.0
        if offset == 0:  # nanoGPT's flash path
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=None, dropout_p=dropout, is_causal=True)
        elif T == 1:  # one new token sees every cached position
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout)
        else:  # queries are the last T of offset + T positions
            allowed = torch.ones(T, offset + T, dtype=torch.bool, device=x.device).tril(diagonal=offset)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, dropout_p=dropout)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # re-assemble all head outputs side by side
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    def __init__(self, args: ModelArgs) -> None:
        super().__init__()
        self.c_fc = nn.Linear(args.n_embd, 4 * args.n_embd, bias=args.bias)
        self.gelu = nn.GELU()  # exact (erf), like mlx.nn.gelu
        self.c_proj = nn.Linear(4 * args.n_embd, args.n_embd, bias=args.bias)
        self.dropout = nn.Dropout(args.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))


class Block(nn.Module):
    def __init__(self, args: ModelArgs) -> None:
        super().__init__()
        self.ln_1 = LayerNorm(args.n_embd, bias=args.bias)
        self.attn = CausalSelfAttention(args)
        self.ln_2 = LayerNorm(args.n_embd, bias=args.bias)
        self.mlp = MLP(args)

    def forward(self, x: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), cache)
        return x + self.mlp(self.ln_2(x))


def sinusoidal_positions(positions: torch.Tensor, dims: int) -> torch.Tensor:
    """The same interleaved sin/cos table as mlxgpt.model.sinusoidal_positions.  -> (T, d)"""
    i = torch.arange(0, dims, 2, dtype=torch.float32, device=positions.device)
    inv_freq = torch.exp(-math.log(10000.0) * i / dims)
    angles = positions.float()[:, None] * inv_freq[None, :]
    return torch.stack([torch.sin(angles), torch.cos(angles)], dim=-1).reshape(positions.shape[0], dims)


class GPT(nn.Module):
    """nanoGPT's GPT (model.py), with the options mlxgpt's ModelArgs has."""

    def __init__(self, args: ModelArgs) -> None:
        super().__init__()
        self.args = args
        modules: dict[str, nn.Module] = dict(wte=nn.Embedding(args.vocab_size, args.n_embd))
        if args.pos_embedding == "learned":
            modules["wpe"] = nn.Embedding(args.block_size, args.n_embd)
        modules.update(drop=nn.Dropout(args.dropout), h=nn.ModuleList([Block(args) for _ in range(args.n_layer)]),
                       ln_f=LayerNorm(args.n_embd, bias=args.bias))
        self.transformer = nn.ModuleDict(modules)
        self.lm_head = nn.Linear(args.n_embd, args.vocab_size, bias=False)
        if args.tie_embeddings:
            self.transformer.wte.weight = self.lm_head.weight  # weight tying, as in nanoGPT
        # nanoGPT's init (the benchmark then copies the MLX model's weights over it)
        self.apply(self._init_weights)
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
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

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None,
                cache: list[KVCache] | None = None, last_only: bool = False):
        """(B, T) ids -> (logits, loss). last_only: logits of the last position only
        (nanoGPT's inference shortcut), (B, 1, V)."""
        B, T = idx.size()
        offset = cache[0].offset if cache else 0
        if offset + T > self.args.block_size:
            raise ValueError(f"sequence of {offset + T} tokens exceeds block_size {self.args.block_size}")
        pos = torch.arange(offset, offset + T, dtype=torch.long, device=idx.device)
        if "wpe" in self.transformer:
            pos_emb = self.transformer.wpe(pos)
        else:
            pos_emb = sinusoidal_positions(pos, self.args.n_embd)
        x = self.transformer.drop(self.transformer.wte(idx) + pos_emb)
        for i, block in enumerate(self.transformer.h):
            x = block(x, cache[i] if cache else None)
        x = self.transformer.ln_f(x)
        if targets is not None:
            logits = self.lm_head(x)
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1), ignore_index=-1)
            return logits, loss
        if last_only:
            return self.lm_head(x[:, [-1], :]), None
        return self.lm_head(x), None

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
