"""Where the math runs: fast BLAS on Linux, device choice, and a report of both.

Why this module exists: the Linux `mlx[cpu]` wheel links the netlib *reference*
BLAS (~6 GFLOP/s). If a fast BLAS (OpenBLAS or MKL) is loaded with RTLD_GLOBAL
*before* `mlx.core` is imported, the dynamic linker resolves MLX's `cblas_sgemm`
to it instead (~190 GFLOP/s on our 2-core machines, 30x faster). `mlxgpt/__init__`
calls `setup_blas()` first thing, so any `import mlxgpt...` gets it for free.

This module must not import mlx at module level: that would defeat the point.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import glob
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import sysconfig
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

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
    found = ctypes.util.find_library("openblas")
    if found:
        paths.append(found)
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


def setup_blas() -> BlasInfo:
    """Load a fast BLAS globally before mlx.core, once; say what happened.

    Does nothing on macOS (MLX uses Accelerate/Metal there) and nothing when
    `MLXGPT_BLAS=reference`. Safe to call many times.
    """
    global _blas
    if _blas is not None:
        return _blas
    if sys.platform == "darwin":
        _blas = BlasInfo("accelerate", None, True)
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


# ---------------------------------------------------------------- compile JIT flags

# MLX's CPU backend compiles fused kernels by running `g++ -std=c++17 -O3 -Wall
# -fPIC -shared ...` with no CPU-specific flags: every kernel is scalar SSE2 code,
# and its exp/erf (MLX's own polynomial `simd::exp<float, 1>`) stays an out-of-line
# call, so the loop cannot be vectorised. These flags let g++ target this CPU
# (-march=native), inline those functions (-finline-limit) and so vectorise the
# loop, while keeping IEEE results: no -ffast-math, no FMA contraction. Measured:
# bit-identical output; erf(x)+1 kernel 12.6 -> 1.0 ms, GELU ~25x faster, baby step
# 61 -> 50 ms.
JIT_FLAGS = ("-march=native", "-fno-math-errno", "-fno-trapping-math", "-ffp-contract=off", "-finline-limit=10000")

_jit: str | None = None


def _cpu_signature() -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor() or platform.machine()
    wanted = ("model name", "flags")
    return "\n".join(sorted({line for line in lines if line.split(":")[0].strip() in wanted}))


def jit_cache_root() -> Path:
    """$MLXGPT_JIT_CACHE, else $XDG_CACHE_HOME/mlxgpt-jit, else ~/.cache/mlxgpt-jit."""
    if os.environ.get("MLXGPT_JIT_CACHE"):
        return Path(os.environ["MLXGPT_JIT_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "mlxgpt-jit"


def setup_jit_flags() -> str:
    """Make MLX's CPU kernel compiler use JIT_FLAGS, via a `g++` wrapper first on PATH.

    MLX caches compiled kernels in $TMPDIR/mlx/, so TMPDIR is pointed at a directory
    keyed by flags, compiler, CPU and MLX version: kernels built with different flags
    or for another CPU are never mixed. Linux only; off with MLXGPT_JIT_FLAGS=0; a
    no-op without g++. Returns a description for reports.
    """
    global _jit
    if _jit is not None:
        return _jit
    _jit = "default"
    if not sys.platform.startswith("linux") or os.environ.get("MLXGPT_JIT_FLAGS") == "0":
        return _jit
    if "mlx.core" in sys.modules:
        _jit = "default (mlx.core imported before mlxgpt)"
        return _jit
    # The real compiler, not our own wrapper: a child process inherits the wrapper on PATH
    # and must compute the same cache key as its parent (else it recompiles everything).
    wrappers = str(jit_cache_root())
    search_path = os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep)
                                  if p and not p.startswith(wrappers))
    compiler = shutil.which("g++", path=search_path)
    if compiler is None:
        return _jit
    try:
        version = subprocess.run([compiler, "--version"], capture_output=True, text=True, timeout=10).stdout
        mlx_version = metadata.version("mlx")
    except (OSError, subprocess.SubprocessError, metadata.PackageNotFoundError):
        return _jit
    key = hashlib.sha256("\0".join([*JIT_FLAGS, compiler, version, _cpu_signature(), mlx_version]).encode())
    root = jit_cache_root() / key.hexdigest()[:16]
    wrapper = root / "bin" / "g++"
    try:
        (root / "tmp").mkdir(parents=True, exist_ok=True)
        wrapper.parent.mkdir(parents=True, exist_ok=True)
        script = f'#!/bin/sh\nexec "{compiler}" "$@" {" ".join(JIT_FLAGS)}\n'
        if not wrapper.exists() or wrapper.read_text() != script:
            tmp = wrapper.with_suffix(f".{os.getpid()}")
            tmp.write_text(script)
            tmp.chmod(0o755)
            os.replace(tmp, wrapper)
    except OSError:
        return _jit  # read-only home or similar: keep MLX's defaults
    os.environ["PATH"] = f"{wrapper.parent}{os.pathsep}{search_path}"
    os.environ["TMPDIR"] = str(root / "tmp")
    _jit = " ".join(JIT_FLAGS)
    return _jit


# ---------------------------------------------------------------- CPU parallelism

@dataclass(frozen=True)
class DeviceSettings:
    """How a training step uses the device; reported by the UI and the bench."""

    streams: int  # batch shards computed concurrently (CPU); 1 on a GPU
    blas_threads: int | None  # threads per matmul (None: the BLAS's own choice)
    cache_limit_gb: float | None  # MLX buffer cache limit we set (None: MLX's default)

    def describe(self) -> str:
        parts = [f"{self.streams} stream{'s' if self.streams > 1 else ''}"]
        if self.blas_threads:
            parts.append(f"{self.blas_threads} BLAS thread{'s' if self.blas_threads > 1 else ''}")
        if self.cache_limit_gb:
            parts.append(f"cache {self.cache_limit_gb:.0f} GB")
        return ", ".join(parts)


def _set_blas_threads(threads: int) -> bool:
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

    if mx.default_device().type == mx.gpu:
        return DeviceSettings(1, None, None)
    cores = max(1, (os.cpu_count() or 1) // max(1, processes))
    streams = max(1, streams if streams is not None else min(cores, 4))
    blas_threads = max(1, cores // streams)
    if not _set_blas_threads(blas_threads):
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
