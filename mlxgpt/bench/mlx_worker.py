"""MLX training timed in a process of its own: the benchmark's TF32 row.

MLX reads MLX_ENABLE_TF32 once, at its first float32 matmul, so one process cannot
time float32 matmuls both ways. The benchmark's own process runs with it off (true
float32, comparable with PyTorch's float32 and checked by the parity gate); on a
CUDA GPU it starts this worker with MLX_ENABLE_TF32=1 for the "MLX compiled, TF32
matmuls" row and the TF32 matmul peak.

    python -m mlxgpt.bench.mlx_worker SPEC.json OUT.json

SPEC holds the BenchConfig (settings.BenchConfig.to_dict), the mode and whether to
measure the matmul peak; OUT gets the TrainResult and the peak. Only the standard
library is imported at module level (importing it changes nothing).
"""

from __future__ import annotations

import json
import os
import sys


def main(argv: list[str]) -> int:
    spec_path, out_path = argv
    with open(spec_path, encoding="utf-8") as f:
        spec = json.load(f)
    import mlxgpt  # noqa: F401  (fast BLAS before mlx.core)

    from mlxgpt.bench import roofline
    from mlxgpt.bench.common import TF32_ENV, draw_batches, short_error
    from mlxgpt.bench.mlx_timing import bench_mlx
    from mlxgpt.bench.settings import BenchConfig, mlx_device
    from mlxgpt.fast.device import on_gpu

    cfg = BenchConfig.from_dict(spec["config"])
    out: dict = {"tf32_env": os.environ.get(TF32_ENV)}
    batches = draw_batches(cfg.model.vocab_size, cfg.train.batch_size, cfg.model.block_size, cfg.seed,
                           cfg.warmup + cfg.iters)
    try:
        out["training"] = bench_mlx(cfg, batches, spec["mode"]).to_dict()
    except Exception as exc:  # reported as a failed row
        out["error"] = short_error(exc)
    if spec.get("matmul"):
        peak = roofline.mlx_peak("float32", 8192 if on_gpu() else 2048, 1.0 if cfg.quick else 3.0)
        peak.dtype = roofline.TF32
        out["peak"] = peak.to_dict()
    out["device"] = mlx_device()
    with open(out_path, "w", encoding="utf-8") as f:
        json.dump(out, f)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
