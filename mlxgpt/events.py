"""What the training loop tells the world. Plain dataclasses of plain numbers.

The loop emits these to a callback; renderers (plain lines, the Rich dashboard,
metrics.jsonl) turn them into output. The loop itself never prints. Events are built
by keyword only (kw_only), so a field added later can never shift the others.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable, Union


@dataclass(kw_only=True)
class RunStarted:
    out_dir: str
    preset: str
    preset_note: str  # why this preset (e.g. "default on CPU")
    device: str
    blas: str
    parallelism: str  # e.g. "2 streams, 1 BLAS thread, cache 4 GB"
    model_args: dict[str, Any]
    train_args: dict[str, Any]
    tokenizer: str
    vocab_size: int
    n_params: int  # non-embedding, nanoGPT's convention
    n_params_total: int
    train_tokens: int
    val_tokens: int
    start_iter: int  # > 0 when resuming
    tokens_per_iter: int  # batch * grad_accum * block * ranks
    flops_per_token: int
    world_size: int = 1  # data-parallel ranks (mlxgpt launch)
    compiling_kernels: bool = False  # MLX's CPU kernel cache is empty: the first steps compile them
    kind: str = field(default="run_started", init=False)


@dataclass(kw_only=True)
class StepLogged:
    """Every log_interval steps; timing covers training steps only (no eval)."""

    iter: int
    max_iters: int
    train_loss: float
    lr: float
    grad_norm: float
    ms_per_iter: float
    tokens_per_s: float
    elapsed_s: float
    active_memory_mb: float
    peak_memory_mb: float
    kind: str = field(default="step", init=False)


@dataclass(kw_only=True)
class EvalDone:
    iter: int
    train_loss: float
    val_loss: float
    val_bpc: float  # validation bits per character: comparable across tokenizers
    lr: float
    tokens_per_s: float
    best_val_loss: float
    is_best: bool
    val_loss_per_example: float | None = None  # nats per whole example (--format lines)
    kind: str = field(default="eval", init=False)


@dataclass(kw_only=True)
class SampleGenerated:
    iter: int
    prompt: str
    text: str
    kind: str = field(default="sample", init=False)


@dataclass(kw_only=True)
class CheckpointSaved:
    iter: int
    which: str  # "best" | "latest"
    path: str
    kind: str = field(default="checkpoint", init=False)


@dataclass(kw_only=True)
class RunFinished:
    iter: int
    reason: str  # "completed" | "time budget" | "interrupted" | "diverged" | "early stop"
    best_val_loss: float
    best_val_bpc: float
    final_val_loss: float
    train_seconds: float
    wall_seconds: float
    tokens_per_s: float
    out_dir: str
    resume_command: str | None = None
    picture_path: str | None = None  # the loss picture, once runner.py has drawn it
    message: str | None = None  # why a diverged run stopped, and what to try
    kind: str = field(default="run_finished", init=False)


Event = Union[RunStarted, StepLogged, EvalDone, SampleGenerated, CheckpointSaved, RunFinished]
EventHandler = Callable[[Event], None]


def to_dict(event: Event) -> dict[str, Any]:
    record = dataclasses.asdict(event)
    return {"event": record.pop("kind"), **record}
