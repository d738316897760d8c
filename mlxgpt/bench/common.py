"""What both halves of the benchmark share: result records, the batches, timing,
memory readings. Imports neither MLX nor torch (each half runs in its own process).
"""

from __future__ import annotations

import os
import resource
import statistics
import sys
import time
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Any, Callable

import numpy as np

TRAIN_MODES = ("mlx", "mlx-plain", "mlx-uncompiled", "torch", "torch-compile")
# Extra rows on a CUDA GPU in float32: the same step with TF32 matmuls (10-bit mantissa inputs), which MLX
# uses for float32 by default on CUDA (and on M5-class Metal GPUs). The rows above are true float32.
TF32_MODES = {"mlx": "mlx-tf32", "torch": "torch-tf32"}
LABELS = {"mlx": "MLX compiled", "mlx-plain": "MLX --plain (no mlxgpt/fast)", "mlx-uncompiled": "MLX uncompiled",
          "torch": "PyTorch eager",
          "torch-compile": "PyTorch torch.compile",
          "mlx-tf32": "MLX compiled, TF32 matmuls", "torch-tf32": "PyTorch eager, TF32 matmuls"}
DTYPES = ("float32", "bfloat16")  # --dtype: the precision of the forward and backward passes
MAX_TIMED_STEPS = 10_000  # a safety cap on the duration-based timing (a GPU step can take ~1 ms)

