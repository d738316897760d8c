"""The benchmark's other processes, so that neither framework slows the other:

  * `parity.py`, at start-up, runs one batch through both models and compares
    logits, loss and every gradient;
  * `torch_worker.py` runs every PyTorch measurement, with no MLX and no OpenBLAS
    loaded (why: see its docstring), from the MLX model's initial weights (an .npz)
    and the same seeded batches;
  * `coldstart.py`, one fresh process per mode, for the cold start.

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
from mlxgpt.bench.common import LABELS
from mlxgpt.bench.settings import BenchConfig
from mlxgpt.errors import MlxgptError
from mlxgpt.fast.jit import jit_cache_root
from mlxgpt.generate import default_keep
from mlxgpt.model import GPT

COLD_START_TIMEOUT_S = 900


def child_env(torch_side: bool) -> dict[str, str]:
    """The environment of a child: this checkout importable, and no BLAS of ours for PyTorch."""
    env = dict(os.environ)
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
            "device": cfg.torch_device, "warmup": cfg.warmup, "iters": cfg.iters, "quick": cfg.quick}


def run_parity(cfg: BenchConfig, scratch: Path) -> dict:
    spec, out = scratch / "parity.json", scratch / "parity-out.json"
    spec.write_text(json.dumps({**_spec(cfg), "rows": min(2, cfg.train.batch_size)}))
    proc = subprocess.run([sys.executable, "-m", "mlxgpt.bench.parity", str(spec), str(out)],
                          env=child_env(torch_side=False), capture_output=True, text=True)
    if proc.returncode != 0 or not out.exists():
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise MlxgptError(f"the parity check could not run (exit status {proc.returncode}): {tail}")
    return json.loads(out.read_text())


def run_torch_worker(cfg: BenchConfig, net: GPT, scratch: Path) -> dict:
    weights = scratch / "weights.npz"
    np.savez(weights, **{name: np.array(w, dtype=np.float32) for name, w in tree_flatten(net.parameters())})
    spec, out = scratch / "torch.json", scratch / "torch-out.json"
    spec.write_text(json.dumps({**_spec(cfg), "weights": str(weights), "matmul": True,
                                "modes": [m for m in cfg.modes if m.startswith("torch")],
                                "gen_tokens": cfg.gen_tokens, "keep": default_keep(cfg.model.block_size)}))
    proc = subprocess.run([sys.executable, "-m", "mlxgpt.bench.torch_worker", str(spec), str(out)],
                          env=child_env(torch_side=True))  # its progress lines go straight to stderr
    if proc.returncode != 0 or not out.exists():
        raise MlxgptError(f"the PyTorch half of the benchmark failed (exit status {proc.returncode}; "
                          "its error is above)")
    return json.loads(out.read_text())


def cold_start(cfg: BenchConfig, mode: str, device: str | None, empty_cache: bool) -> dict:
    """Process start -> end of the first training step, in a fresh process."""
    spec = {"mode": mode, "model": asdict(cfg.model), "train": asdict(cfg.train), "seed": cfg.seed,
            "threads": cfg.threads, "torch_device": device or "cpu", "cpu_streams": cfg.cpu_streams}
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
        if "error" in child:
            return {**row, "error": child["error"]}
        return {**row, "cold_start_s": child["t_end"] - start, "startup_and_imports_s": child["t_imported"] - start,
                **{k: child[k] for k in ("first_step_s", "rss_base_mb", "rss_peak_mb", "device_peak_mb", "loss")}}
    except subprocess.TimeoutExpired:
        return {**row, "error": f"took longer than {COLD_START_TIMEOUT_S} s"}
    finally:
        if scratch:
            shutil.rmtree(scratch, ignore_errors=True)
