"""Compiler flags for the C++ kernels MLX's CPU backend compiles at run time.

Set up by mlxgpt's own commands (cli.run: train, generate, eval, inspect, bench, launch)
before MLX compiles anything, never by `import mlxgpt`: it puts a `g++` wrapper first on
PATH and points TMPDIR at a kernel cache, and a library user or a notebook must not have
its environment changed by an import. Child processes inherit both. A notebook can call
`mlxgpt.fast.jit.setup_jit_flags()` itself, before its first compiled function runs.
"""

from __future__ import annotations

import hashlib
import os
import platform
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from mlxgpt.fast.blas import cuda_backend
from mlxgpt.files import write_atomic

# MLX's CPU backend compiles fused kernels by running `g++ -std=c++17 -O3 -Wall
# -fPIC -shared ...` with no CPU-specific flags: every kernel is scalar SSE2 code,
# and its exp/erf (MLX's own polynomial `simd::exp<float, 1>`) stays an out-of-line
# call, so the loop cannot be vectorised. These flags let g++ target this CPU
# (-march=native), inline those functions (-finline-limit) and so vectorise the
# loop, while keeping IEEE results: no -ffast-math, no FMA contraction. Measured:
# bit-identical output; erf(x)+1 kernel 12.6 -> 1.0 ms, GELU ~25x faster, baby step
# 61 -> 50 ms.
JIT_FLAGS = ("-march=native", "-fno-math-errno", "-fno-trapping-math", "-ffp-contract=off", "-finline-limit=10000")

# MLX's own command for each kernel (mlx/backend/cpu/compiled.cpp), before our flags.
MLX_FLAGS = ("-std=c++17", "-O3", "-Wall", "-fPIC")
# Every kernel's source starts with this header (MLX's SIMD types and ops), and g++ spends
# ~0.4 s of each kernel's ~0.45 s parsing it. Compiled once into a precompiled header that
# the wrapper puts first on the include path, each kernel takes ~0.1 s: the ~75 kernels of
# a first training run compile in ~8 s instead of ~30 s. Same machine code (objdump).
PREAMBLE = "mlx/backend/cpu/compiled_preamble.h"

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
    or for another CPU are never mixed. Linux CPU backend only (a no-op where MLX runs on
    a CUDA GPU); off with MLXGPT_JIT_FLAGS=0; a no-op without g++. Returns a description
    for reports.
    """
    global _jit
    if _jit is not None:
        return _jit
    _jit = "default"
    if not sys.platform.startswith("linux") or os.environ.get("MLXGPT_JIT_FLAGS") == "0":
        return _jit
    if cuda_backend():  # MLX-CUDA compiles GPU kernels (and keeps their cache under TMPDIR): leave both alone
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
        script = f'#!/bin/sh\nexec "{compiler}" -I"{root / "pch"}" "$@" {" ".join(JIT_FLAGS)}\n'
        if not wrapper.exists() or wrapper.read_text() != script:
            write_atomic(wrapper, script, mode=0o755)
    except OSError:
        return _jit  # read-only home or similar: keep MLX's defaults
    _build_precompiled_preamble(compiler, root / "pch")
    os.environ["PATH"] = f"{wrapper.parent}{os.pathsep}{search_path}"
    os.environ["TMPDIR"] = str(root / "tmp")
    _jit = " ".join(JIT_FLAGS)
    return _jit


def _mlx_include_dir() -> Path | None:
    """MLX's C++ headers, found without importing mlx (its kernels #include them from here)."""
    from importlib.util import find_spec

    spec = find_spec("mlx")
    for location in (spec.submodule_search_locations or []) if spec else []:
        if (Path(location) / "include" / PREAMBLE).is_file():
            return Path(location) / "include"
    return None


def _build_precompiled_preamble(compiler: str, pch_dir: Path) -> None:
    """PREAMBLE.gch in pch_dir, once per cache key (~1 s). g++ uses it for any kernel compiled with
    the same flags and falls back to the header itself otherwise, so a missing one only costs time."""
    target = pch_dir / f"{PREAMBLE}.gch"
    include = _mlx_include_dir()
    if target.exists() or include is None:
        return
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f"{target.name}.{os.getpid()}.tmp")
        built = subprocess.run([compiler, *MLX_FLAGS, *JIT_FLAGS, "-I", str(include), "-x", "c++-header",
                                str(include / PREAMBLE), "-o", str(partial)], capture_output=True, timeout=120)
        if built.returncode == 0:
            os.replace(partial, target)  # whole or not at all: a concurrent compile never reads half of it
        else:
            partial.unlink(missing_ok=True)
    except (OSError, subprocess.SubprocessError):
        return


def first_compile() -> bool:
    """True when MLX's kernel cache for these flags is still empty: the run about to start compiles
    every kernel it uses (tens of seconds on a CPU), which the UI says, so nobody thinks it hung."""
    if _jit in (None, "default"):
        return False
    cache = Path(os.environ["TMPDIR"]) / "mlx"
    return not any(cache.glob("*/cpu/*.so"))
