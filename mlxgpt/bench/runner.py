"""The benchmark itself: MLX and PyTorch on the same model, weights and batches.

Phases, in order: parity (a failure stops the benchmark, since the numbers would
compare two different computations); matmul peaks (roofline.py), the
denominators of MFU; training (MLX compiled, MLX uncompiled, PyTorch eager,
PyTorch torch.compile; warm-up steps, then timed steps); generation with and
without the KV cache; cold start. MLX runs in this process (mlx_timing.py), which
never imports torch; everything PyTorch runs in children (processes.py). Then the
comparisons: loss curves, generated tokens, and the MLX/PyTorch ratios.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from mlxgpt.bench import roofline
from mlxgpt.bench.common import LABELS, GenResult, TrainResult, draw_batches, machine_cores, peak_rss_mb, progress
from mlxgpt.bench.environment import cpu_seconds, environment, other_processes_cores
from mlxgpt.bench.mlx_timing import bench_mlx, bench_mlx_generation, mlx_model
from mlxgpt.bench.processes import cold_start, run_parity, run_torch_worker
from mlxgpt.bench.report import Report
from mlxgpt.bench.settings import BenchConfig, torch_available
from mlxgpt.errors import MlxgptError
from mlxgpt.fast.device import on_gpu
from mlxgpt.model import flops_per_token

TORCH_MISSING = ("PyTorch is not installed, so only MLX was measured. To compare: "
                 "pip install -e '.[bench]'  (or pip install -r requirements-bench.txt)")


def run_bench(cfg: BenchConfig) -> Report:
    started = time.perf_counter()
    cpu_at_start = cpu_seconds()
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
            results[mode] = bench_mlx(cfg, batches, mode)
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
    others = other_processes_cores(cpu_at_start)
    if others is not None:
        report.environment["other_processes_cores"] = others
        if others > 0.1:
            report.notes.append(f"other processes kept {others:.2f} of the {machine_cores()} cores busy on average "
                                "while this ran: the timings are contaminated; re-run on a quiet machine")
    return report


# ---------------------------------------------------------------- comparisons


def _compare_loss_curves(cfg: BenchConfig, report: Report) -> None:
    """Without dropout, the same weights and batches must give the same losses."""
    by_mode = {r.mode: r for r in report.training if r.ok}
    if cfg.model.dropout > 0:
        report.loss_curve = f"dropout {cfg.model.dropout}: losses differ by design (each framework draws its own masks)"
        return
    pairs = [(a, b) for a in ("mlx", "mlx-plain", "mlx-uncompiled") for b in ("torch", "torch-compile")
             if a in by_mode and b in by_mode]
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


def _ratio(mlx_value: float | None, torch_value: float | None) -> float | None:
    if not mlx_value or not torch_value:
        return None
    return mlx_value / torch_value


def _ratios(report: Report) -> None:
    """MLX / PyTorch, written so that above 1 always means MLX is better."""
    train = {r.mode: r for r in report.training if r.ok}
    rate = lambda m: train[m].tokens_per_s if m in train else None
    best = lambda modes: max((rate(m) for m in modes if rate(m)), default=None)
    rows = [("training tokens/s, best MLX / best PyTorch", best(["mlx", "mlx-plain", "mlx-uncompiled"]),
             best(["torch", "torch-compile"])),
            ("training tokens/s, MLX compiled / MLX --plain (what mlxgpt/fast buys)", rate("mlx"), rate("mlx-plain")),
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
