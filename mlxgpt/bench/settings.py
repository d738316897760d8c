"""The benchmark's configuration: the flags of `mlxgpt bench`, resolved against a preset."""

from __future__ import annotations

import argparse
import importlib.util
import sys
from dataclasses import asdict, dataclass

from mlxgpt.bench.common import DTYPES, TRAIN_MODES, machine_cores
from mlxgpt.config import PRESETS, ModelArgs, TrainArgs, default_preset_name
from mlxgpt.errors import MlxgptError
from mlxgpt.fast.device import on_gpu

# (warm-up, minimum timed) steps per preset: every preset of config.PRESETS has its row (a test checks
# it). Timed steps then go on until at least MIN_SECONDS have passed too: a step of a few milliseconds
# (a GPU) gets hundreds of timed steps, a shakespeare-char step of 10-30 s (a 2-core CPU) the minimum.
ITERS = {"baby": (5, 30), "cpu-speedrun": (5, 30), "shakespeare-char": (2, 5)}
QUICK_ITERS = {"baby": (3, 10), "cpu-speedrun": (3, 10), "shakespeare-char": (1, 2)}
MIN_SECONDS, QUICK_MIN_SECONDS = 2.0, 0.5
MODEL_FLAGS = ("n_layer", "n_head", "n_embd", "block_size", "dropout", "bias", "vocab_size")


def mlx_device() -> str:
    """MLX's default device as the benchmark names it: "cuda", "metal" or "cpu"."""
    if not on_gpu():
        return "cpu"
    return "metal" if sys.platform == "darwin" else "cuda"


def torch_available() -> bool:
    """Without importing it: this process stays free of torch."""
    try:
        return importlib.util.find_spec("torch") is not None
    except (ImportError, ValueError):
        return False


@dataclass
class BenchConfig:
    preset: str
    preset_note: str
    model: ModelArgs
    train: TrainArgs
    warmup: int
    iters: int  # the minimum number of timed steps
    min_seconds: float  # ... and the minimum time they take together (common.keep_timing)
    dtype: str  # "float32" | "bfloat16": forward and backward; weights and optimizer state stay float32
    gen_tokens: int
    modes: list[str]
    cold_start: bool
    cold_cache: bool  # cold start also with empty JIT caches
    threads: int  # PyTorch intra-op threads
    cpu_streams: int | None  # MLX CPU streams per step (None: training's default)
    torch_device: str | None  # None: the best available
    seed: int
    quick: bool
    use_torch: bool
    command: str

    dtype_warning: str | None = None  # bfloat16 on MLX's CPU backend: allowed, but ~30x slower

    @property
    def tokens_per_iter(self) -> int:
        return self.train.batch_size * self.train.grad_accum * self.model.block_size

    def to_dict(self) -> dict:
        """JSON-ready, for a child process (from_dict rebuilds it)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "BenchConfig":
        return cls(**{**values, "model": ModelArgs.from_dict(values["model"]),
                      "train": TrainArgs.from_dict(values["train"])})


def config_from_args(args: argparse.Namespace) -> BenchConfig:
    """Resolve the parsed flags (mlxgpt.bench.add_bench_arguments) against the preset."""
    if args.preset is None:
        preset = default_preset_name(on_gpu())
        note = f"default on {'GPU' if on_gpu() else 'CPU'}; choose with --preset"
    else:
        preset, note = args.preset, "chosen with --preset"
    values = dict(PRESETS[preset].model)
    values.update({k: getattr(args, k) for k in MODEL_FLAGS if getattr(args, k) is not None})
    model = ModelArgs.from_dict(values)
    train = TrainArgs.from_dict(PRESETS[preset].train)
    if args.batch_size is not None:
        train.batch_size = args.batch_size
    train.validate()
    warmup, iters = (QUICK_ITERS if args.quick else ITERS)[preset]
    warmup = args.warmup if args.warmup is not None else warmup
    iters = args.iters if args.iters is not None else iters
    if warmup < 0 or iters < 1:
        raise MlxgptError("need --warmup >= 0 and --iters >= 1")
    min_seconds = args.min_seconds if args.min_seconds is not None else (
        QUICK_MIN_SECONDS if args.quick else MIN_SECONDS)
    if not min_seconds >= 0:
        raise MlxgptError("--min-seconds must be >= 0 (0: time exactly --iters steps)")
    dtype = args.dtype or "float32"
    if dtype not in DTYPES:
        raise MlxgptError(f"--dtype {dtype}: choose from {', '.join(DTYPES)}")
    dtype_warning = None
    if dtype != "float32" and not on_gpu():
        dtype_warning = (f"--dtype {dtype} on MLX's CPU backend: its half-precision matmuls have no BLAS and "
                         "run ~30x slower than float32; allowed, but it measures that emulation, not a GPU")
    modes = [m.strip() for m in args.modes.split(",") if m.strip()] if args.modes else list(TRAIN_MODES)
    unknown = [m for m in modes if m not in TRAIN_MODES]
    if unknown:
        raise MlxgptError(f"unknown --modes {', '.join(unknown)}: choose from {', '.join(TRAIN_MODES)}")
    use_torch = not args.no_torch and torch_available()
    if not use_torch:
        modes = [m for m in modes if m.startswith("mlx")]
    if args.gen_tokens < 0:
        raise MlxgptError("--gen-tokens must be >= 0 (0 skips generation)")
    cold_cache = (not args.quick) if args.cold_cache is None else args.cold_cache
    command = "python -m mlxgpt.bench " + " ".join(sys.argv[1:]) if sys.argv else ""
    return BenchConfig(preset, note, model, train, warmup, iters, min_seconds, dtype, args.gen_tokens, modes,
                       not args.no_cold_start, cold_cache, args.threads or machine_cores(), args.cpu_streams,
                       args.torch_device, args.seed, args.quick, use_torch, command.strip(), dtype_warning)
