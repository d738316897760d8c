"""Which device MLX runs on, and how a training run sets it up for speed.

On a CPU, MLX runs every op but matmul on one thread per stream: `configure_device`
picks how many streams a step's batch is split over (mlxgpt/fast/streams.py), how
many BLAS threads each matmul gets, and MLX's buffer cache size. On a GPU it changes
nothing.
"""

from __future__ import annotations

import os
import platform
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING

from mlxgpt.fast.blas import cuda_backend, set_blas_threads

if TYPE_CHECKING:  # annotations only: this module imports mlx inside functions
    import mlx.core as mx

# Set on every rank by `mlxgpt launch -n N` (all ranks on this machine), so that a rank's
# global rank is also its rank on this machine.
ONE_MACHINE_ENV = "MLXGPT_ONE_MACHINE"
# Launchers' own "rank on this machine" variables: Open MPI, MPICH/Intel MPI, MLX's, Slurm's.
LOCAL_RANK_VARIABLES = ("OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID", "MLX_LOCAL_RANK", "SLURM_LOCALID")


def rank_gpu(environ: dict[str, str], gpus: int) -> str | None:
    """The CUDA_VISIBLE_DEVICES a launched rank should take on a machine with `gpus` GPUs, or None.

    mlx.launch's NCCL backend sets CUDA_VISIBLE_DEVICES per rank itself; with ring or MPI
    it does not, and every rank would train on GPU 0. So rank r on a machine takes GPU
    r mod gpus, unless CUDA_VISIBLE_DEVICES is already chosen."""
    if "CUDA_VISIBLE_DEVICES" in environ or gpus < 2:
        return None
    local = next((environ[name] for name in LOCAL_RANK_VARIABLES if name in environ), None)
    if local is None and environ.get(ONE_MACHINE_ENV) == "1":
        local = environ.get("MLX_RANK")
    if local is None or not local.isdigit():
        return None
    return str(int(local) % gpus)


def pin_rank_to_gpu() -> None:
    """One GPU per rank (see rank_gpu). Must run before MLX starts CUDA: train.py and
    `python -m mlxgpt` call it before importing anything that imports mlx."""
    if not cuda_backend():
        return
    import glob

    gpu = rank_gpu(dict(os.environ), len(glob.glob("/proc/driver/nvidia/gpus/*")))
    if gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu

@dataclass(frozen=True)
class DeviceSettings:
    """How a training step uses the device; reported by the UI and the bench."""

    streams: int  # batch shards computed concurrently (CPU); 1 on a GPU
    blas_threads: int | None  # threads per matmul (None: the BLAS's own choice)
    cache_limit_gb: float | None  # MLX buffer cache limit we set (None: MLX's default)

    def describe(self) -> str:
        """What the UI shows; empty on a GPU, where none of these settings apply."""
        if self.streams == 1 and self.blas_threads is None and self.cache_limit_gb is None:
            return ""
        parts = [f"{self.streams} stream{'s' if self.streams > 1 else ''}"]
        if self.blas_threads:
            parts.append(f"{self.blas_threads} BLAS thread{'s' if self.blas_threads > 1 else ''}")
        if self.cache_limit_gb:
            parts.append(f"cache {self.cache_limit_gb:.0f} GB")
        return ", ".join(parts)


def configure_device(streams: int | None = None, processes: int = 1) -> DeviceSettings:
    """Tune MLX for the default device before training.

    On CPU, MLX runs every op but matmul on one thread per stream, so a step
    splits its batch over `streams` CPU streams (default: one per core) and each
    matmul gets cores/streams BLAS threads; and MLX's buffer cache (32 MB by
    default on CPU) is raised so big activations are reused instead of being
    page-faulted in again every step. `processes` training processes on this
    machine share its cores. On a GPU nothing changes.
    """
    import mlx.core as mx

    if on_gpu():
        return DeviceSettings(1, None, None)
    cores = max(1, (os.cpu_count() or 1) // max(1, processes))
    streams = max(1, streams if streams is not None else min(cores, 4))
    blas_threads = max(1, cores // streams)
    if not set_blas_threads(blas_threads):
        blas_threads = None
    # Half of MLX's memory limit: on a GPU MLX caches up to the whole limit; a quarter
    # (capped at 8 GB) left shakespeare-char re-faulting ~1 GB of pages every step
    # (measured 13.7 -> 12.9 s/step with the bigger cache).
    cache_gb = max(1.0, mx.get_memory_limit() / 2 / 2**30)
    mx.set_cache_limit(int(cache_gb * 2**30))
    return DeviceSettings(streams, blas_threads, cache_gb)


def device_name() -> str:
    """A human name for MLX's default device: 'Metal GPU', 'CUDA GPU' or 'CPU (x86_64)'."""
    import mlx.core as mx

    device = mx.default_device()
    if device.type == mx.gpu:
        if sys.platform == "darwin":
            return "Metal GPU"
        return "CUDA GPU"
    return f"CPU ({platform.machine()})"


def on_gpu() -> bool:
    import mlx.core as mx

    return mx.default_device().type == mx.gpu


def resolve_dtype(name: str) -> tuple["mx.Dtype", str | None]:
    """--dtype as an MLX dtype, and a warning when it will be slow here.

    "auto" is bfloat16 on a GPU (Metal on M2 and later, CUDA on Ampere and later compute it
    natively: faster matmuls, half the activation memory) and float32 on a CPU: MLX's CPU
    backend emulates half precision, measured ~30x slower than float32 (docs/benchmarks.md)."""
    import mlx.core as mx

    if name == "auto":
        name = "bfloat16" if on_gpu() else "float32"
    dtype = getattr(mx, name)
    if dtype != mx.float32 and not on_gpu():
        return dtype, (f"--dtype {name} on MLX's CPU backend is much slower than float32 (measured ~30x for "
                       "matmuls): it is meant for GPUs; use --dtype float32 (auto) here")
    return dtype, None


def compute_dtype(name: str) -> "mx.Dtype":
    """resolve_dtype for a command: its warning, if any, goes to stderr (train.py and generate.py)."""
    dtype, warning = resolve_dtype(name)
    if warning:
        print(f"warning: {warning}", file=sys.stderr)
    return dtype


# Below this much GPU memory (an 8 GB Mac) a big preset's batch is split in two micro-batches.
SMALL_GPU_GB = 12.0


def gpu_memory_gb() -> float | None:
    """The GPU's memory in GB (Metal: memory_size; CUDA: total_memory), or None on a CPU."""
    import mlx.core as mx

    if not on_gpu():
        return None
    info = mx.device_info()
    size = info.get("memory_size") or info.get("total_memory")
    return size / 1e9 if isinstance(size, int) and size > 0 else None


def fit_batch_to_memory(train_values: dict, given: set[str], memory_gb: float | None) -> str | None:
    """On a small GPU, train a big preset's batch as two micro-batches (the same tokens per step,
    half the activations: shakespeare-char's peak 5.2 -> 2.7 GiB in bfloat16, measured on the CPU
    backend). Changes `train_values` in place and says so; leaves a batch the user chose alone."""
    if memory_gb is None or memory_gb >= SMALL_GPU_GB or {"batch_size", "grad_accum"} & given:
        return None
    if train_values["batch_size"] < 64:
        return None
    train_values["batch_size"] //= 2
    train_values["grad_accum"] = train_values.get("grad_accum", 1) * 2
    return (f"batch {train_values['batch_size']} x {train_values['grad_accum']} micro-batches for this GPU's "
            f"{memory_gb:.0f} GB")
