"""Cold start: one framework, one fresh process, one training step.

The benchmark starts `python -m mlxgpt.bench.coldstart '<json>'` once per mode
and takes the time from just before it started the process to the end of the
first training step, which this child reports (wall clock, `time.time()`, so
parent and child share it). Everything a user waits for is inside: Python,
imports, building the model and optimizer, MLX's compile and kernel JIT or
torch.compile's tracing and code generation, and the step itself.

Only the standard library and numpy are imported at module level, so a PyTorch child
never loads MLX and an MLX child never loads torch (the parent also sets
MLXGPT_BLAS=reference for PyTorch children, so not even OpenBLAS is loaded).
The last line on stdout is one JSON object; it names the device the step ran on
(PyTorch's: the one matching MLX's, common.matching_torch_device) and the dtype.
"""

from __future__ import annotations

import json
import sys
import time

from mlxgpt.bench.common import current_rss_mb, peak_rss_mb


def run_mlx(spec: dict) -> dict:
    import mlxgpt  # noqa: F401  (fast BLAS before mlx.core)
    import mlx.core as mx
    import numpy as np

    from mlxgpt.bench.settings import mlx_device
    from mlxgpt.fast.device import configure_device
    from mlxgpt.config import ModelArgs, TrainArgs
    from mlxgpt.model import GPT
    from mlxgpt.fast.streams import make_train_step
    from mlxgpt import training

    imported = time.time()
    plain = spec["mode"] == "mlx-plain"  # train.py --plain: the textbook step, no device set-up
    settings = None if plain else configure_device(spec["cpu_streams"])  # as training does
    if spec["mode"] == "mlx-uncompiled":
        mx.disable_compile()
    args, train = ModelArgs.from_dict(spec["model"]), TrainArgs.from_dict(spec["train"])
    mx.random.seed(spec["seed"])
    model = GPT(args)
    optimizer = training.build_optimizer(train)
    dtype = getattr(mx, spec.get("dtype", "float32"))
    if plain:
        step, state = training.make_train_step(model, optimizer, train.grad_clip, dtype=dtype)
    else:
        step, state = make_train_step(model, optimizer, train.grad_clip, settings.streams, dtype=dtype)
    rng = np.random.default_rng(spec["seed"])
    shape = (1, train.batch_size, args.block_size)
    x = mx.array(rng.integers(0, args.vocab_size, shape), dtype=mx.int32)
    y = mx.array(rng.integers(0, args.vocab_size, shape), dtype=mx.int32)
    mx.eval(model.parameters())
    rss_base = current_rss_mb()
    started = time.time()
    loss, norm = step(x, y)
    mx.eval(state, loss, norm)
    ended = time.time()
    return {"t_imported": imported, "t_end": ended, "first_step_s": ended - started, "loss": loss.item(),
            "rss_base_mb": rss_base, "rss_peak_mb": peak_rss_mb(), "device_peak_mb": mx.get_peak_memory() / 2**20,
            "device": mlx_device(), "device_note": None, "dtype": spec.get("dtype", "float32")}


def run_torch(spec: dict) -> dict:
    import torch

    from mlxgpt.bench.torch_ref import GPT, Trainer, matching_device, set_tf32, synchronize
    from mlxgpt.config import ModelArgs, TrainArgs

    imported = time.time()
    torch.set_num_threads(spec["threads"])
    set_tf32(False)  # true float32, as MLX's side (MLX_ENABLE_TF32=0)
    # the device matching MLX's (CUDA for MLX on CUDA, MPS for Metal), unless one was asked for
    device, note = matching_device(spec.get("mlx_device"), spec.get("torch_device"))
    identity = {"device": device, "device_note": note, "dtype": spec.get("dtype", "float32")}
    args, train = ModelArgs.from_dict(spec["model"]), TrainArgs.from_dict(spec["train"])
    torch.manual_seed(spec["seed"])
    model = GPT(args).to(device)
    model.train()
    forward = torch.compile(model) if spec["mode"] == "torch-compile" else model
    trainer = Trainer(model, train, torch.device(device).type, forward, dtype=getattr(torch, identity["dtype"]))
    generator = torch.Generator().manual_seed(spec["seed"])
    shape = (1, train.batch_size, args.block_size)
    x = torch.randint(0, args.vocab_size, shape, generator=generator).to(device)
    y = torch.randint(0, args.vocab_size, shape, generator=generator).to(device)
    rss_base = current_rss_mb()
    started = time.time()
    loss, _ = trainer.step(x, y)
    synchronize(device)
    ended = time.time()
    device_peak = torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else None
    return {"t_imported": imported, "t_end": ended, "first_step_s": ended - started, "loss": loss.item(),
            "rss_base_mb": rss_base, "rss_peak_mb": peak_rss_mb(), "device_peak_mb": device_peak, **identity}


def main(argv: list[str]) -> int:
    spec = json.loads(argv[0])
    try:
        result = run_mlx(spec) if spec["mode"].startswith("mlx") else run_torch(spec)
    except Exception as exc:  # reported to the parent, which shows it in the table
        result = {"error": f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"}
    sys.stdout.write("\n" + json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
