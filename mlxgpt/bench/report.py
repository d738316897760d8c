"""The benchmark's results: the Report that runner.py fills, its JSON file (--json),
and its Rich tables: what ran where, training, generation, cold start, matmul
peaks, and the MLX/PyTorch ratios."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Protocol

from rich.console import Console
from rich.table import Table

from mlxgpt.bench.common import LABELS, GenResult, TrainResult
from mlxgpt.bench.roofline import TF32
from mlxgpt.errors import MlxgptError
from mlxgpt.files import write_atomic


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


class HasDict(Protocol):
    """A Report, or --profile's ProfileReport."""

    def to_dict(self) -> dict: ...


def write_json(report: HasDict, path: str) -> None:
    """--json FILE: every number, written atomically (a reader never sees half a file)."""
    target = Path(path)
    if not target.parent.is_dir():
        raise MlxgptError(f"--json {path}: the directory {target.parent} does not exist")
    write_atomic(target, json.dumps(report.to_dict(), indent=2) + "\n")


def _ms(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return f"{seconds * 1000:,.1f} ms" if seconds < 10 else f"{seconds:,.1f} s"


def _s(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds:,.1f} s"


def _mb(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f} MiB"


def _precision(cfg: dict) -> str:
    dtype = cfg.get("dtype", "float32")
    if dtype == "float32":
        return "float32 (TF32 off)"
    return f"{dtype} compute, float32 weights and optimizer state"


def render(report: Report, console: Console) -> None:
    cfg, env = report.config, report.environment
    model = cfg["model"]
    console.print(f"\n[bold]mlxgpt bench[/] - preset [bold]{cfg['preset']}[/] ({cfg['preset_note']}): "
                  f"{model['n_layer']} layers, {model['n_head']} heads, {model['n_embd']} embd, block "
                  f"{model['block_size']}, batch {cfg['batch_size']}, vocab {model['vocab_size']}, dropout "
                  f"{model['dropout']}, {_precision(cfg)}; {cfg['params'] / 1e6:.2f}M parameters, "
                  f"{cfg['flops_per_token'] / 1e6:.1f} MFLOP/token (6N + 12LTC)")
    mlx, torch = env["mlx"], env.get("torch")
    mem = f", {env['memory_gb']:.0f} GiB" if env.get("memory_gb") else ""
    load, others = env.get("load_average"), env.get("other_processes_cores")
    console.print(f"machine: {env['machine']}, {env['cores']} cores{mem}, Python {env['python']}"
                  + (f"; 1-minute load average {load[0]:.2f} at start" if load else "")
                  + (f"; other processes used {others:.2f} cores on average while it ran" if others is not None
                     else ""))
    console.print(f"MLX {mlx['version']} on {mlx['device']}, BLAS {mlx['blas']}"
                  + (f" [{mlx['blas_details']}]" if mlx.get("blas_details") else ""))
    if torch:
        gpu = f" ({torch['gpu']})" if torch.get("gpu") else ""
        console.print(f"PyTorch {torch['version']} on {torch['device']}{gpu}, {torch['threads']} threads, BLAS "
                      f"{torch['blas']}, CPU capability {torch['cpu_capability']}")
        if torch.get("device_note"):
            console.print(f"[yellow]{torch['device_note']}[/]")
    if report.parity:
        console.print(("[green]" if report.parity["ok"] else "[red]") + report.parity["summary"]
                      + " (float32, TF32 off" + (f"; PyTorch on {report.parity['torch_device']}"
                                                 if report.parity.get("torch_device") else "") + ")[/]")

    if report.training:
        dtype = cfg.get("dtype", "float32")
        t = Table(title=f"Training, {dtype} ({cfg['warmup']} warm-up steps, then timed steps until at least "
                        f"{cfg['iters']} steps and {cfg.get('min_seconds', 0):g} s; {cfg['tokens_per_iter']:,} "
                        "tokens/step)", title_justify="left")
        for name in ("mode", "device", "steps", "ms/iter median", "mean", "spread min-max", "tokens/s", "MFU",
                     "× PyTorch eager", "first step", "allocator peak"):
            t.add_column(name, justify="left" if name in ("mode", "device") else "right")
        torch_rows = {r.mode: r for r in report.training if r.mode.startswith("torch") and r.ok}
        failures: list[str] = []
        for r in report.training:
            device = f"{r.device} ({r.parallelism})" if r.parallelism else r.device
            if r.skipped:
                t.add_row(LABELS[r.mode], f"{r.device}: {r.skipped}", "skipped", *[""] * 8)
                continue
            if not r.ok:
                t.add_row(LABELS[r.mode], device, "", "[red]failed[/]", *[""] * 7)
                failures.append(f"{LABELS[r.mode]} failed: {r.error}")
                continue
            if r.device_note:
                device += " [yellow](not MLX's device)[/]"
            eager = torch_rows.get("torch-tf32" if r.mode.endswith("-tf32") else "torch")
            ratio = f"{r.tokens_per_s / eager.tokens_per_s:.2f}×" if eager else "-"
            t.add_row(LABELS[r.mode], device, f"{len(r.step_s):,}", _ms(r.median_s), _ms(r.mean_s),
                      f"{_ms(min(r.step_s))} - {_ms(max(r.step_s))}", f"{r.tokens_per_s:,.0f}",
                      f"{100 * r.mfu:.1f}%" if r.mfu is not None else "-", ratio, _ms(r.first_step_s),
                      _mb(r.peak_memory_mb))
        console.print(t)
        for line in failures:
            console.print(f"[red]{line}[/]")
        console.print("first step: the first of the warm-up steps, compilation included. allocator peak: MLX's (and "
                      "torch's on CUDA) own counter. MFU divides by the matmul peak of the row's precision (TF32 "
                      "rows: the TF32 peak). × PyTorch eager: against PyTorch eager at the same precision.")
        if report.memory:
            console.print("peak RSS of each framework's benchmark process (all its modes): " + ", ".join(
                f"{'MLX' if k.startswith('mlx') else 'PyTorch'} {_mb(v)}" for k, v in report.memory.items()))
        if report.loss_curve:
            console.print(report.loss_curve)

    if report.generation:
        t = Table(title=f"Generation ({cfg['gen_tokens']} new greedy tokens, batch 1, float32)", title_justify="left")
        for name in ("framework", "KV cache", "tokens/s", "ms/token", "MLX / PyTorch"):
            t.add_column(name, justify="left" if name in ("framework", "KV cache") else "right")
        by = {(g.framework, g.cache): g for g in report.generation}
        for g in report.generation:
            other = by.get(("torch", g.cache))
            ratio = f"{g.tokens_per_s / other.tokens_per_s:.2f}×" if g.framework == "mlx" and other else ""
            t.add_row("MLX" if g.framework == "mlx" else "PyTorch",
                      "yes" if g.cache else "no (nanoGPT sample.py)", f"{g.tokens_per_s:,.0f}",
                      f"{1000 * g.seconds / g.tokens:.2f}", ratio)
        console.print(t)
        if report.generation_agreement:
            console.print(report.generation_agreement)

    if report.cold_start:
        t = Table(title=f"Cold start, {cfg.get('dtype', 'float32')} (fresh process: start -> end of first training "
                        "step)", title_justify="left")
        for name in ("mode", "device", "JIT cache", "cold start", "python + imports", "first step",
                     "RSS after build", "peak RSS"):
            t.add_column(name, justify="left" if name in ("mode", "device", "JIT cache") else "right")
        failures = []
        for c in report.cold_start:
            cache = "empty" if c["empty_jit_cache"] else "warm"
            device = c.get("device", "?") + (" [yellow](not MLX's device)[/]" if c.get("device_note") else "")
            if "error" in c:
                t.add_row(c["label"], device, cache, "[red]failed[/]", "", "", "", "")
                failures.append(f"cold start of {c['label']} ({cache} JIT cache) failed: {c['error']}")
            else:
                t.add_row(c["label"], device, cache, _s(c["cold_start_s"]), _s(c["startup_and_imports_s"]),
                          _s(c["first_step_s"]), _mb(c["rss_base_mb"]), _mb(c["rss_peak_mb"]))
        console.print(t)
        for line in failures:
            console.print(f"[red]{line}[/]")
        for note in sorted({c["device_note"] for c in report.cold_start if c.get("device_note")}):
            console.print(f"[yellow]cold start: {note}[/]")

    if report.matmul_peaks:
        t = Table(title="Matmul peak (n×n @ n×n, best of several)", title_justify="left")
        dtypes = ["float32", "bfloat16", "float16"]
        if any(p["dtype"] == TF32 for p in report.matmul_peaks):
            dtypes.insert(1, TF32)
        for name in ("framework", "device", *[("float32, TF32 off" if d == "float32" else d) for d in dtypes]):
            t.add_column(name, justify="left" if name in ("framework", "device") else "right")
        for framework in ("mlx", "torch"):
            rows = {p["dtype"]: p for p in report.matmul_peaks if p["framework"] == framework}
            if "float32" not in rows:
                continue
            cells = ["-" if p is None else f"[red]{p['error'][:40]}[/]" if p["error"]
                     else f"{p['gflops']:,.1f} GFLOP/s (n={p['n']})" for p in (rows.get(d) for d in dtypes)]
            t.add_row("MLX" if framework == "mlx" else "PyTorch", rows["float32"]["device"], *cells)
        console.print(t)
        console.print("MFU = FLOPs/token × tokens/s ÷ the best matmul measured on that device (either framework) "
                      "in the row's precision.")

    if report.ratios:
        t = Table(title=f"MLX vs PyTorch, {cfg.get('dtype', 'float32')} (above 1 = MLX better)", title_justify="left")
        t.add_column("what")
        t.add_column("ratio", justify="right")
        for r in report.ratios:
            t.add_row(r["what"], f"{r['ratio']:.2f}×")
        console.print(t)
    for note in report.notes:
        console.print(f"note: {note}")
    console.print(f"benchmark took {report.wall_s:.0f} s")
