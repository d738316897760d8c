"""The benchmark itself: MLX and PyTorch on the same model, weights and batches.

Phases, in order: parity (a failure stops the benchmark, since the numbers would
compare two different computations; always float32, TF32 off); matmul peaks
(roofline.py), the denominators of MFU; training (MLX compiled, MLX --plain, MLX
uncompiled, PyTorch eager, PyTorch torch.compile, in --dtype; warm-up steps, then
timed steps until both a minimum count and a minimum time have passed; on a CUDA
GPU in float32 also MLX and PyTorch with TF32 matmuls, as separate rows);
generation with and without the KV cache; cold start. PyTorch runs on the device
matching MLX's (CUDA, MPS or the CPU), and every row names its device. MLX runs in this process (mlx_timing.py), which
never imports torch; everything PyTorch runs in children (processes.py). Then the
comparisons: loss curves, generated tokens, and the MLX/PyTorch ratios.
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import mlx.core as mx
import numpy as np

from mlxgpt.bench import roofline
from mlxgpt.bench.common import (LABELS, TF32_ENV, TF32_MODES, GenResult, TrainResult, check_mirrored,
                                 device_class, draw_batches, machine_cores, peak_rss_mb, progress)
from mlxgpt.bench.environment import cpu_seconds, environment, other_processes_cores
from mlxgpt.bench.mlx_timing import bench_mlx, bench_mlx_generation, mlx_model
from mlxgpt.bench.processes import cold_start, run_mlx_worker, run_parity, run_torch_worker
from mlxgpt.bench.report import Report
from mlxgpt.bench.settings import BenchConfig, mlx_device, torch_available
from mlxgpt.errors import MlxgptError
from mlxgpt.fast.device import on_gpu
from mlxgpt.model import flops_per_token

TORCH_MISSING = ("PyTorch is not installed, so only MLX was measured. To compare: "
                 "pip install -e '.[bench]'  (or pip install -r requirements-bench.txt)")


def run_bench(cfg: BenchConfig) -> Report:
    # True float32 for MLX's comparable rows: MLX multiplies float32 with TF32 by default on CUDA
    # (and on M5-class Metal GPUs) and reads this switch once, at its first float32 matmul, which
    # has not happened yet in this process (mlxgpt bench). Children get it from processes.child_env;
    # the TF32 rows come from a child started with it on (mlx_worker.py).
    os.environ[TF32_ENV] = "0"
    if cfg.use_torch:  # a switch PyTorch's side cannot build: refuse before anything runs
        check_mirrored(cfg.model)
    started = time.perf_counter()
    cpu_at_start = cpu_seconds()
    device = mlx_device()
    report = Report(config={"preset": cfg.preset, "preset_note": cfg.preset_note, "model": asdict(cfg.model),
                            "batch_size": cfg.train.batch_size, "grad_accum": cfg.train.grad_accum,
                            "tokens_per_iter": cfg.tokens_per_iter, "warmup": cfg.warmup, "iters": cfg.iters,
                            "min_seconds": cfg.min_seconds, "gen_tokens": cfg.gen_tokens, "modes": cfg.modes,
                            "dtype": cfg.dtype, "mlx_device": device, "mlx_tf32": False,
                            "torch_threads": cfg.threads if cfg.use_torch else None, "seed": cfg.seed,
                            "quick": cfg.quick, "command": cfg.command},
                    environment=environment())
    if cfg.dtype_warning:
        progress(f"warning: {cfg.dtype_warning}")
        report.notes.append(cfg.dtype_warning)
    net = mlx_model(cfg)
    n_params = net.num_params()
    report.config.update(params=n_params, params_total=net.num_params(non_embedding=False),
                         flops_per_token=flops_per_token(cfg.model, n_params))
    if not cfg.use_torch:
        report.notes.append(TORCH_MISSING if not torch_available() else "--no-torch: ran MLX only.")
    else:
        report.notes.append(f"PyTorch intra-op threads set to {cfg.threads} (the machine's {machine_cores()} "
                            "cores); PyTorch ran in its own process, without MLX or OpenBLAS loaded.")
    if cfg.dtype != "float32":
        report.notes.append(f"--dtype {cfg.dtype}: the parity check ran in float32 (it always does); the "
                            f"{cfg.dtype} rows measure speed only, their losses are shown side by side as a "
                            "sanity check. Weights and optimizer state are float32 in both frameworks.")

    with tempfile.TemporaryDirectory(prefix="mlxgpt-bench-") as tmp:
        scratch = Path(tmp)
        if cfg.use_torch:
            progress("parity: one batch through both frameworks in float32, TF32 off (logits, loss, every "
                     "gradient)")
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
            progress(f"training, {LABELS[mode]} ({cfg.dtype}): {cfg.warmup} warm-up, then >= {cfg.iters} timed "
                     f"steps and >= {cfg.min_seconds:g} s")
            results[mode] = bench_mlx(cfg, batches, mode)
        if cfg.dtype == "float32" and "mlx" in cfg.modes:
            results[TF32_MODES["mlx"]], tf32_peak = _mlx_tf32(cfg, device, scratch)
            peaks += [tf32_peak] if tf32_peak else []
        if cfg.gen_tokens:
            progress(f"MLX generation: {cfg.gen_tokens} greedy tokens, with and without the KV cache")
            report.generation = bench_mlx_generation(cfg, net)
        rss = {"mlx": peak_rss_mb()}

        if cfg.use_torch:
            mx.clear_cache()  # the PyTorch child may share the GPU: give MLX's cached buffers back
            worker = run_torch_worker(cfg, net, scratch)
            report.environment["torch"] = worker["environment"]
            peaks += worker.get("peaks", [])
            results.update({r["mode"]: TrainResult.from_dict(r) for r in worker["training"]})
            report.generation += [GenResult(g["framework"], g["kv_cache"], g["tokens"], g["seconds"], g["ids"])
                                  for g in worker["generation"]]
            rss["torch"] = worker["rss_peak_mb"]
            if worker["environment"].get("device_note"):
                report.notes.append(worker["environment"]["device_note"])

    report.matmul_peaks = peaks
    tf32_modes = set(TF32_MODES.values())
    for mode in [*cfg.modes, *[TF32_MODES[m] for m in cfg.modes if m in TF32_MODES]]:
        result = results.get(mode)
        if result is None:
            continue
        peak = roofline.peak_gflops(peaks, device_class(result.device),
                                    roofline.TF32 if mode in tf32_modes else result.dtype)
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
    others = other_processes_cores(cpu_at_start)
    if others is not None:
        report.environment["other_processes_cores"] = others
        if others > 0.1:
            report.notes.append(f"other processes kept {others:.2f} of the {machine_cores()} cores busy on average "
                                "while this ran: the timings are contaminated; re-run on a quiet machine")
    return report


def tf32_skip_reason(device: str) -> str | None:
    """Why MLX's TF32 row is not measured on this device, or None (CUDA: it is)."""
    if device == "cuda":
        return None
    if device == "metal":
        return ("not measured on Metal (MLX uses TF32 there only on M5-class GPUs); the float32 rows ran with "
                f"{TF32_ENV}=0")
    return "no TF32 on a CPU"


