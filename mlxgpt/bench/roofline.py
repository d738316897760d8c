"""The machine's measured matmul peak, in each framework and precision.

MFU needs a peak to divide by. nanoGPT divides by an A100's datasheet 312
TFLOP/s; we measure instead: the best rate of a large square matmul, fp32 and
(where the framework has it) bf16 and fp16, on the device each framework runs
on. Half precision has no BLAS on MLX's CPU backend (~30x slower than fp32) and
fp16 is slow in PyTorch on most CPUs, so each probe sizes itself down until one
matmul takes a fraction of a second: the probe stays short whatever the speed.

float32 is true float32 (the benchmark runs with MLX_ENABLE_TF32=0 and PyTorch's TF32
off); on a CUDA GPU the float32 peak with TF32 matmuls is measured too, labelled TF32,
the denominator of the TF32 rows' MFU.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Callable


@dataclass
class MatmulPeak:
    framework: str  # "mlx" | "torch"
    device: str  # "cpu" | "gpu"
    dtype: str
    n: int  # the (n x n) @ (n x n) size that was timed
    gflops: float  # best of `repeats`
    repeats: int
    error: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def _probe(make_matmul: Callable[[int], Callable[[], float]], n_max: int, budget_s: float) -> tuple[int, float, int]:
    """Grow n (doubling from 256) while the next size fits in budget/4, then keep the best of a few.
    `make_matmul(n)` allocates the inputs and returns a function timing one matmul."""
    n = 256
    timed = make_matmul(n)
    seconds = min(timed(), timed())  # the first call also warms up (threads, allocations)
    while n < n_max and seconds * 8 <= budget_s / 4:  # the next size costs ~8x
        n *= 2
        timed = make_matmul(n)
        seconds = timed()
    repeats, best, spent = 0, seconds, 0.0
    while repeats < 10 and (repeats < 2 or spent < budget_s / 2):
        s = timed()
        best, spent, repeats = min(best, s), spent + s, repeats + 1
    return n, 2 * n**3 / best / 1e9, repeats


def mlx_peak(dtype_name: str, n_max: int, budget_s: float) -> MatmulPeak:
    import mlx.core as mx

    device = "gpu" if mx.default_device().type == mx.gpu else "cpu"
    dtype = getattr(mx, dtype_name)

    def make_matmul(n: int) -> Callable[[], float]:
        a = mx.random.normal((n, n)).astype(dtype)
        b = mx.random.normal((n, n)).astype(dtype)
        mx.eval(a, b)

        def timed() -> float:
            start = time.perf_counter()
            mx.eval(a @ b)
            return time.perf_counter() - start

        return timed

    try:
        n, gflops, repeats = _probe(make_matmul, n_max, budget_s)
    except Exception as exc:  # a dtype the device cannot multiply
        return MatmulPeak("mlx", device, dtype_name, 0, 0.0, 0, f"{type(exc).__name__}: {exc}".splitlines()[0])
    return MatmulPeak("mlx", device, dtype_name, n, gflops, repeats)


def torch_peak(dtype_name: str, n_max: int, budget_s: float, device: str) -> MatmulPeak:
    import torch

    from mlxgpt.bench.torch_ref import synchronize

    dtype = getattr(torch, dtype_name)

    def make_matmul(n: int) -> Callable[[], float]:
        a = torch.randn(n, n, device=device).to(dtype)
        b = torch.randn(n, n, device=device).to(dtype)

        def timed() -> float:
            synchronize(device)
            start = time.perf_counter()
            a @ b
            synchronize(device)
            return time.perf_counter() - start

        return timed

    try:
        n, gflops, repeats = _probe(make_matmul, n_max, budget_s)
    except Exception as exc:
        kind = "cpu" if device == "cpu" else "gpu"
        return MatmulPeak("torch", kind, dtype_name, 0, 0.0, 0, f"{type(exc).__name__}: {exc}".splitlines()[0])
    return MatmulPeak("torch", "cpu" if device == "cpu" else "gpu", dtype_name, n, gflops, repeats)


DTYPES = ("float32", "bfloat16", "float16")
TF32 = "float32 (TF32)"  # the dtype label of a float32 matmul with TF32 allowed (a CUDA GPU only)


def measure(frameworks: list[str], *, gpu: bool, torch_device: str = "cpu", quick: bool = False) -> list[MatmulPeak]:
    """fp32, bf16 and fp16 matmul peaks for each framework in `frameworks`.

    fp32 gets a larger time budget (it is the denominator of MFU); half
    precision is probed briefly."""
    peaks = []
    for framework in frameworks:
        on_gpu = gpu if framework == "mlx" else torch_device != "cpu"
        n_max = 8192 if on_gpu else 2048
        for dtype in DTYPES:
            budget = (1.0 if quick else 3.0) if dtype == "float32" else (0.5 if quick else 1.0)
            if framework == "mlx":
                peaks.append(mlx_peak(dtype, n_max, budget))
            else:
                peaks.append(torch_peak(dtype, n_max, budget, torch_device))
    return peaks


def peak_gflops(peaks: list[dict], device: str, dtype: str = "float32") -> float | None:
    """The peak (GFLOP/s) of a device ("cpu" | "gpu") in one precision ("float32", TF32, "bfloat16"):
    the best matmul either framework reached on it. One denominator for both, so their MFUs
    compare like with like."""
    rates = [p["gflops"] for p in peaks if p["dtype"] == dtype and p["device"] == device and not p["error"]]
    return max(rates) if rates else None


def fp32_peak(peaks: list[dict], device: str) -> float | None:
    """The true-float32 peak of a device (TF32 off): the denominator of a float32 row's MFU."""
    return peak_gflops(peaks, device, "float32")
