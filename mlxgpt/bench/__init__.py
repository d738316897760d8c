"""MLX vs PyTorch on the same model: `mlxgpt bench` / `python -m mlxgpt.bench`.

    python -m mlxgpt.bench --quick                      # baby preset, under 2 minutes on 2 CPU cores
    python -m mlxgpt.bench --preset shakespeare-char --json bench.json

runner.py measures MLX in its own process and runs the others; torch_worker.py
is PyTorch's half, in a child process with no MLX or OpenBLAS loaded; torch_ref.py
is the PyTorch mirror of the model (it and the tests are all that import torch);
parity.py checks that both compute the same thing; roofline.py measures the
matmul peak that MFU divides by; coldstart.py is the fresh process of a
cold-start measurement; common.py holds what both halves share; report.py prints.

This module holds only the command line (cli.py registers it), so importing it
loads neither MLX nor torch.
"""

from __future__ import annotations

import argparse

from mlxgpt.config import PRESETS

MODES = ("mlx", "mlx-uncompiled", "torch", "torch-compile")


def add_bench_arguments(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Train the same GPT in MLX and in PyTorch (same initial weights, same batches, parity-checked) and "
        "measure ms/iter, tokens/s, MFU against the measured matmul peak, peak memory, cold start and "
        "generation speed with and without the KV cache. Without PyTorch it measures MLX only.")
    g = p.add_argument_group("what to run")
    g.add_argument("--preset", choices=sorted(PRESETS),
                   help="model and batch to benchmark (default: shakespeare-char on a GPU, baby on a CPU)")
    g.add_argument("--quick", action="store_true",
                   help="fewer steps, short matmul probe, no empty-cache cold start (baby: < 2 min on 2 cores)")
    g.add_argument("--iters", type=int, help="timed training steps per mode (default: baby 30, "
                                             "shakespeare-char 5; --quick 10 and 2)")
    g.add_argument("--warmup", type=int, help="untimed steps before timing (default: baby 5, shakespeare-char 2; "
                                              "--quick 3 and 1)")
    g.add_argument("--modes", help=f"comma-separated training modes to run (default all: {','.join(MODES)})")
    g.add_argument("--gen-tokens", type=int, default=500, help="new tokens per generation run (0: skip generation)")
    g.add_argument("--no-cold-start", action="store_true", help="skip the fresh-process cold-start runs")
    g.add_argument("--cold-cache", action=argparse.BooleanOptionalAction, default=None,
                   help="also measure cold start with empty MLX/torch.compile JIT caches (default: yes, "
                        "no with --quick)")
    g.add_argument("--no-torch", action="store_true", help="measure MLX only, even if PyTorch is installed")
    g.add_argument("--torch-device", choices=["cpu", "cuda", "mps"], help="PyTorch's device (default: best available)")
    g.add_argument("--threads", type=int, help="PyTorch intra-op threads (default: the machine's cores)")
    g.add_argument("--cpu-streams", type=int, help="MLX on CPU: split each batch over this many concurrent streams "
                                                   "(default: as training does, one per core, at most 4)")
    g.add_argument("--seed", type=int, default=1337, help="seed of the initial weights and the batches")
    g.add_argument("--json", metavar="FILE", help="also write every number to this JSON file")
    g.add_argument("--profile", action="store_true",
                   help="instead of comparing frameworks: time the parts of one MLX training step (forward, "
                        "backward, streams, clip + AdamW) and count its graph's nodes (MLX only)")

    g = p.add_argument_group("model (override the preset; parity is checked without dropout)")
    from mlxgpt.cli import add_model_shape_arguments  # one definition of these flags

    add_model_shape_arguments(g)
    g.add_argument("--batch-size", type=int, help="sequences per step")
    g.add_argument("--vocab-size", type=int, help="vocabulary size (default 65, tiny Shakespeare's characters)")


def cmd_bench(args: argparse.Namespace) -> int:
    from rich.console import Console

    from mlxgpt.bench.report import render
    from mlxgpt.bench.runner import config_from_args, run_bench, write_json

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