def _mlx_tf32(cfg: BenchConfig, device: str, scratch: Path) -> tuple[TrainResult, dict | None]:
    """The "MLX compiled, TF32 matmuls" row (and the TF32 matmul peak): on a CUDA GPU, from a child
    started with MLX_ENABLE_TF32=1; elsewhere a skipped row that says why."""
    mode = TF32_MODES["mlx"]
    reason = tf32_skip_reason(device)
    if reason:
        return TrainResult(mode, device, ok=False, skipped=reason, dtype=cfg.dtype), None
    progress(f"training, {LABELS[mode]}: a process of its own with {TF32_ENV}=1")
    mx.clear_cache()
    child = run_mlx_worker(cfg, mode, scratch, tf32=True, matmul=True)
    if "training" not in child:
        return TrainResult(mode, device, ok=False, error=child.get("error", "no result"), dtype=cfg.dtype), None
    return TrainResult.from_dict(child["training"]), child.get("peak")


# ---------------------------------------------------------------- comparisons


def _compare_loss_curves(cfg: BenchConfig, report: Report) -> None:
    """Without dropout, the same weights and batches must give the same losses (float32; over the
    steps both sides ran, which the duration-based timing makes differ). In bfloat16 they differ by
    rounding: the first and last common losses side by side, a sanity check only."""
    by_mode = {r.mode: r for r in report.training if r.ok}
    if cfg.model.dropout > 0:
        report.loss_curve = f"dropout {cfg.model.dropout}: losses differ by design (each framework draws its own masks)"
        return
    pairs = [(a, b) for a in ("mlx", "mlx-plain", "mlx-uncompiled") for b in ("torch", "torch-compile")
             if a in by_mode and b in by_mode]
    if not pairs:
        return
    steps = min(len(by_mode[m].losses) for pair in pairs for m in pair)
    curves = {m: np.array(by_mode[m].losses[:steps]) for pair in pairs for m in pair}
    worst = max(float(np.max(np.abs(curves[a] - curves[b]))) for a, b in pairs)
    if cfg.dtype == "float32":
        report.loss_curve = f"loss curves over {steps} steps agree to {worst:.1e} (max |MLX - PyTorch|)"
        return
    a, b = pairs[0]
    report.loss_curve = (f"{cfg.dtype} losses (a sanity check, not a parity check: rounding differs), step 1 and "
                         f"step {steps}: {LABELS[a]} {curves[a][0]:.4f} -> {curves[a][-1]:.4f}, {LABELS[b]} "
                         f"{curves[b][0]:.4f} -> {curves[b][-1]:.4f}; max |MLX - PyTorch| over {steps} steps "
                         f"{worst:.1e}")


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


