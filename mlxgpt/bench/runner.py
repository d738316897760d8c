"""The benchmark itself: MLX and PyTorch on the same model, weights and batches.

Phases, in order (each says on stderr when it starts):
  1. parity: one batch through both models, logits/loss/gradients compared
     (parity.check_parity); a failure stops the benchmark, since the numbers
     would compare two different computations;
  2. matmul peaks in each framework (roofline.py), the denominators of MFU;
  3. training: MLX compiled, MLX uncompiled, PyTorch eager, PyTorch
     torch.compile, each from the same initial weights (MLX's, copied into
     torch) over the same pre-drawn batches; warm-up steps, then timed steps;
  4. generation: 500 greedy tokens with and without the KV cache, both frameworks;
  5. cold start: one fresh process per mode (coldstart.py).
MLX runs first and PyTorch second, so neither's worker threads compete with
the other's; torch's intra-op threads are set to the machine's cores.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import date
from pathlib import Path
from typing import Any, Callable

import mlxgpt  # noqa: F401  (loads a fast BLAS before mlx.core)
import mlx.core as mx
import numpy as np

from mlxgpt.backend import configure_device, device_name, on_gpu, setup_blas, setup_jit_flags
from mlxgpt.bench import roofline
from mlxgpt.bench.coldstart import peak_rss_mb
from mlxgpt.config import PRESETS, ModelArgs, TrainArgs, default_preset_name
from mlxgpt.errors import MlxgptError
from mlxgpt.generate import default_keep, generate_tokens
from mlxgpt.model import GPT, flops_per_token
from mlxgpt.training import build_optimizer, make_train_step

TRAIN_MODES = ("mlx", "mlx-uncompiled", "torch", "torch-compile")
LABELS = {"mlx": "MLX compiled", "mlx-uncompiled": "MLX uncompiled", "torch": "PyTorch eager",
          "torch-compile": "PyTorch torch.compile"}
# (warm-up, timed) steps per preset; a shakespeare-char step takes 10-30 s on a 2-core CPU
ITERS = {"baby": (5, 30), "shakespeare-char": (2, 5)}
QUICK_ITERS = {"baby": (3, 10), "shakespeare-char": (1, 2)}
TORCH_MISSING = ("PyTorch is not installed, so only MLX was measured. To compare: "
                 "pip install -e '.[bench]'  (or pip install -r requirements-bench.txt)")


def machine_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS
        return os.cpu_count() or 1


def torch_available() -> bool:
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


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


# ---------------------------------------------------------------- results


@dataclass
class TrainResult:
    mode: str
    device: str  # "cpu" | "gpu" (MLX); "cpu" | "cuda" | "mps" (torch)
    parallelism: str = ""  # MLX: streams, BLAS threads, cache; torch: threads
    ok: bool = True
    error: str | None = None
    step_s: list[float] = field(default_factory=list)  # the timed steps (after warm-up)
    first_step_s: float | None = None  # first step in this process: compile/JIT included
    losses: list[float] = field(default_factory=list)  # every step's loss, warm-up included
    peak_memory_mb: float | None = None  # device allocator's peak (MLX; torch CUDA)
    tokens_per_iter: int = 0
    mfu: float | None = None

    @property
    def median_s(self) -> float:
        return statistics.median(self.step_s)

    @property
    def tokens_per_s(self) -> float:
        return self.tokens_per_iter / self.median_s

    def to_dict(self) -> dict:
        out = asdict(self)
        out["label"] = LABELS[self.mode]
        if self.ok and self.step_s:
            ms = [1000 * s for s in self.step_s]
            out.update(median_ms=statistics.median(ms), min_ms=min(ms), max_ms=max(ms),
                       p10_ms=float(np.percentile(ms, 10)), p90_ms=float(np.percentile(ms, 90)),
                       stdev_ms=statistics.stdev(ms) if len(ms) > 1 else 0.0, tokens_per_s=self.tokens_per_s)
        return out


@dataclass
class GenResult:
    framework: str  # "mlx" | "torch"
    cache: bool
    tokens: int
    seconds: float
    ids: list[int]

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds

    def to_dict(self) -> dict:
        return {"framework": self.framework, "kv_cache": self.cache, "tokens": self.tokens, "seconds": self.seconds,
                "tokens_per_s": self.tokens_per_s}


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


def environment(cfg: BenchConfig, torch_device: str | None) -> dict:
    blas = setup_blas()
    env: dict[str, Any] = {
        "machine": f"{platform.system()} {platform.machine()}", "processor": platform.processor() or None,
        "cores": machine_cores(), "memory_gb": _memory_gb(), "python": platform.python_version(),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "mlx": {"version": mx.__version__, "device": device_name(), "blas": blas.describe(),
                "blas_fast": blas.fast, "blas_details": _openblas_details(blas.path), "jit_flags": setup_jit_flags()},
    }
    if cfg.use_torch:
        from mlxgpt.bench.torch_ref import describe_build

        env["torch"] = {**describe_build(), "device": torch_device}
    return env


# ---------------------------------------------------------------- phases


def progress(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def mlx_model(cfg: BenchConfig) -> GPT:
    """The benchmark's model; the same seed always gives the same initial weights."""
    mx.random.seed(cfg.seed)
    model = GPT(cfg.model)
    mx.eval(model.parameters())
    return model


