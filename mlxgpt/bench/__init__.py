"""MLX vs PyTorch on the same model: `mlxgpt bench` / `python -m mlxgpt.bench`.

    python -m mlxgpt.bench --quick                      # under 2 minutes on 2 CPU cores
    python -m mlxgpt.bench --quick --dtype bfloat16     # mixed precision (a GPU: MLX's CPU bf16 is ~30x slower)
    python -m mlxgpt.bench --preset shakespeare-char --json bench.json

settings.py turns the flags into a BenchConfig; runner.py runs the phases in
order and collects a Report; mlx_timing.py times MLX in this process;
processes.py starts the others: torch_worker.py is PyTorch's half, in a child
process with no MLX or OpenBLAS loaded, parity.py checks that both frameworks
compute the same thing (in float32, TF32 off), coldstart.py is the fresh process
of a cold-start measurement, mlx_worker.py times MLX with TF32 matmuls on a CUDA GPU.
torch_ref.py is the PyTorch mirror of the model (it and the tests are all that
import torch); roofline.py measures the matmul peak that MFU divides by;
environment.py describes the machine; common.py holds what both halves share,
among it time_steps, which times every training mode the same way (warm-up steps,
then timed steps until both --iters steps and --min-seconds have passed); report.py
holds the Report, prints it and writes it as JSON.

This module holds only the command line (cli.py registers it), so importing it
loads neither MLX nor torch.
"""

from __future__ import annotations

import argparse

from mlxgpt.bench.common import DTYPES, TRAIN_MODES
from mlxgpt.bench.settings import MIN_SECONDS, QUICK_MIN_SECONDS
from mlxgpt.config import TrainArgs
from mlxgpt.flags import (add_batch_size_argument, add_cpu_streams_argument, add_model_shape_arguments,
                          add_preset_argument, add_seed_argument)


def add_bench_arguments(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Train the same GPT in MLX and in PyTorch (same initial weights, same batches, parity-checked) and "
        "measure ms/iter, tokens/s, MFU against the measured matmul peak, peak memory, cold start and "
        "generation speed with and without the KV cache. Without PyTorch it measures MLX only.")
    g = p.add_argument_group("what to run")
    add_preset_argument(g, "model and batch to benchmark (default: shakespeare-char on a GPU, baby on a CPU)")
    g.add_argument("--quick", action="store_true",
                   help="fewer steps, short matmul probe, no empty-cache cold start (baby: < 2 min on 2 cores)")
    g.add_argument("--iters", type=int, help="at least this many timed training steps per mode (default: baby "
                                             "30, shakespeare-char 5; --quick 10 and 2)")
    g.add_argument("--min-seconds", type=float,
                   help=f"... and timed steps until they have taken at least this long, per mode (default "
                        f"{MIN_SECONDS:g}; --quick {QUICK_MIN_SECONDS:g}; 0: exactly --iters steps)")
    g.add_argument("--warmup", type=int, help="untimed steps before timing (default: baby 5, shakespeare-char 2; "
                                              "--quick 3 and 1)")
    g.add_argument("--dtype", choices=list(DTYPES), default="float32",
                   help="precision of the forward and backward passes, float32 weights and optimizer state either "
                        "way (mixed precision; PyTorch: torch.autocast). Parity is checked in float32 only "
                        "(default float32; bfloat16 on MLX's CPU backend is ~30x slower)")
    g.add_argument("--modes", help=f"comma-separated training modes to run (default all: {','.join(TRAIN_MODES)}); "
                                   "in float32 on a CUDA GPU, mlx and torch also get a TF32-matmul row")
    g.add_argument("--gen-tokens", type=int, default=500, help="new tokens per generation run (0: skip generation)")
    g.add_argument("--no-cold-start", action="store_true", help="skip the fresh-process cold-start runs")
    g.add_argument("--cold-cache", action=argparse.BooleanOptionalAction, default=None,
                   help="also measure cold start with empty MLX/torch.compile JIT caches (default: yes, "
                        "no with --quick)")
    g.add_argument("--no-torch", action="store_true", help="measure MLX only, even if PyTorch is installed")
    g.add_argument("--torch-device", choices=["cpu", "cuda", "mps"],
                   help="PyTorch's device (default: the one matching MLX's: cuda for MLX on a CUDA GPU, mps on "
                        "Metal, else cpu; a PyTorch without it runs on the CPU and every row says so)")
    g.add_argument("--threads", type=int, help="PyTorch intra-op threads (default: the machine's cores)")
    add_cpu_streams_argument(g)
    add_seed_argument(g, "seed of the initial weights and the batches", default=TrainArgs.seed)
    g.add_argument("--json", metavar="FILE", help="also write every number to this JSON file")
    g.add_argument("--profile", action="store_true",
                   help="instead of comparing frameworks: time the parts of one MLX training step (forward, "
                        "backward, streams, clip + AdamW) and count its graph's nodes (MLX only)")

    g = p.add_argument_group("model (override the preset; parity is checked without dropout)")
    add_model_shape_arguments(g)
    add_batch_size_argument(g, "sequences per step")
    g.add_argument("--vocab-size", type=int, default=65,
                   help="vocabulary size (the default: tiny Shakespeare's characters)")


def cmd_bench(args: argparse.Namespace) -> int:
    from rich.console import Console

    from mlxgpt.bench.report import render, write_json
    from mlxgpt.bench.runner import run_bench
    from mlxgpt.bench.settings import config_from_args

    config = config_from_args(args)
    console = Console()
    if not console.is_terminal:
        console.width = 160  # a log file or a pipe: wide enough that the tables keep one line per row
    if args.profile:
        from mlxgpt.bench.profile import profile_step, render_profile

        report = profile_step(config)
        render_profile(report, console)
    else:
        report = run_bench(config)
        render(report, console)
    if args.json:
        write_json(report, args.json)
        print(f"wrote {args.json}")
    return 0
