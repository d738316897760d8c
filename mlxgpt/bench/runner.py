"""The benchmark itself: MLX and PyTorch on the same model, weights and batches.

Three kinds of process, so that neither framework slows the other:
  * this one runs MLX (and never imports torch);
  * `parity.py` (a child, at start-up) runs one batch through both models and
    compares logits, loss and every gradient; a failure stops the benchmark,
    since the numbers would compare two different computations;
  * `torch_worker.py` (a child) runs every PyTorch measurement, with no MLX and
    no OpenBLAS loaded (why: see its docstring), from the MLX model's initial
    weights (an .npz) and the same seeded batches;
  * and `coldstart.py` children, one per mode, for the cold start.
Phases: parity; matmul peaks (roofline.py), the denominators of MFU; training
(MLX compiled, MLX uncompiled, PyTorch eager, PyTorch torch.compile; warm-up
steps, then timed steps); generation with and without the KV cache; cold start.
"""

from __future__ import annotations

import importlib.util
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import mlxgpt  # noqa: F401  (loads a fast BLAS before mlx.core)
import mlx.core as mx
import numpy as np
from mlx.utils import tree_flatten

from mlxgpt.fast.blas import setup_blas
from mlxgpt.fast.device import configure_device, device_name, on_gpu
from mlxgpt.fast.jit import jit_cache_root, setup_jit_flags
from mlxgpt.bench import roofline
from mlxgpt.bench.common import (LABELS, TRAIN_MODES, GenResult, TrainResult, draw_batches, machine_cores,
                                 peak_rss_mb, progress, time_steps)
from mlxgpt.config import PRESETS, ModelArgs, TrainArgs, default_preset_name
from mlxgpt.errors import MlxgptError
from mlxgpt.generate import default_keep, generate_tokens
from mlxgpt.model import GPT, flops_per_token
from mlxgpt.training import build_optimizer, make_train_step

# (warm-up, timed) steps per preset; a shakespeare-char step takes 10-30 s on a 2-core CPU
ITERS = {"baby": (5, 30), "shakespeare-char": (2, 5)}
QUICK_ITERS = {"baby": (3, 10), "shakespeare-char": (1, 2)}
TORCH_MISSING = ("PyTorch is not installed, so only MLX was measured. To compare: "
                 "pip install -e '.[bench]'  (or pip install -r requirements-bench.txt)")


def torch_available() -> bool:
    """Without importing it: this process stays free of torch."""
    try:
        return importlib.util.find_spec("torch") is not None
    except (ImportError, ValueError):
        return False


# ---------------------------------------------------------------- configuration


@dataclass
class BenchConfig:
    preset: str
    preset_note: str
    model: ModelArgs
    train: TrainArgs
    warmup: int
    iters: int
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

    @property
    def tokens_per_iter(self) -> int:
        return self.train.batch_size * self.train.grad_accum * self.model.block_size


MODEL_FLAGS = ("n_layer", "n_head", "n_embd", "block_size", "dropout", "bias", "vocab_size")


def config_from_args(args) -> BenchConfig:
    """Resolve the parsed flags (mlxgpt.bench.add_bench_arguments) against the preset."""
    if args.preset is None:
        preset = default_preset_name(on_gpu())
        note = f"default on {'GPU' if on_gpu() else 'CPU'}; choose with --preset"
    else:
        preset, note = args.preset, "chosen with --preset"
    values = {**PRESETS[preset].model, "vocab_size": 65}  # tiny Shakespeare's character vocabulary
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
    return BenchConfig(preset, note, model, train, warmup, iters, args.gen_tokens, modes, not args.no_cold_start,
                       cold_cache, args.threads or machine_cores(), args.cpu_streams, args.torch_device, args.seed,
                       args.quick, use_torch, command.strip())


@dataclass
class Report:
    config: dict
    environment: dict
    parity: dict | None = None
    matmul_peaks: list[dict] = field(default_factory=list)
    training: list[TrainResult] = field(default_factory=list)
    generation: list[GenResult] = field(default_factory=list)
    generation_agreement: str | None = None
    cold_start: list[dict] = field(default_factory=list)
    memory: dict = field(default_factory=dict)  # each framework's process peak RSS over the whole benchmark
    loss_curve: str | None = None
    notes: list[str] = field(default_factory=list)
    ratios: list[dict] = field(default_factory=list)
    wall_s: float = 0.0

    def to_dict(self) -> dict:
        return {"date": date.today().isoformat(), "config": self.config, "environment": self.environment,
                "parity": self.parity, "matmul_peaks": self.matmul_peaks,
                "training": [r.to_dict() for r in self.training],
                "generation": [g.to_dict() for g in self.generation],
                "generation_agreement": self.generation_agreement, "cold_start": self.cold_start,
                "memory": self.memory,
                "loss_curve": self.loss_curve, "ratios": self.ratios, "notes": self.notes, "wall_s": self.wall_s}


