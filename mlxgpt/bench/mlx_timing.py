"""MLX's half of the benchmark, timed in the benchmark's own process: training
steps (compiled and not) and generation with and without the KV cache."""

from __future__ import annotations

import time

import mlx.core as mx
import numpy as np

from mlxgpt.bench.common import GenResult, TrainResult, time_steps
from mlxgpt.bench.settings import BenchConfig, mlx_device
from mlxgpt.fast.device import configure_device
from mlxgpt.fast.streams import make_train_step
from mlxgpt.generate import default_keep, generate_tokens
from mlxgpt.model import GPT
from mlxgpt import training
from mlxgpt.training import build_optimizer


def mlx_model(cfg: BenchConfig) -> GPT:
    """The benchmark's model; the same seed always gives the same initial weights."""
    mx.random.seed(cfg.seed)
    model = GPT(cfg.model)
    mx.eval(model.parameters())
    return model


def bench_mlx(cfg: BenchConfig, batches: tuple[np.ndarray, np.ndarray], mode: str) -> TrainResult:
    """Warm-up then timed training steps (common.time_steps: at least cfg.iters steps and
    cfg.min_seconds), set up as train.py sets them up, computing in cfg.dtype. "mlx-uncompiled"
    runs the very same step function op by op; "mlx-plain" is train.py --plain:
    training.make_train_step, the textbook step, without mlxgpt/fast (one stream, the BLAS's own
    threads). "mlx-tf32" is "mlx" in a process started with MLX_ENABLE_TF32=1 (mlx_worker.py)."""
    result = TrainResult(mode, mlx_device(), tokens_per_iter=cfg.tokens_per_iter, dtype=cfg.dtype)
    xs = [mx.array(b[None]) for b in batches[0]]  # (accum=1, B, T)
    ys = [mx.array(b[None]) for b in batches[1]]
    dtype = getattr(mx, cfg.dtype)
    plain = mode == "mlx-plain"
    # as training sets the device up: CPU streams, BLAS threads per stream, buffer cache
    settings = configure_device(1 if plain else cfg.cpu_streams)
    result.parallelism = "textbook step, 1 stream" if plain else settings.describe()
    if mode == "mlx-uncompiled":
        mx.disable_compile()
    if mode == "mlx-tf32":
        result.parallelism = "TF32 matmuls, " + result.parallelism
    try:
        model = mlx_model(cfg)
        model.train()
        optimizer = build_optimizer(cfg.train)
        if plain:
            step, state = training.make_train_step(model, optimizer, cfg.train.grad_clip, dtype=dtype)
        else:
            step, state = make_train_step(model, optimizer, cfg.train.grad_clip, settings.streams, dtype=dtype)
        mx.reset_peak_memory()

        def one_step(i: int) -> float:
            loss, norm = step(xs[i % len(xs)], ys[i % len(ys)])  # the batches again, in order, if it runs on
            mx.eval(state, loss, norm)  # one eval per step, as in training.py
            return loss.item()

        time_steps(one_step, cfg.warmup, cfg.iters, cfg.min_seconds, result)
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
