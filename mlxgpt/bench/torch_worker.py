"""PyTorch's half of the benchmark, in a process of its own that never loads MLX.

Why a separate process: mlxgpt loads OpenBLAS with RTLD_GLOBAL so that MLX's
matmuls use it (fast/blas.py). In that same process PyTorch's own BLAS calls then
resolve to OpenBLAS as well, not to the MKL it was built with: a 2048^2 torch
matmul followed `openblas_set_num_threads`, and OpenBLAS's threads fought
torch's OpenMP threads, turning a steady 40 ms baby step into 57-450 ms. So the
benchmark starts this worker with MLXGPT_BLAS=reference (mlxgpt loads no BLAS)
and PyTorch runs exactly as it would in nanoGPT.

    python -m mlxgpt.bench.torch_worker SPEC.json OUT.json

SPEC holds the model and training arguments, the step counts and minimum
seconds, the dtype, the seed, MLX's device (PyTorch runs on the matching one:
common.matching_torch_device) and the thread request, and the path of the MLX model's initial weights
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
    from mlxgpt.bench.common import (LABELS, TF32_MODES, GenResult, TrainResult, draw_batches, peak_rss_mb,
                                     progress, short_error, time_steps)
    from mlxgpt.bench.torch_ref import (GPT, Trainer, describe_build, generate_tokens, load_mlx_weights,
                                        matching_device, set_tf32, synchronize)
    from mlxgpt.config import ModelArgs, TrainArgs

    torch.set_num_threads(spec["threads"])
    set_tf32(False)  # true float32, as MLX's side (MLX_ENABLE_TF32=0); only the TF32 row turns it on
    # the device matching MLX's (CUDA for MLX on CUDA, MPS for Metal), unless --torch-device chose one
    device, note = matching_device(spec.get("mlx_device"), spec["device"])
    dtype_name = spec.get("dtype", "float32")
    min_seconds = spec.get("min_seconds", 0.0)
    args, train = ModelArgs.from_dict(spec["model"]), TrainArgs.from_dict(spec["train"])
    with np.load(spec["weights"], allow_pickle=False) as archive:
        weights = {name: archive[name] for name in archive.files}
    out: dict = {"environment": {**describe_build(), "device": device, "device_note": note},
                 "training": [], "generation": []}
    if note:
        progress(f"note: {note}")

    if spec["matmul"]:
        progress("PyTorch matmul peaks (fp32, bf16, fp16)")
        out["peaks"] = [p.to_dict() for p in roofline.measure(["torch"], gpu=False, torch_device=device,
                                                                quick=spec["quick"])]
        if device == "cuda" and spec.get("tf32_row"):
            progress("PyTorch matmul peak, float32 with TF32")
            set_tf32(True)
            try:
                peak = roofline.torch_peak("float32", 8192, 1.0 if spec["quick"] else 3.0, device)
            finally:
                set_tf32(False)
            peak.dtype = roofline.TF32
            out["peaks"].append(peak.to_dict())

    xs_np, ys_np = draw_batches(args.vocab_size, train.batch_size, args.block_size, spec["seed"],
                                spec["warmup"] + spec["iters"])
    xs = [torch.from_numpy(b[None]).long().to(device) for b in xs_np]  # (accum=1, B, T)
    ys = [torch.from_numpy(b[None]).long().to(device) for b in ys_np]
    modes = list(spec["modes"])
    if spec.get("tf32_row"):
        modes.append(TF32_MODES["torch"])
    for mode in modes:
        compiled = mode == "torch-compile"
        tf32 = mode == TF32_MODES["torch"]
        result = TrainResult(mode, device, f"{torch.get_num_threads()} threads",
                             tokens_per_iter=train.batch_size * train.grad_accum * args.block_size, dtype=dtype_name,
                             device_note=note)
        if tf32 and device != "cuda":
            result.ok, result.skipped = False, (f"TF32 is a CUDA GPU's; PyTorch ran on {device}" if device != "cpu"
                                                else "no TF32 on a CPU")
            out["training"].append(result.to_dict())
            continue
        if tf32:
            result.parallelism = "TF32 matmuls, " + result.parallelism
        progress(f"training, {LABELS[mode]} ({dtype_name}): {spec['warmup']} warm-up, then >= {spec['iters']} "
                 f"timed steps and >= {min_seconds:g} s")
        model = GPT(args)
        load_mlx_weights(model, weights)  # the MLX model's initial weights, exactly
        model.to(device).train()
        forward = model
        if compiled:
            import torch._dynamo

            torch._dynamo.reset()
            forward = torch.compile(model)
        trainer = Trainer(model, train, torch.device(device).type, forward, dtype=getattr(torch, dtype_name))
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()

        def one_step(i: int) -> float:
            loss, _ = trainer.step(xs[i % len(xs)], ys[i % len(ys)])  # the batches again, in order, if it runs on
            synchronize(device)
            return loss.item()

        set_tf32(tf32)
        try:
            time_steps(one_step, spec["warmup"], spec["iters"], min_seconds, result)
        except Exception as exc:  # torch.compile needs a working C++ compiler on CPU (Triton on GPU)
            result.ok, result.error = False, short_error(exc)
            progress(f"{LABELS[mode]} failed: {result.error}")
        finally:
            set_tf32(False)
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