# ---------------------------------------------------------------- environment


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


# ---------------------------------------------------------------- MLX phases (this process)


def mlx_model(cfg: BenchConfig) -> GPT:
    """The benchmark's model; the same seed always gives the same initial weights."""
    mx.random.seed(cfg.seed)
    model = GPT(cfg.model)
    mx.eval(model.parameters())
    return model


def bench_mlx(cfg: BenchConfig, batches, compiled: bool) -> TrainResult:
    result = TrainResult("mlx" if compiled else "mlx-uncompiled", "gpu" if on_gpu() else "cpu",
                         tokens_per_iter=cfg.tokens_per_iter)
    xs = [mx.array(b[None]) for b in batches[0]]  # (accum=1, B, T)
    ys = [mx.array(b[None]) for b in batches[1]]
    # as training sets the device up: CPU streams, BLAS threads per stream, buffer cache
    settings = configure_device(cfg.cpu_streams)
    result.parallelism = settings.describe()
    if not compiled:
        mx.disable_compile()  # the very same step function, run op by op
    try:
        model = mlx_model(cfg)
        model.train()
        step, state = make_train_step(model, build_optimizer(cfg.train), cfg.train.grad_clip, settings.streams)
        mx.reset_peak_memory()

        def one_step(i: int) -> float:
            loss, norm = step(xs[i], ys[i])
            mx.eval(state, loss, norm)  # one eval per step, as in training.py
            return loss.item()

        time_steps(one_step, cfg.warmup, cfg.iters, result)
        result.peak_memory_mb = mx.get_peak_memory() / 2**20
    finally:
        mx.enable_compile()
        configure_device(1)  # back to one stream with every core's BLAS threads (generation)
    return result


def bench_mlx_generation(cfg: BenchConfig, net: GPT) -> list[GenResult]:
    """cfg.gen_tokens greedy tokens from a one-token prompt, with and without the KV
    cache. No cache = nanoGPT's sample.py (crop to block_size, re-run each token)."""
    n, block = cfg.gen_tokens, cfg.model.block_size
    results = []
    net.eval()
    for use_cache in (True, False):
        keep = default_keep(block) if use_cache else block
        run = lambda count: [t for t, _ in generate_tokens(net, [0], count, temperature=0.0, seed=0,
                                                           use_cache=use_cache, keep=keep)]
        run(min(n, block + 8))  # warm-up, window slide included
        start = time.perf_counter()
        ids = run(n)
        results.append(GenResult("mlx", use_cache, n, time.perf_counter() - start, ids))
    return results


# ---------------------------------------------------------------- child processes


def _child_env(torch_side: bool) -> dict[str, str]:
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
                          env=_child_env(torch_side=False), capture_output=True, text=True)
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
                          env=_child_env(torch_side=True))  # its progress lines go straight to stderr
    if proc.returncode != 0 or not out.exists():
        raise MlxgptError(f"the PyTorch half of the benchmark failed (exit status {proc.returncode}; "
                          "its error is above)")
    return json.loads(out.read_text())


def cold_start(cfg: BenchConfig, mode: str, device: str | None, empty_cache: bool) -> dict:
    """Process start -> end of the first training step, in a fresh process."""
    spec = {"mode": mode, "model": asdict(cfg.model), "train": asdict(cfg.train), "seed": cfg.seed,
            "threads": cfg.threads, "torch_device": device or "cpu", "cpu_streams": cfg.cpu_streams}
    env = _child_env(torch_side=not mode.startswith("mlx"))
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
                              capture_output=True, text=True, timeout=900)
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
        return {**row, "error": "took longer than 900 s"}
    finally:
        if scratch:
            shutil.rmtree(scratch, ignore_errors=True)


# ---------------------------------------------------------------- the whole run


def _ratio(mlx_value: float | None, torch_value: float | None) -> float | None:
    if not mlx_value or not torch_value:
        return None
    return mlx_value / torch_value


def _cpu_seconds() -> tuple[float, float, float] | None:
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


