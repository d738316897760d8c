"""The benchmark's other processes, so that neither framework slows the other:

  * `parity.py`, at start-up, runs one batch through both models and compares
    logits, loss and every gradient;
  * `torch_worker.py` runs every PyTorch measurement, with no MLX and no OpenBLAS
    loaded (why: see its docstring), from the MLX model's initial weights (an .npz)
    and the same seeded batches;
  * `coldstart.py`, one fresh process per mode, for the cold start;
  * `mlx_worker.py`, on a CUDA GPU, times MLX with TF32 matmuls (MLX reads its
    TF32 switch once per process; every other process has it off).

Each gets a JSON spec and answers with a JSON file (or line); a child that fails
becomes one MlxgptError line, or an error row in the cold-start table.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
from mlx.utils import tree_flatten

import mlxgpt
from mlxgpt.bench.common import LABELS, TF32_ENV
from mlxgpt.bench.settings import BenchConfig, mlx_device
from mlxgpt.errors import MlxgptError
from mlxgpt.fast.jit import jit_cache_root
from mlxgpt.generate import default_keep
from mlxgpt.model import GPT

COLD_START_TIMEOUT_S = 900


def child_env(torch_side: bool, tf32: bool = False) -> dict[str, str]:
    """The environment of a child: this checkout importable, no BLAS of ours for PyTorch, and MLX's
    float32 matmuls true float32 (MLX_ENABLE_TF32=0; MLX's default is TF32 on CUDA and M5-class
    GPUs) unless `tf32` asks for the TF32 row."""
    env = dict(os.environ)
    env[TF32_ENV] = "1" if tf32 else "0"
    package_root = str(Path(mlxgpt.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    # fast.jit.setup_jit_flags put its g++ wrapper first on this process's PATH. A child that
    # inherited it would find the wrapper as "the compiler", key its kernel cache differently
    # and recompile everything: give children the PATH without it.
    wrappers = str(jit_cache_root())
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if not p.startswith(wrappers))
    if torch_side:
        env["MLXGPT_BLAS"] = "reference"  # a PyTorch process loads no BLAS of ours (see torch_worker.py)
    return env


def _spec(cfg: BenchConfig) -> dict[str, Any]:
    return {"model": asdict(cfg.model), "train": asdict(cfg.train), "seed": cfg.seed, "threads": cfg.threads,
            "device": cfg.torch_device, "mlx_device": mlx_device(), "warmup": cfg.warmup, "iters": cfg.iters,
            "min_seconds": cfg.min_seconds, "dtype": cfg.dtype, "quick": cfg.quick}


def run_parity(cfg: BenchConfig, scratch: Path) -> dict:
    spec, out = scratch / "parity.json", scratch / "parity-out.json"
    spec.write_text(json.dumps({**_spec(cfg), "rows": min(2, cfg.train.batch_size)}))
    proc = subprocess.run([sys.executable, "-m", "mlxgpt.bench.parity", str(spec), str(out)],
                          env=child_env(torch_side=False), capture_output=True, text=True)
    if proc.returncode != 0 or not out.exists():
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise MlxgptError(f"the parity check could not run (exit status {proc.returncode}): {tail}")
    return json.loads(out.read_text())


def run_mlx_worker(cfg: BenchConfig, mode: str, scratch: Path, *, tf32: bool, matmul: bool) -> dict:
    """MLX training (and its float32 matmul peak) timed in a fresh process (mlx_worker.py): the TF32
    row, since MLX reads MLX_ENABLE_TF32 once per process. A failure comes back as {"error": ...}."""
    spec, out = scratch / f"mlx-{mode}.json", scratch / f"mlx-{mode}-out.json"
    spec.write_text(json.dumps({"config": cfg.to_dict(), "mode": mode, "matmul": matmul}))
    proc = subprocess.run([sys.executable, "-m", "mlxgpt.bench.mlx_worker", str(spec), str(out)],
                          env=child_env(torch_side=False, tf32=tf32), capture_output=True, text=True)
    if proc.returncode != 0 or not out.exists():
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"error": f"exit status {proc.returncode}: {tail[:300]}"}
    return json.loads(out.read_text())


def run_torch_worker(cfg: BenchConfig, net: GPT, scratch: Path) -> dict:
    weights = scratch / "weights.npz"
    np.savez(weights, **{name: np.array(w, dtype=np.float32) for name, w in tree_flatten(net.parameters())})
    spec, out = scratch / "torch.json", scratch / "torch-out.json"
    spec.write_text(json.dumps({**_spec(cfg), "weights": str(weights), "matmul": True,
                                "modes": [m for m in cfg.modes if m.startswith("torch")],
                                "tf32_row": cfg.dtype == "float32" and "torch" in cfg.modes,
                                "gen_tokens": cfg.gen_tokens, "keep": default_keep(cfg.model.block_size)}))
    proc = subprocess.run([sys.executable, "-m", "mlxgpt.bench.torch_worker", str(spec), str(out)],
                          env=child_env(torch_side=True))  # its progress lines go straight to stderr
    if proc.returncode != 0 or not out.exists():
        raise MlxgptError(f"the PyTorch half of the benchmark failed (exit status {proc.returncode}; "
                          "its error is above)")
    return json.loads(out.read_text())


def cold_start(cfg: BenchConfig, mode: str, device: str | None, empty_cache: bool) -> dict:
    """Process start -> end of the first training step, in a fresh process. PyTorch runs on `device`
    if given, else on the device matching MLX's (common.matching_torch_device): the row says which."""
    spec = {"mode": mode, "model": asdict(cfg.model), "train": asdict(cfg.train), "seed": cfg.seed,
            "threads": cfg.threads, "torch_device": device, "mlx_device": mlx_device(),
            "cpu_streams": cfg.cpu_streams, "dtype": getattr(cfg, "dtype", "float32")}
    env = child_env(torch_side=not mode.startswith("mlx"))
    scratch = tempfile.mkdtemp(prefix="mlxgpt-cold-") if empty_cache else None
    if scratch:
        env["MLXGPT_JIT_CACHE"] = scratch  # where mlxgpt keeps MLX's compiled CPU kernels (fast.jit.jit_cache_root)
        env["TMPDIR"] = scratch  # ... and MLX's own place for them, $TMPDIR/mlx
        env["TORCHINDUCTOR_CACHE_DIR"] = os.path.join(scratch, "inductor")
        env["TRITON_CACHE_DIR"] = os.path.join(scratch, "triton")
    row: dict[str, Any] = {"mode": mode, "label": LABELS[mode], "empty_jit_cache": empty_cache}
    try:
        start = time.time()
        proc = subprocess.run([sys.executable, "-m", "mlxgpt.bench.coldstart", json.dumps(spec)], env=env,
                              capture_output=True, text=True, timeout=COLD_START_TIMEOUT_S)
        lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
        if not lines:
            tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            return {**row, "error": f"exit status {proc.returncode}: {tail[:300]}"}
        child = json.loads(lines[-1])
        row.update({k: child[k] for k in ("device", "device_note", "dtype") if k in child})
        if "error" in child:
            return {**row, "error": child["error"]}
        return {**row, "cold_start_s": child["t_end"] - start, "startup_and_imports_s": child["t_imported"] - start,
                **{k: child[k] for k in ("first_step_s", "rss_base_mb", "rss_peak_mb", "device_peak_mb", "loss")}}
    except subprocess.TimeoutExpired:
        return {**row, "error": f"took longer than {COLD_START_TIMEOUT_S} s"}
    finally:
        if scratch:
            shutil.rmtree(scratch, ignore_errors=True)
