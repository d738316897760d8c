"""PyTorch's half of the benchmark, in a process of its own that never loads MLX.

Why a separate process: mlxgpt loads OpenBLAS with RTLD_GLOBAL so that MLX's
matmuls use it (fast/blas.py). In that same process PyTorch's own BLAS calls then
resolve to OpenBLAS as well, not to the MKL it was built with: a 2048^2 torch
matmul followed `openblas_set_num_threads`, and OpenBLAS's threads fought
torch's OpenMP threads, turning a steady 40 ms baby step into 57-450 ms. So the
benchmark starts this worker with MLXGPT_BLAS=reference (mlxgpt loads no BLAS)
and PyTorch runs exactly as it would in nanoGPT.

    python -m mlxgpt.bench.torch_worker SPEC.json OUT.json

SPEC holds the model and training arguments, the step counts, the seed, the
device and thread requests, and the path of the MLX model's initial weights
(an .npz of float32 arrays by MLX name, read with allow_pickle=False). OUT gets
the environment, matmul peaks, training results, generation results and this
process's peak RSS.
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np


def main(argv: list[str]) -> int:
    spec_path, out_path = argv
    with open(spec_path, encoding="utf-8") as f:
        spec = json.load(f)
    import torch

    from mlxgpt.bench import roofline
    from mlxgpt.bench.common import (LABELS, GenResult, TrainResult, draw_batches, peak_rss_mb, progress,
                                     short_error, time_steps)
    from mlxgpt.bench.torch_ref import (GPT, Trainer, best_device, describe_build, generate_tokens,
                                        load_mlx_weights, synchronize)
    from mlxgpt.config import ModelArgs, TrainArgs

    torch.set_num_threads(spec["threads"])
    device = spec["device"] or best_device()
    args, train = ModelArgs.from_dict(spec["model"]), TrainArgs.from_dict(spec["train"])
    with np.load(spec["weights"], allow_pickle=False) as archive:
        weights = {name: archive[name] for name in archive.files}
    out: dict = {"environment": {**describe_build(), "device": device}, "training": [], "generation": []}

    if spec["matmul"]:
        progress("PyTorch matmul peaks (fp32, bf16, fp16)")
        out["peaks"] = [p.to_dict() for p in roofline.measure(["torch"], gpu=False, torch_device=device,
                                                                quick=spec["quick"])]

    xs_np, ys_np = draw_batches(args.vocab_size, train.batch_size, args.block_size, spec["seed"],
                                spec["warmup"] + spec["iters"])
    xs = [torch.from_numpy(b[None]).long().to(device) for b in xs_np]  # (accum=1, B, T)
    ys = [torch.from_numpy(b[None]).long().to(device) for b in ys_np]
    for mode in spec["modes"]:
        progress(f"training, {LABELS[mode]}: {spec['warmup']} warm-up + {spec['iters']} timed steps")
        compiled = mode == "torch-compile"
        result = TrainResult(mode, device, f"{torch.get_num_threads()} threads",
                             tokens_per_iter=train.batch_size * train.grad_accum * args.block_size)
        model = GPT(args)
        load_mlx_weights(model, weights)  # the MLX model's initial weights, exactly
        model.to(device).train()
        forward = model
        if compiled:
            import torch._dynamo

            torch._dynamo.reset()
            forward = torch.compile(model)
        trainer = Trainer(model, train, torch.device(device).type, forward)
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()

        def one_step(i: int) -> float:
            loss, _ = trainer.step(xs[i], ys[i])
            synchronize(device)
            return loss.item()

        try:
            time_steps(one_step, spec["warmup"], spec["iters"], result)
        except Exception as exc:  # torch.compile needs a working C++ compiler on CPU (Triton on GPU)
            result.ok, result.error = False, short_error(exc)
            progress(f"{LABELS[mode]} failed: {result.error}")
        if device == "cuda" and result.ok:
            result.peak_memory_mb = torch.cuda.max_memory_allocated() / 2**20
        out["training"].append(result.to_dict())

    if spec["gen_tokens"]:
        progress(f"PyTorch generation: {spec['gen_tokens']} greedy tokens, with and without the KV cache")
        model = GPT(args)
        load_mlx_weights(model, weights)
        model.to(device).eval()
        for use_cache in (True, False):
            run = lambda count: list(generate_tokens(model, [0], count, use_cache=use_cache, keep=spec["keep"],
                                                     device=device))
            run(min(spec["gen_tokens"], args.block_size + 8))  # warm-up, window slide included
            start = time.perf_counter()
            ids = run(spec["gen_tokens"])
            result = GenResult("torch", use_cache, spec["gen_tokens"], time.perf_counter() - start, ids)
            out["generation"].append({**result.to_dict(), "ids": ids})
    out["rss_peak_mb"] = peak_rss_mb()
    with open(out_path, "w", encoding="utf-8") as f:
        json.dump(out, f)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