def _other_processes_cores(start: tuple[float, float, float] | None) -> float | None:
    """How many cores other processes kept busy, on average, since `start`: the contamination."""
    end = _cpu_seconds()
    if start is None or end is None or end[2] <= start[2]:
        return None
    return max(0.0, ((end[0] - start[0]) - (end[1] - start[1])) / (end[2] - start[2]))


def run_bench(cfg: BenchConfig) -> Report:
    started = time.perf_counter()
    cpu_at_start = _cpu_seconds()
    report = Report(config={"preset": cfg.preset, "preset_note": cfg.preset_note, "model": asdict(cfg.model),
                            "batch_size": cfg.train.batch_size, "grad_accum": cfg.train.grad_accum,
                            "tokens_per_iter": cfg.tokens_per_iter, "warmup": cfg.warmup, "iters": cfg.iters,
                            "gen_tokens": cfg.gen_tokens, "modes": cfg.modes, "dtype": "float32",
                            "torch_threads": cfg.threads if cfg.use_torch else None, "seed": cfg.seed,
                            "quick": cfg.quick, "command": cfg.command},
                    environment=environment())
    net = mlx_model(cfg)
    n_params = net.num_params()
    report.config.update(params=n_params, params_total=net.num_params(non_embedding=False),
                         flops_per_token=flops_per_token(cfg.model, n_params))
    if not cfg.use_torch:
        report.notes.append(TORCH_MISSING if not torch_available() else "--no-torch: ran MLX only.")
    else:
        report.notes.append(f"PyTorch intra-op threads set to {cfg.threads} (the machine's {machine_cores()} "
                            "cores); PyTorch ran in its own process, without MLX or OpenBLAS loaded.")

    with tempfile.TemporaryDirectory(prefix="mlxgpt-bench-") as tmp:
        scratch = Path(tmp)
        if cfg.use_torch:
            progress("parity: one batch through both frameworks (logits, loss, every gradient)")
            report.parity = run_parity(cfg, scratch)
            progress(report.parity["summary"])
            if not report.parity["ok"]:
                raise MlxgptError(f"{report.parity['summary']}: the two frameworks do not compute the same "
                                  "thing, so their timings would not be comparable")

        progress("MLX matmul peaks (fp32, bf16, fp16)")
        peaks = [p.to_dict() for p in roofline.measure(["mlx"], gpu=on_gpu(), quick=cfg.quick)]
        batches = draw_batches(cfg.model.vocab_size, cfg.train.batch_size, cfg.model.block_size, cfg.seed,
                               cfg.warmup + cfg.iters)
        results: dict[str, TrainResult] = {}
        for mode in [m for m in cfg.modes if m.startswith("mlx")]:
            progress(f"training, {LABELS[mode]}: {cfg.warmup} warm-up + {cfg.iters} timed steps")
            results[mode] = bench_mlx(cfg, batches, compiled=mode == "mlx")
        if cfg.gen_tokens:
            progress(f"MLX generation: {cfg.gen_tokens} greedy tokens, with and without the KV cache")
            report.generation = bench_mlx_generation(cfg, net)
        rss = {"mlx": peak_rss_mb()}

        if cfg.use_torch:
            worker = run_torch_worker(cfg, net, scratch)
            report.environment["torch"] = worker["environment"]
            peaks += worker.get("peaks", [])
            results.update({r["mode"]: TrainResult.from_dict(r) for r in worker["training"]})
            report.generation += [GenResult(g["framework"], g["kv_cache"], g["tokens"], g["seconds"], g["ids"])
                                  for g in worker["generation"]]
            rss["torch"] = worker["rss_peak_mb"]

    report.matmul_peaks = peaks
    kinds = {"mlx": "gpu" if on_gpu() else "cpu", "torch": "cpu" if report.environment.get("torch", {}).get(
        "device", "cpu") == "cpu" else "gpu"}
    for mode in cfg.modes:
        result = results[mode]
        peak = roofline.fp32_peak(peaks, kinds[mode.split("-")[0]])
        if result.ok and peak:
            result.mfu = report.config["flops_per_token"] * result.tokens_per_s / (peak * 1e9)
        report.training.append(result)
    report.memory = {f"{k}_process_peak_rss_mb": v for k, v in rss.items()}
    _compare_loss_curves(cfg, report)
    _compare_generations(report)

    if cfg.cold_start:
        for empty in ([False, True] if cfg.cold_cache else [False]):
            for mode in cfg.modes:
                progress(f"cold start, {LABELS[mode]}{' (empty JIT cache)' if empty else ''}: a fresh process")
                report.cold_start.append(cold_start(cfg, mode, cfg.torch_device, empty))
    _ratios(report)
    report.wall_s = time.perf_counter() - started
    others = _other_processes_cores(cpu_at_start)
    if others is not None:
        report.environment["other_processes_cores"] = others
        if others > 0.1:
            report.notes.append(f"other processes kept {others:.2f} of the {machine_cores()} cores busy on average "
                                "while this ran: the timings are contaminated; re-run on a quiet machine")
    return report