def draw_batches(cfg: BenchConfig, count: int) -> tuple[np.ndarray, np.ndarray]:
    """(count, B, T) inputs and targets of uniformly random token ids; the speed of
    a step does not depend on which tokens it sees."""
    rng = np.random.default_rng(cfg.seed)
    shape = (count, cfg.train.batch_size, cfg.model.block_size)
    return (rng.integers(0, cfg.model.vocab_size, shape).astype(np.int32),
            rng.integers(0, cfg.model.vocab_size, shape).astype(np.int32))


def _short_error(exc: BaseException) -> str:
    text = str(exc).strip()
    lines = [line for line in text.splitlines() if line.strip()]
    # torch.compile errors start with a generic line; the cause is usually further in
    useful = next((line for line in lines if any(k in line for k in ("Error", "error", "not found", "failed"))),
                  lines[0] if lines else "")
    return f"{type(exc).__name__}: {useful.strip()[:300]}"


def _time_steps(one_step: Callable[[int], float], warmup: int, iters: int, result: TrainResult) -> None:
    for i in range(warmup + iters):
        start = time.perf_counter()
        loss = one_step(i)  # returns once the step's work is done (synchronised)
        seconds = time.perf_counter() - start
        if i == 0:
            result.first_step_s = seconds
        if i >= warmup:
            result.step_s.append(seconds)
        result.losses.append(loss)


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

        _time_steps(one_step, cfg.warmup, cfg.iters, result)
        result.peak_memory_mb = mx.get_peak_memory() / 2**20
    finally:
        mx.enable_compile()
        configure_device(1)  # back to one stream with every core's BLAS threads (matmul probe, generation)
    return result


def bench_torch(cfg: BenchConfig, weights: dict[str, np.ndarray], batches, compiled: bool,
                device: str) -> TrainResult:
    import torch

    from mlxgpt.bench.torch_ref import GPT as TorchGPT
    from mlxgpt.bench.torch_ref import Trainer, load_mlx_weights, synchronize

    result = TrainResult("torch-compile" if compiled else "torch", device, tokens_per_iter=cfg.tokens_per_iter,
                         parallelism=f"{torch.get_num_threads()} threads")
    model = TorchGPT(cfg.model)
    load_mlx_weights(model, weights)
    model.to(device).train()
    xs = [torch.from_numpy(b[None]).long().to(device) for b in batches[0]]
    ys = [torch.from_numpy(b[None]).long().to(device) for b in batches[1]]
    forward = model
    if compiled:
        import torch._dynamo

        torch._dynamo.reset()
        forward = torch.compile(model)
    trainer = Trainer(model, cfg.train, torch.device(device).type, forward)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()

    def one_step(i: int) -> float:
        loss, _ = trainer.step(xs[i], ys[i])
        synchronize(device)
        return loss.item()

    try:
        _time_steps(one_step, cfg.warmup, cfg.iters, result)
    except Exception as exc:  # torch.compile needs a working C++ toolchain on CPU, Triton on GPU
        result.ok, result.error = False, _short_error(exc)
        return result
    if device == "cuda":
        result.peak_memory_mb = torch.cuda.max_memory_allocated() / 2**20
    return result


def bench_generation(cfg: BenchConfig, mlx_net: GPT, torch_net, device: str | None) -> list[GenResult]:
    """cfg.gen_tokens greedy tokens from a one-token prompt, per framework, with and without
    the KV cache. No cache = nanoGPT's sample.py (crop to block_size, re-run each token)."""
    n, block = cfg.gen_tokens, cfg.model.block_size
    warm = min(n, block + 8)  # runs the window-slide path once too
    results = []
    mlx_net.eval()
    for use_cache in (True, False):
        keep = default_keep(block) if use_cache else block
        run = lambda count: [t for t, _ in generate_tokens(mlx_net, [0], count, temperature=0.0, seed=0,
                                                           use_cache=use_cache, keep=keep)]
        run(warm)
        start = time.perf_counter()
        ids = run(n)
        results.append(GenResult("mlx", use_cache, n, time.perf_counter() - start, ids))
    if torch_net is not None:
        from mlxgpt.bench.torch_ref import generate_tokens as torch_generate

        torch_net.eval()
        for use_cache in (True, False):
            run = lambda count: list(torch_generate(torch_net, [0], count, use_cache=use_cache,
                                                    keep=default_keep(block), device=device))
            run(warm)
            start = time.perf_counter()
            ids = run(n)
            results.append(GenResult("torch", use_cache, n, time.perf_counter() - start, ids))
    return results


