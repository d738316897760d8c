"""What both halves of the benchmark share: result records, the batches, timing,
memory readings. Imports neither MLX nor torch (each half runs in its own process).
"""

from __future__ import annotations

import os
import resource
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np

TRAIN_MODES = ("mlx", "mlx-plain", "mlx-uncompiled", "torch", "torch-compile")
LABELS = {"mlx": "MLX compiled", "mlx-plain": "MLX --plain (no mlxgpt/fast)", "mlx-uncompiled": "MLX uncompiled",
          "torch": "PyTorch eager",
          "torch-compile": "PyTorch torch.compile"}


def machine_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS
        return os.cpu_count() or 1


def draw_batches(vocab_size: int, batch_size: int, block_size: int, seed: int,
                 count: int) -> tuple[np.ndarray, np.ndarray]:
    """(count, B, T) inputs and targets of uniformly random token ids, the same in every
    process for the same seed. A step's speed does not depend on which tokens it sees."""
    rng = np.random.default_rng(seed)
    shape = (count, batch_size, block_size)
    return (rng.integers(0, vocab_size, shape).astype(np.int32),
            rng.integers(0, vocab_size, shape).astype(np.int32))


@dataclass
class TrainResult:
    mode: str
    device: str  # "cpu" | "gpu" (MLX); "cpu" | "cuda" | "mps" (torch)
    parallelism: str = ""  # MLX: streams, BLAS threads, cache; torch: threads
    ok: bool = True
    error: str | None = None
    step_s: list[float] = field(default_factory=list)  # the timed steps (after warm-up)
    first_step_s: float | None = None  # first step in this process: compile/JIT included
    losses: list[float] = field(default_factory=list)  # every step's loss, warm-up included
    peak_memory_mb: float | None = None  # device allocator's peak (MLX; torch CUDA)
    tokens_per_iter: int = 0
    mfu: float | None = None

    @property
    def median_s(self) -> float:
        return statistics.median(self.step_s)

    @property
    def tokens_per_s(self) -> float:
        return self.tokens_per_iter / self.median_s

    def to_dict(self) -> dict:
        out = asdict(self)
        out["label"] = LABELS[self.mode]
        if self.ok and self.step_s:
            ms = [1000 * s for s in self.step_s]
            out.update(median_ms=statistics.median(ms), min_ms=min(ms), max_ms=max(ms),
                       p10_ms=float(np.percentile(ms, 10)), p90_ms=float(np.percentile(ms, 90)),
                       stdev_ms=statistics.stdev(ms) if len(ms) > 1 else 0.0, tokens_per_s=self.tokens_per_s)
        return out

    @classmethod
    def from_dict(cls, values: dict) -> "TrainResult":
        return cls(**{k: v for k, v in values.items() if k in cls.__dataclass_fields__})


@dataclass
class GenResult:
    framework: str  # "mlx" | "torch"
    cache: bool
    tokens: int
    seconds: float
    ids: list[int]

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds

    def to_dict(self) -> dict:
        return {"framework": self.framework, "kv_cache": self.cache, "tokens": self.tokens, "seconds": self.seconds,
                "tokens_per_s": self.tokens_per_s}


def time_steps(one_step: Callable[[int], float], warmup: int, iters: int, result: TrainResult) -> None:
    """Run warmup + iters steps; `one_step(i)` returns the loss once the step's work is done."""
    for i in range(warmup + iters):
        start = time.perf_counter()
        loss = one_step(i)
        seconds = time.perf_counter() - start
        if i == 0:
            result.first_step_s = seconds
        if i >= warmup:
            result.step_s.append(seconds)
        result.losses.append(loss)


def short_error(exc: BaseException) -> str:
    """One line for a table: torch.compile's errors start with a generic line, the cause comes later."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    useful = next((line for line in lines if any(k in line for k in ("Error", "error", "not found", "failed"))),
                  lines[0] if lines else "")
    return f"{type(exc).__name__}: {useful[:300]}"


def progress(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def _proc_status_mb(field_name: str) -> float | None:
    """A memory line of /proc/self/status (Linux), in MiB."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1]) / 2**10  # kB
    except OSError:
        pass
    return None


def current_rss_mb() -> float:
    value = _proc_status_mb("VmRSS")
    return value if value is not None else peak_rss_mb()  # macOS: the peak so far is the best we have


def peak_rss_mb() -> float:
    """This process's peak resident memory. On Linux VmHWM, not ru_maxrss: the
    latter survives fork+exec, so a child would report its parent's peak."""
    value = _proc_status_mb("VmHWM")
    if value is not None:
        return value
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10  # bytes on macOS, KiB elsewhere