def _compare_loss_curves(cfg: BenchConfig, report: Report) -> None:
    """Without dropout, the same weights and batches must give the same losses."""
    by_mode = {r.mode: r for r in report.training if r.ok}
    if cfg.model.dropout > 0:
        report.loss_curve = f"dropout {cfg.model.dropout}: losses differ by design (each framework draws its own masks)"
        return
    pairs = [(a, b) for a in ("mlx", "mlx-uncompiled") for b in ("torch", "torch-compile") if a in by_mode and b in by_mode]
    if not pairs:
        return
    worst = max(float(np.max(np.abs(np.array(by_mode[a].losses) - np.array(by_mode[b].losses)))) for a, b in pairs)
    steps = len(by_mode[pairs[0][0]].losses)
    report.loss_curve = f"loss curves over {steps} steps agree to {worst:.1e} (max |MLX - PyTorch|)"


def _compare_generations(report: Report) -> None:
    by = {(g.framework, g.cache): g for g in report.generation}
    parts = []
    for cache in (True, False):
        a, b = by.get(("mlx", cache)), by.get(("torch", cache))
        if a and b:
            same = next((i for i, (p, q) in enumerate(zip(a.ids, b.ids)) if p != q), None)
            parts.append(f"{'with' if cache else 'without'} cache: " +
                         ("identical tokens" if same is None else f"first differs at token {same}"))
    if parts:
        report.generation_agreement = "greedy MLX vs PyTorch, " + "; ".join(parts)


def _ratios(report: Report) -> None:
    """MLX / PyTorch, written so that above 1 always means MLX is better."""
    train = {r.mode: r for r in report.training if r.ok}
    rate = lambda m: train[m].tokens_per_s if m in train else None
    best = lambda modes: max((rate(m) for m in modes if rate(m)), default=None)
    rows = [("training tokens/s, best MLX / best PyTorch", best(["mlx", "mlx-uncompiled"]), best(["torch", "torch-compile"])),
            ("training tokens/s, MLX compiled / PyTorch eager", rate("mlx"), rate("torch")),
            ("training tokens/s, MLX compiled / torch.compile", rate("mlx"), rate("torch-compile"))]
    gen = {(g.framework, g.cache): g.tokens_per_s for g in report.generation}
    rows += [("generation tokens/s, KV cache", gen.get(("mlx", True)), gen.get(("torch", True))),
             ("generation tokens/s, no cache (nanoGPT sample.py)", gen.get(("mlx", False)), gen.get(("torch", False)))]
    cold = {c["mode"]: c for c in report.cold_start if not c["empty_jit_cache"] and "error" not in c}
    if "mlx" in cold and "torch" in cold:  # time: PyTorch / MLX, so above 1 = MLX starts sooner
        rows.append(("cold start, PyTorch eager / MLX compiled (time)", cold["torch"]["cold_start_s"],
                     cold["mlx"]["cold_start_s"]))
        rows.append(("peak RSS, PyTorch eager / MLX compiled (memory)", cold["torch"]["rss_peak_mb"],
                     cold["mlx"]["rss_peak_mb"]))
    if len(report.memory) == 2:
        rows.append(("peak RSS of the benchmark process, PyTorch / MLX (memory)",
                     report.memory["torch_process_peak_rss_mb"], report.memory["mlx_process_peak_rss_mb"]))
    peaks = {(p["framework"], p["dtype"]): p["gflops"] for p in report.matmul_peaks if not p["error"]}
    rows.append(("matmul fp32 GFLOP/s", peaks.get(("mlx", "float32")), peaks.get(("torch", "float32"))))
    for what, a, b in rows:
        value = _ratio(a, b)
        if value is not None:
            report.ratios.append({"what": what, "ratio": value})


def write_json(report: Report, path: str) -> None:
    target = Path(path)
    if target.parent and not target.parent.exists():
        raise MlxgptError(f"--json {path}: the directory {target.parent} does not exist")
    target.write_text(json.dumps(report.to_dict(), indent=2) + "\n", encoding="utf-8")