# MLX's TF32 switch. MLX reads it once, at its first float32 matmul, so it must be in the environment
# before that: the benchmark sets it to "0" for its own process and every child, except the one that
# measures the TF32 rows ("1").
TF32_ENV = "MLX_ENABLE_TF32"


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
    device: str  # "cpu" | "cuda" | "metal" (MLX); "cpu" | "cuda" | "mps" (torch)
    parallelism: str = ""  # MLX: streams, BLAS threads, cache; torch: threads
    ok: bool = True
    error: str | None = None
    skipped: str | None = None  # why this row was not measured here (ok is then False, error None)
    dtype: str = "float32"  # of the forward and backward passes; weights and optimizer state stay float32
    device_note: str | None = None  # e.g. PyTorch had no CUDA while MLX ran on a CUDA GPU
    warmup_steps: int = 0
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
    def mean_s(self) -> float:
        return statistics.fmean(self.step_s)

    @property
    def tokens_per_s(self) -> float:
        return self.tokens_per_iter / self.median_s

    def to_dict(self) -> dict:
        out = asdict(self)
        out["label"] = LABELS[self.mode]
        if self.ok and self.step_s:
            ms = [1000 * s for s in self.step_s]
            out.update(timed_steps=len(ms), timed_s=sum(self.step_s), median_ms=statistics.median(ms),
                       mean_ms=statistics.fmean(ms), min_ms=min(ms), max_ms=max(ms),
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


def keep_timing(count: int, seconds: float, min_iters: int, min_seconds: float,
                max_iters: int = MAX_TIMED_STEPS) -> bool:
    """Whether to time another step, after `count` timed steps that took `seconds` in all: until
    both at least `min_iters` steps and at least `min_seconds` have passed (at most max_iters)."""
    if count >= max(max_iters, min_iters):
        return False
    return count < min_iters or seconds < min_seconds


def time_loop(one_step: Callable[[int], Any], warmup: int, min_iters: int, min_seconds: float, *,
              clock: Callable[[], float] = time.perf_counter,
              max_iters: int = MAX_TIMED_STEPS) -> list[tuple[float, Any]]:
    """`warmup` untimed steps, then timed steps while keep_timing says so. `one_step(i)` (i counts
    from 0, warm-up included) returns once the step's work is done. -> (seconds, its result) of
    every step, warm-up first. Both frameworks, and --profile, time their steps with this."""
    out: list[tuple[float, Any]] = []
    timed, timed_s = 0, 0.0
    i = 0
    while i < warmup or keep_timing(timed, timed_s, min_iters, min_seconds, max_iters):
        start = clock()
        value = one_step(i)
        seconds = clock() - start
        out.append((seconds, value))
        if i >= warmup:
            timed, timed_s = timed + 1, timed_s + seconds
        i += 1
    return out


def time_steps(one_step: Callable[[int], float], warmup: int, min_iters: int, min_seconds: float,
               result: TrainResult, *, clock: Callable[[], float] = time.perf_counter,
               max_iters: int = MAX_TIMED_STEPS) -> None:
    """Training steps timed by time_loop; `one_step(i)` returns the loss. Fills `result`: every
    step's loss (warm-up included), the timed steps' seconds, the first step's seconds."""
    steps = time_loop(one_step, warmup, min_iters, min_seconds, clock=clock, max_iters=max_iters)
    result.warmup_steps = warmup
    if steps:
        result.first_step_s = steps[0][0]
    result.step_s = [s for s, _ in steps[warmup:]]
    result.losses = [float(loss) for _, loss in steps]


def device_class(device: str) -> str:
    """"cpu" or "gpu": which matmul peak a row's MFU divides by (roofline.MatmulPeak.device)."""
    return "cpu" if device == "cpu" else "gpu"


def matching_torch_device(mlx_device: str, cuda_available: bool, mps_available: bool,
                          requested: str | None = None) -> tuple[str, str | None]:
    """PyTorch's device for a comparison with MLX on `mlx_device` ("cpu" | "cuda" | "metal"):
    CUDA when MLX runs on a CUDA GPU, MPS when it runs on Metal, else the CPU. -> (device, note):
    the note says why PyTorch is not on the matching device (this PyTorch lacks it, or --torch-device
    chose another), None when it is. A pure function: the children pass in what torch reports."""
    wanted = {"cuda": "cuda", "metal": "mps"}.get(mlx_device, "cpu")
    if requested:
        if requested != wanted:
            return requested, (f"--torch-device {requested}: PyTorch ran on {requested} while MLX ran on "
                               f"{mlx_device}, so MLX/PyTorch ratios compare different devices")
        return requested, None
    available = {"cpu": True, "cuda": cuda_available, "mps": mps_available}[wanted]
    if available:
        return wanted, None
    why = {"cuda": "this PyTorch has no CUDA (a CPU-only build, or no driver)",
           "mps": "this PyTorch has no MPS"}[wanted]
    return "cpu", (f"MLX ran on {mlx_device} but {why}: PyTorch ran on the CPU instead, so MLX/PyTorch ratios "
                   "compare different devices")


# The ModelArgs fields that torch_ref.GPT mirrors (every one at the time of writing: model.py's switches
# included). A field added to ModelArgs later is not here until torch_ref implements it, and then, set
# away from its default, the benchmark refuses the model (check_mirrored): its PyTorch side would
# otherwise silently time a different model (and the parity check might not notice at init).
MIRRORED_MODEL_FIELDS = frozenset({
    "vocab_size", "block_size", "n_layer", "n_head", "n_embd", "dropout", "bias", "pos_embedding",
    "tie_embeddings", "norm", "qk_norm", "mlp", "logit_softcap", "zero_init_proj", "causal", "post_ln",
    "attn_scale"})


def unmirrored_switch(model: Any) -> str | None:
    """The first field of `model` (a ModelArgs) that torch_ref cannot mirror and that is set away from
    its default, as the flag that sets it; None if PyTorch can build the same model."""
    from mlxgpt.config import SWITCH_FLAGS

    for f in fields(model):
        default = f.default_factory() if f.default is MISSING else f.default
        if f.name not in MIRRORED_MODEL_FIELDS and getattr(model, f.name) != default:
            return SWITCH_FLAGS.get(f.name, "--" + f.name.replace("_", "-"))
    return None


def check_mirrored(model: Any) -> None:
    """Refuse (one MlxgptError line) a model the PyTorch mirror would build differently."""
    from mlxgpt.errors import MlxgptError

    flag = unmirrored_switch(model)
    if flag:
        raise MlxgptError(f"the PyTorch mirror (mlxgpt/bench/torch_ref.py) does not implement {flag}: "
                          "bench this model with --no-torch, or leave out that switch")


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
