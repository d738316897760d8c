"""Configuration as plain dataclasses: the model's shape and the training recipe.

Presets are just dictionaries of TrainArgs/ModelArgs fields; every value can be
overridden from the command line (see cli.py), and the resolved values are
saved in each checkpoint's config.json.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from mlxgpt.errors import MlxgptError


@dataclass
class ModelArgs:
    """The shape of a GPT. Defaults are nanoGPT's shakespeare-char model."""

    vocab_size: int = 65
    block_size: int = 256  # the longest context the model ever sees
    n_layer: int = 6
    n_head: int = 6
    n_embd: int = 384
    dropout: float = 0.0
    bias: bool = False  # biases in Linear and LayerNorm (nanoGPT's train.py: False)
    pos_embedding: str = "learned"  # "learned" | "sinusoidal"
    tie_embeddings: bool = True  # unembedding = embedding matrix transposed

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        if self.n_embd % self.n_head != 0:
            raise MlxgptError(
                f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head}): "
                f"pick e.g. --n-embd {self.n_head * max(1, round(self.n_embd / self.n_head))}")
        if self.pos_embedding not in ("learned", "sinusoidal"):
            raise MlxgptError(f"unknown --pos-embedding {self.pos_embedding!r}: use learned or sinusoidal")
        if self.pos_embedding == "sinusoidal" and self.n_embd % 2:
            raise MlxgptError("sinusoidal positions need an even --n-embd")
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd"):
            if getattr(self, name) < 1:
                raise MlxgptError(f"{name} must be at least 1, got {getattr(self, name)}")
        if not 0.0 <= self.dropout < 1.0:
            raise MlxgptError(f"--dropout must be in [0, 1), got {self.dropout}")

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "ModelArgs":
        """Build from a dict, ignoring unknown keys (like mlx-lm's ModelArgs)."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in names})


@dataclass
class TrainArgs:
    """How to train: optimisation, schedule, evaluation and bookkeeping."""

    batch_size: int = 12
    grad_accum: int = 1  # micro-batches per optimizer step
    max_iters: int = 2000
    lr: float = 1e-3
    min_lr: float = 1e-4
    warmup_iters: int = 100
    lr_decay_iters: int | None = None  # None: same as max_iters
    beta1: float = 0.9
    beta2: float = 0.99
    weight_decay: float = 0.1
    grad_clip: float = 1.0  # 0 disables clipping
    eval_interval: int = 250
    eval_iters: int = 20
    log_interval: int = 10
    seed: int = 1337
    time_budget: float | None = None  # seconds of training before stopping early
    sample_prompt: str = "\n"
    sample_tokens: int = 200

    def validate(self) -> None:
        positive = ("batch_size", "grad_accum", "max_iters", "eval_interval", "eval_iters", "log_interval")
        for name in positive:
            if getattr(self, name) < 1:
                raise MlxgptError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if self.lr <= 0 or self.min_lr < 0 or self.min_lr > self.lr:
            raise MlxgptError(f"need 0 <= --min-lr <= --lr and --lr > 0 (got lr={self.lr}, min_lr={self.min_lr})")
        if self.warmup_iters < 0:
            raise MlxgptError("--warmup-iters must be >= 0")
        if not (0 <= self.beta1 < 1 and 0 <= self.beta2 < 1):
            raise MlxgptError(f"AdamW betas must be in [0, 1), got beta1={self.beta1}, --beta2 {self.beta2}")
        if self.weight_decay < 0 or self.grad_clip < 0:
            raise MlxgptError("--weight-decay and --grad-clip must be >= 0 (--grad-clip 0 turns clipping off)")
        if self.time_budget is not None and self.time_budget <= 0:
            raise MlxgptError(f"--time-budget must be a positive number of seconds, got {self.time_budget}")
        if self.sample_tokens < 0:
            raise MlxgptError(f"--sample-tokens must be >= 0, got {self.sample_tokens}")
        check_seed(self.seed)

    @property
    def decay_iters(self) -> int:
        return self.lr_decay_iters if self.lr_decay_iters is not None else self.max_iters

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "TrainArgs":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in names})


MODEL_FIELDS = {f.name for f in dataclasses.fields(ModelArgs)}
TRAIN_FIELDS = {f.name for f in dataclasses.fields(TrainArgs)}


def check_seed(seed: int | None) -> None:
    """MLX's RNG takes seeds in [0, 2**64)."""
    if seed is not None and not 0 <= seed < 2**64:
        raise MlxgptError(f"--seed must be between 0 and 2**64 - 1, got {seed}")


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    model: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)

    def with_overrides(self, overrides: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """(model values, train values): the preset's, with the flags given on top."""
        model_values = {**self.model, **{k: v for k, v in overrides.items() if k in MODEL_FIELDS}}
        train_values = {**self.train, **{k: v for k, v in overrides.items() if k in TRAIN_FIELDS}}
        if "max_iters" in overrides and "lr_decay_iters" not in overrides:
            train_values["lr_decay_iters"] = overrides["max_iters"]  # decay over the run you asked for
        return model_values, train_values


PRESETS: dict[str, Preset] = {
    "baby": Preset(
        "baby",
        "nanoGPT's CPU setting: 4 layers, 4 heads, 128 embd, block 64, batch 12, 2000 iters",
        model=dict(n_layer=4, n_head=4, n_embd=128, block_size=64, dropout=0.0),
        train=dict(batch_size=12, max_iters=2000, lr=1e-3, min_lr=1e-4, lr_decay_iters=2000,
                   warmup_iters=100, beta2=0.99, weight_decay=0.1, grad_clip=1.0,
                   eval_interval=250, eval_iters=20, log_interval=10),
    ),
    "shakespeare-char": Preset(
        "shakespeare-char",
        "nanoGPT's train_shakespeare_char.py: 6 layers, 6 heads, 384 embd, block 256, batch 64, 5000 iters",
        model=dict(n_layer=6, n_head=6, n_embd=384, block_size=256, dropout=0.2),
        train=dict(batch_size=64, max_iters=5000, lr=1e-3, min_lr=1e-4, lr_decay_iters=5000,
                   warmup_iters=100, beta2=0.99, weight_decay=0.1, grad_clip=1.0,
                   eval_interval=250, eval_iters=200, log_interval=10),
    ),
    "cpu-speedrun": Preset(
        "cpu-speedrun",
        "the lowest val loss in 120 s on 2 CPU cores: 4 layers, 4 heads, 96 embd, block 64, batch 24, "
        "lr 6e-3, 1600 iters, --time-budget 120",
        # Found by timed runs on a 2-core x86 VM (docs/benchmarks.md, "CPU speed-run"): in a
        # fixed time a narrower model (96 vs 128) sees ~50% more tokens, and a 6x higher
        # learning rate than baby's with a short warm-up is still stable at this size. 1600
        # steps take 100-115 s there; on a slower machine the budget stops the run late in
        # the cosine decay, where the learning rate is already near its minimum.
        model=dict(n_layer=4, n_head=4, n_embd=96, block_size=64, dropout=0.0),
        train=dict(batch_size=24, max_iters=1600, lr=6e-3, min_lr=1e-4, lr_decay_iters=1600,
                   warmup_iters=50, beta2=0.99, weight_decay=0.1, grad_clip=1.0,
                   eval_interval=800, eval_iters=20, log_interval=10, time_budget=120.0,
                   sample_tokens=0),
    ),
}


def default_preset_name(gpu: bool) -> str:
    """shakespeare-char is hours on a CPU; baby is minutes."""
    return "shakespeare-char" if gpu else "baby"
