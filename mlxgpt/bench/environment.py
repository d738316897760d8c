"""What the benchmark ran on: the machine, MLX's device and BLAS, and how busy
other processes kept the cores while it ran (which contaminates the timings)."""

from __future__ import annotations

import os
import platform
import time

import mlx.core as mx

from mlxgpt.bench.common import machine_cores
from mlxgpt.fast.blas import setup_blas
from mlxgpt.fast.device import device_name
from mlxgpt.fast.jit import setup_jit_flags


def _openblas_details(path: str | None) -> str:
    """OpenBLAS's own build string (version, kernel, threads), when it is the BLAS in use."""
    if not path or "openblas" not in os.path.basename(path).lower():
        return ""
    import ctypes

    try:
        lib = ctypes.CDLL(path)
        lib.openblas_get_config.restype = ctypes.c_char_p
        return f"{lib.openblas_get_config().decode()}, {lib.openblas_get_num_threads()} threads"
    except (OSError, AttributeError):
        return ""


def _memory_gb() -> float | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError, AttributeError):
        return None


def environment() -> dict:
    blas = setup_blas()
    return {
        "machine": f"{platform.system()} {platform.machine()}", "processor": platform.processor() or None,
        "cores": machine_cores(), "memory_gb": _memory_gb(), "python": platform.python_version(),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "mlx": {"version": mx.__version__, "device": device_name(), "blas": blas.describe(),
                "blas_fast": blas.fast, "blas_details": _openblas_details(blas.path), "jit_flags": setup_jit_flags()},
    }


def cpu_seconds() -> tuple[float, float, float] | None:
    """(busy CPU seconds of the whole machine, of this process and its children, wall clock); Linux only."""
    try:
        with open("/proc/stat") as f:
            ticks = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    busy = sum(ticks[:8]) - ticks[3] - ticks[4]  # all but idle and iowait
    own = os.times()
    return busy / os.sysconf("SC_CLK_TCK"), own.user + own.system + own.children_user + own.children_system, \
        time.monotonic()


def other_processes_cores(start: tuple[float, float, float] | None) -> float | None:
    """How many cores other processes kept busy, on average, since `start` (a cpu_seconds()): the contamination."""
    end = cpu_seconds()
    if start is None or end is None or end[2] <= start[2]:
        return None
    return max(0.0, ((end[0] - start[0]) - (end[1] - start[1])) / (end[2] - start[2]))