def cold_start(cfg: BenchConfig, mode: str, device: str | None, empty_cache: bool) -> dict:
    """Process start -> end of the first training step, in a fresh process."""
    spec = {"mode": mode, "model": asdict(cfg.model), "train": asdict(cfg.train), "seed": cfg.seed,
            "threads": cfg.threads, "torch_device": device or "cpu", "cpu_streams": cfg.cpu_streams}
    env = dict(os.environ)
    package_root = str(Path(mlxgpt.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    if not mode.startswith("mlx"):
        env["MLXGPT_BLAS"] = "reference"  # a PyTorch process loads no OpenBLAS of ours
    scratch = tempfile.mkdtemp(prefix="mlxgpt-cold-") if empty_cache else None
    if scratch:
        env["MLXGPT_JIT_CACHE"] = scratch  # where mlxgpt keeps MLX's compiled CPU kernels (backend.jit_cache_root)
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


def run_bench(cfg: BenchConfig) -> Report:
    started = time.perf_counter()
    torch_device = None
    if cfg.use_torch:
        import torch

        from mlxgpt.bench.torch_ref import best_device

        torch.set_num_threads(cfg.threads)
        torch_device = cfg.torch_device or best_device()
    report = Report(config={"preset": cfg.preset, "preset_note": cfg.preset_note, "model": asdict(cfg.model),
                            "batch_size": cfg.train.batch_size, "grad_accum": cfg.train.grad_accum,
                            "tokens_per_iter": cfg.tokens_per_iter, "warmup": cfg.warmup, "iters": cfg.iters,
                            "gen_tokens": cfg.gen_tokens, "modes": cfg.modes, "dtype": "float32",
                            "torch_threads": cfg.threads if cfg.use_torch else None, "seed": cfg.seed,
                            "quick": cfg.quick, "command": cfg.command},
                    environment=environment(cfg, torch_device))
    net = mlx_model(cfg)
    n_params = net.num_params()
    report.config.update(params=n_params, params_total=net.num_params(non_embedding=False),
                         flops_per_token=flops_per_token(cfg.model, n_params))
    if not cfg.use_torch:
        report.notes.append(TORCH_MISSING if not torch_available() else "--no-torch: ran MLX only.")
    else:
        report.notes.append(f"PyTorch intra-op threads set to {cfg.threads} (the machine's {machine_cores()} cores).")

    torch_net, weights = None, None
    if cfg.use_torch:
        from mlxgpt.bench.parity import check_parity
        from mlxgpt.bench.torch_ref import from_mlx, mlx_weights

        progress("parity: one batch through both frameworks (logits, loss, every gradient)")
        weights = mlx_weights(net)
        torch_net = from_mlx(net, torch_device)
        px, py = draw_batches(cfg, 1)
        rows = min(2, cfg.train.batch_size)
        parity = check_parity(net, torch_net, px[0, :rows], py[0, :rows])
        report.parity = parity.to_dict()
        progress(parity.summary())
        if not parity.ok:
            raise MlxgptError(f"{parity.summary()}: the two frameworks do not compute the same thing, "
                              "so their timings would not be comparable")

    progress("matmul peaks (fp32, bf16, fp16)")
    frameworks = ["mlx"] + (["torch"] if cfg.use_torch else [])
    peaks = roofline.measure(frameworks, gpu=on_gpu(), torch_device=torch_device or "cpu", quick=cfg.quick)
    report.matmul_peaks = [p.to_dict() for p in peaks]

    batches = draw_batches(cfg, cfg.warmup + cfg.iters)
    for mode in cfg.modes:
        progress(f"training, {LABELS[mode]}: {cfg.warmup} warm-up + {cfg.iters} timed steps")
        if mode.startswith("mlx"):
            result = bench_mlx(cfg, batches, compiled=mode == "mlx")
        else:
            result = bench_torch(cfg, weights, batches, compiled=mode == "torch-compile", device=torch_device)
            if not result.ok:
                progress(f"{LABELS[mode]} failed: {result.error}")
        kind = "gpu" if (on_gpu() if mode.startswith("mlx") else torch_device != "cpu") else "cpu"
        peak = roofline.fp32_peak(peaks, kind)
        if result.ok and peak:
            result.mfu = report.config["flops_per_token"] * result.tokens_per_s / (peak.gflops * 1e9)
        report.training.append(result)
    _compare_loss_curves(cfg, report)

    if cfg.gen_tokens:
        progress(f"generation: {cfg.gen_tokens} greedy tokens, with and without the KV cache")
        report.generation = bench_generation(cfg, net, torch_net, torch_device)
        _compare_generations(report)

    if cfg.cold_start:
        for empty in ([False, True] if cfg.cold_cache else [False]):
            for mode in cfg.modes:
                progress(f"cold start, {LABELS[mode]}{' (empty JIT cache)' if empty else ''}: a fresh process")
                report.cold_start.append(cold_start(cfg, mode, torch_device, empty))
    report.notes.append(f"This process's peak RSS: {peak_rss_mb():.0f} MiB (both frameworks together; "
                        "per-framework figures are in the cold-start rows).")
    _ratios(report)
    report.wall_s = time.perf_counter() - started
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