def _ratio(mlx_value: float | None, torch_value: float | None) -> float | None:
    if not mlx_value or not torch_value:
        return None
    return mlx_value / torch_value


def _ratios(report: Report) -> None:
    """MLX / PyTorch, written so that above 1 always means MLX is better."""
    train = {r.mode: r for r in report.training if r.ok}
    rate = lambda m: train[m].tokens_per_s if m in train else None
    devices = {r.mode.split("-")[0]: r.device for r in report.training if r.ok}
    apart = ""  # PyTorch not on MLX's device (it lacked it, or --torch-device): every ratio says so
    if "mlx" in devices and "torch" in devices and device_class(devices["mlx"]) != device_class(devices["torch"]):
        apart = f" (different devices: MLX {devices['mlx']}, PyTorch {devices['torch']})"
    best = lambda modes: max((rate(m) for m in modes if rate(m)), default=None)
    rows = [("training tokens/s, best MLX / best PyTorch", best(["mlx", "mlx-plain", "mlx-uncompiled"]),
             best(["torch", "torch-compile"])),
            ("training tokens/s, MLX compiled / MLX --plain (what mlxgpt/fast buys)", rate("mlx"), rate("mlx-plain")),
            ("training tokens/s, MLX compiled / PyTorch eager", rate("mlx"), rate("torch")),
            ("training tokens/s, MLX compiled / torch.compile", rate("mlx"), rate("torch-compile")),
            ("training tokens/s, MLX compiled / PyTorch eager, both with TF32 matmuls", rate("mlx-tf32"),
             rate("torch-tf32")),
            ("training tokens/s, MLX compiled with TF32 / without (what TF32 buys MLX)", rate("mlx-tf32"),
             rate("mlx"))]
    gen = {(g.framework, g.cache): g.tokens_per_s for g in report.generation}
    in_fp32 = "" if report.config.get("dtype", "float32") == "float32" else " (float32)"  # generation always is
    rows += [(f"generation tokens/s, KV cache{in_fp32}", gen.get(("mlx", True)), gen.get(("torch", True))),
             (f"generation tokens/s, no cache (nanoGPT sample.py){in_fp32}", gen.get(("mlx", False)),
              gen.get(("torch", False)))]
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
    rows.append(("matmul fp32 GFLOP/s (TF32 off)", peaks.get(("mlx", "float32")), peaks.get(("torch", "float32"))))
    rows.append(("matmul fp32 GFLOP/s with TF32", peaks.get(("mlx", roofline.TF32)),
                 peaks.get(("torch", roofline.TF32))))
    same_framework = ("MLX compiled / MLX --plain", "what TF32 buys MLX")
    for what, a, b in rows:
        value = _ratio(a, b)
        if value is not None:
            if apart and not any(k in what for k in same_framework):
                what += apart
            report.ratios.append({"what": what, "ratio": value})
