"""A fast BLAS under MLX's Linux CPU backend.

The Linux `mlx[cpu]` wheel links the netlib *reference* BLAS (~6 GFLOP/s). If a fast
BLAS (OpenBLAS or MKL) is loaded with RTLD_GLOBAL *before* `mlx.core` is imported, the
dynamic linker resolves MLX's `cblas_sgemm` to it instead (~190 GFLOP/s on our 2-core
machines, 30x faster). `mlxgpt/__init__` calls `setup_blas()` first thing, so any
`import mlxgpt...` gets it: it loads a library into the process and changes nothing else
(no environment variable, no subprocess).

Measured: 1024x1024 fp32 matmul 4.7 -> 86-189 GFLOP/s (docs/benchmarks.md). Upstream:
the Linux wheel bundles the reference BLAS (ml-explore/mlx, CPU backend packaging).

This module must not import mlx: that would defeat the point.
"""

from __future__ import annotations

import ctypes
import glob
import os
import sys
import sysconfig
from dataclasses import dataclass

# Candidate libraries, fastest first. Paths are Debian/Ubuntu/Fedora layouts plus
# pip's `mkl` package (which installs libmkl_rt into <prefix>/lib).
_SYSTEM_CANDIDATES = (
    "/usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.so.0",
    "/usr/lib/aarch64-linux-gnu/openblas-pthread/libopenblas.so.0",
    "/usr/lib/x86_64-linux-gnu/libopenblas.so.0",
    "/usr/lib/aarch64-linux-gnu/libopenblas.so.0",
    "/usr/lib64/libopenblas.so.0",
    "/usr/lib64/libopenblasp.so.0",
    "/usr/lib/libopenblas.so.0",
)


_LIBRARY_DIRS = ("/usr/local/lib", "/usr/lib", "/usr/lib64", "/opt/homebrew/opt/openblas/lib")


@dataclass(frozen=True)
class BlasInfo:
    """Which BLAS MLX's matmuls will call, and how we know."""

    name: str  # "openblas", "mkl", "reference", "accelerate", ...
    path: str | None
    fast: bool
    note: str = ""

    def describe(self) -> str:
        return f"{self.name} ({self.path})" if self.path else self.name


_blas: BlasInfo | None = None  # set once per process by setup_blas(); a cache, not config


def _pip_mkl_candidates() -> list[str]:
    prefixes = {sys.prefix, sys.base_prefix, sysconfig.get_config_var("prefix") or ""}
    found: list[str] = []
    for prefix in prefixes:
        found += sorted(glob.glob(os.path.join(prefix, "lib", "libmkl_rt.so*")))
    return found


def _candidates() -> list[str]:
    explicit = os.environ.get("MLXGPT_BLAS")
    if explicit:
        return [explicit]
    paths = [p for p in _SYSTEM_CANDIDATES if os.path.exists(p)]
    # Other layouts: a glob of the loader's usual directories. Not ctypes.util.find_library,
    # which runs `ldconfig -p` (a subprocess, and import mlxgpt must start none).
    for directory in [*os.environ.get("LD_LIBRARY_PATH", "").split(os.pathsep), *_LIBRARY_DIRS]:
        if directory:
            paths += sorted(glob.glob(os.path.join(directory, "libopenblas*.so*")))
    return paths + _pip_mkl_candidates()


def _symbol_owner(name: str) -> str | None:
    """The shared object that the process-wide lookup of `name` resolves to."""

    class DlInfo(ctypes.Structure):
        _fields_ = [("dli_fname", ctypes.c_char_p), ("dli_fbase", ctypes.c_void_p),
                    ("dli_sname", ctypes.c_char_p), ("dli_saddr", ctypes.c_void_p)]

    try:
        libc = ctypes.CDLL(None)
        address = ctypes.cast(getattr(libc, name), ctypes.c_void_p).value
        info = DlInfo()
        libc.dladdr.argtypes = [ctypes.c_void_p, ctypes.POINTER(DlInfo)]
        if libc.dladdr(ctypes.c_void_p(address), ctypes.byref(info)) and info.dli_fname:
            return info.dli_fname.decode()
    except (AttributeError, OSError, ValueError):
        return None
    return None


# MLX's CUDA backend ships as these distributions (the `mlx[cuda12]` / `mlx[cuda13]` extras).
_CUDA_DISTRIBUTIONS = ("mlx-cuda-12", "mlx-cuda-13", "mlx-cuda")


def cuda_backend() -> bool:
    """True when MLX will run on an NVIDIA GPU: its CUDA backend is installed and the machine
    has a GPU that the NVIDIA driver sees. Known without importing mlx (see the module doc)."""
    if not sys.platform.startswith("linux"):
        return False
    from importlib import metadata

    for name in _CUDA_DISTRIBUTIONS:
        try:
            metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
        return bool(glob.glob("/proc/driver/nvidia/gpus/*")) or os.path.exists("/dev/nvidia0")
    return False


def setup_blas() -> BlasInfo:
    """Load a fast BLAS globally before mlx.core, once; say what happened.

    Does nothing on macOS (MLX uses Accelerate/Metal there), nothing where MLX runs on a
    CUDA GPU (matmuls run there, not in a CPU BLAS), and nothing when
    `MLXGPT_BLAS=reference`. Safe to call many times.
    """
    global _blas
    if _blas is not None:
        return _blas
    if sys.platform == "darwin":
        _blas = BlasInfo("accelerate", None, True)
        return _blas
    if cuda_backend():
        _blas = BlasInfo("not used", None, True, "MLX runs matmuls on the CUDA GPU")
        return _blas
    if os.environ.get("MLXGPT_BLAS") == "reference":
        _blas = BlasInfo("reference", None, False, "MLXGPT_BLAS=reference")
        return _blas
    if "mlx.core" in sys.modules:
        # Too late to interpose: report what the process already resolved.
        owner = _symbol_owner("cblas_sgemm")
        _blas = _classify(owner, note="mlx.core was imported before mlxgpt")
        return _blas
    for path in _candidates():
        try:
            ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
        except OSError:
            continue
        owner = _symbol_owner("cblas_sgemm")
        if owner and os.path.realpath(owner) == os.path.realpath(path):
            _blas = _classify(owner)
            return _blas
    _blas = BlasInfo("reference", None, False, "no OpenBLAS or MKL found")
    return _blas


def _classify(owner: str | None, note: str = "") -> BlasInfo:
    if owner is None:
        return BlasInfo("unknown", None, False, note)
    lower = os.path.basename(owner).lower()
    if "openblas" in lower:
        return BlasInfo("openblas", owner, True, note)
    if "mkl" in lower:
        return BlasInfo("mkl", owner, True, note)
    return BlasInfo("reference", owner, False, note)


def blas_warning(info: BlasInfo) -> str | None:
    """The one-line fix to show when matmuls will run on the slow reference BLAS."""
    if info.fast or sys.platform == "darwin":
        return None
    return ("MLX is using the slow reference BLAS (~30x slower matmuls): install OpenBLAS "
            "(`sudo apt-get install libopenblas0-pthread`) or `pip install mkl`, "
            "or set MLXGPT_BLAS=/path/to/libopenblas.so")


def set_blas_threads(threads: int) -> bool:
    """Threads per matmul of the loaded OpenBLAS or MKL; False when it cannot be set."""
    info = setup_blas()
    if not info.path:
        return False
    try:
        lib = ctypes.CDLL(info.path)
        setter = getattr(lib, "openblas_set_num_threads", None) or getattr(lib, "MKL_Set_Num_Threads")
        setter(ctypes.c_int(threads))
        return True
    except (OSError, AttributeError):
        return False
