"""Do the MLX model and its PyTorch mirror compute the same thing?

`check_parity` runs one batch through both (dropout off) and compares logits,
loss and every gradient; the parity tests and the benchmark's start-up both use
it, so a benchmark never compares two different computations. Tolerances are
relative to each tensor's largest magnitude: fp32 on two different BLAS
libraries agrees to ~1e-6 relative; a single wrong weight or a different
activation function shows up orders of magnitude above the tolerance.

True float32 only: on CUDA (and M5-class Metal) GPUs MLX multiplies float32 with
TF32 by default (10-bit mantissa inputs, ~1e-3 relative), which this tolerance
would flag. The benchmark's parity process therefore runs with MLX_ENABLE_TF32=0
and PyTorch's TF32 off (torch_ref.set_tf32), and tests/conftest.py sets the same
for the parity tests. The check is always float32, whatever the benchmark's --dtype.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# max |a - b| <= ATOL + RTOL * max |reference|, per tensor
RTOL = 2e-5
ATOL = 1e-9


@dataclass
class Difference:
    """How far one tensor of MLX is from the same tensor of PyTorch."""

    name: str
    max_abs: float  # max |mlx - torch|
    scale: float  # max |torch|
    tolerance: float

    @property
    def ok(self) -> bool:
        return bool(self.max_abs <= self.tolerance)  # False for NaN

    @property
    def excess(self) -> float:
        """max_abs / tolerance (> 1: failed). A NaN, and a tensor only one side has (tolerance 0:
        no gradient on one side, a different shape), rank above every finite excess."""
        if self.max_abs != self.max_abs:
            return np.inf
        if self.tolerance == 0:
            return np.inf if self.max_abs > 0 else 0.0
        return self.max_abs / self.tolerance

    @property
    def relative(self) -> float:
        return self.max_abs / self.scale if self.scale else self.max_abs


@dataclass
class ParityReport:
    differences: list[Difference] = field(default_factory=list)
    loss_mlx: float = float("nan")
    loss_torch: float = float("nan")

    @property
    def ok(self) -> bool:
        return bool(self.differences) and all(d.ok for d in self.differences)

    @property
    def worst(self) -> Difference:
        """The tensor furthest out of (or closest to the edge of) its tolerance."""
        return max(self.differences, key=Difference.excess.fget)

    @property
    def failures(self) -> list[Difference]:
        return [d for d in self.differences if not d.ok]

    def get(self, name: str) -> Difference:
        return next(d for d in self.differences if d.name == name)

    def summary(self) -> str:
        w = self.worst
        head = "parity ok" if self.ok else f"PARITY FAILED on {len(self.failures)} of {len(self.differences)} tensors"
        return (f"{head}: loss {self.loss_mlx:.6f} (MLX) vs {self.loss_torch:.6f} (PyTorch); worst: {w.name}, "
                f"max |MLX - PyTorch| {w.max_abs:.1e} = {w.relative:.1e} of its largest value (allowed {RTOL:.0e})")

    def to_dict(self) -> dict:
        return {"ok": self.ok, "loss_mlx": self.loss_mlx, "loss_torch": self.loss_torch, "summary": self.summary(),
                "worst": {"name": self.worst.name, "max_abs": self.worst.max_abs, "relative": self.worst.relative},
                "tensors_compared": len(self.differences)}


def compare(name: str, mlx_value, torch_value, rtol: float = RTOL, atol: float = ATOL) -> Difference:
    a, b = np.asarray(mlx_value, dtype=np.float64), np.asarray(torch_value, dtype=np.float64)
    if a.shape != b.shape:
        return Difference(f"{name} (shape {a.shape} vs {b.shape})", np.inf, 0.0, 0.0)
    scale = float(np.max(np.abs(b))) if b.size else 0.0
    max_abs = float(np.max(np.abs(a - b))) if a.size else 0.0
    return Difference(name, max_abs, scale, atol + rtol * scale)


def compare_trees(prefix: str, mlx_tree: dict[str, np.ndarray], torch_tree: dict[str, np.ndarray],
                  rtol: float = RTOL, atol: float = ATOL) -> list[Difference]:
    """Compare two {name: array} dicts (MLX names); a name only one side has is a failure."""
    out = []
    for name in sorted(set(mlx_tree) | set(torch_tree)):
        if name not in mlx_tree or name not in torch_tree:
            side = "PyTorch" if name not in mlx_tree else "MLX"
            out.append(Difference(f"{prefix}{name} (only in {side})", np.inf, 0.0, 0.0))
        else:
            out.append(compare(prefix + name, mlx_tree[name], torch_tree[name], rtol, atol))
    return out


def check_parity(mlx_model, torch_model, x: np.ndarray, y: np.ndarray, *, grads: bool = True,
                 rtol: float = RTOL, atol: float = ATOL) -> ParityReport:
    """Run the batch (x, y: (B, T) int token ids) through both models with dropout off
    and compare logits, loss and (with grads) every parameter's gradient.

    Leaves no gradients behind on the torch model and restores both models'
    train/eval modes."""
    import mlx.core as mx
    import mlx.nn as nn
    import torch
    from mlx.utils import tree_flatten

    from mlxgpt.bench.torch_ref import torch_grads
    from mlxgpt.training import loss_fn

    mlx_training, torch_training = mlx_model.training, torch_model.training
    mlx_model.eval()
    torch_model.eval()
    try:
        xm, ym = mx.array(x, dtype=mx.int32), mx.array(y, dtype=mx.int32)
        logits_mlx = mlx_model(xm)
        if grads:
            loss_mlx, grads_mlx = nn.value_and_grad(mlx_model, loss_fn)(mlx_model, xm, ym)
        else:
            loss_mlx, grads_mlx = loss_fn(mlx_model, xm, ym), {}
        mx.eval(logits_mlx, loss_mlx, grads_mlx)

        device = next(torch_model.parameters()).device
        xt = torch.as_tensor(np.asarray(x), dtype=torch.long, device=device)
        yt = torch.as_tensor(np.asarray(y), dtype=torch.long, device=device)
        torch_model.zero_grad(set_to_none=True)
        with torch.set_grad_enabled(grads):
            logits_torch, loss_torch = torch_model(xt, yt)
            if grads:
                loss_torch.backward()
        report = ParityReport(loss_mlx=loss_mlx.item(), loss_torch=loss_torch.item())
        report.differences.append(compare("logits", np.array(logits_mlx), logits_torch.detach().cpu().numpy(),
                                          rtol, atol))
        report.differences.append(compare("loss", loss_mlx.item(), loss_torch.item(), rtol, atol))
        if grads:
            report.differences += compare_trees("grad ", {k: np.array(v) for k, v in tree_flatten(grads_mlx)},
                                                torch_grads(torch_model), rtol, atol)
        torch_model.zero_grad(set_to_none=True)
        return report
    finally:
        mlx_model.train(mlx_training)
        torch_model.train(torch_training)


def main(argv: list[str]) -> int:
    """`python -m mlxgpt.bench.parity SPEC.json OUT.json`: the benchmark's start-up check, in a
    process of its own (the benchmark's MLX process never imports torch: see torch_worker.py).
    Builds the MLX model from the seed, copies it into the PyTorch mirror, compares one batch."""
    import json
    import os

    from mlxgpt.bench.common import TF32_ENV, draw_batches

    # True float32 on both sides: MLX reads its switch at its first float32 matmul (the benchmark
    # also starts this process with it: processes.child_env), PyTorch's is set below.
    os.environ[TF32_ENV] = "0"

    import mlxgpt  # noqa: F401  (fast BLAS before mlx.core)
    import mlx.core as mx
    import torch

    from mlxgpt.bench.torch_ref import from_mlx, matching_device, set_tf32
    from mlxgpt.config import ModelArgs
    from mlxgpt.model import GPT

    spec_path, out_path = argv
    with open(spec_path, encoding="utf-8") as f:
        spec = json.load(f)
    set_tf32(False)
    args = ModelArgs.from_dict(spec["model"])
    mx.random.seed(spec["seed"])
    mlx_model = GPT(args)
    device, note = matching_device(spec.get("mlx_device"), spec.get("device"))
    torch_model = from_mlx(mlx_model, device)
    x, y = draw_batches(args.vocab_size, spec["rows"], args.block_size, spec["seed"] + 1, 1)
    report = check_parity(mlx_model, torch_model, x[0], y[0])
    with open(out_path, "w", encoding="utf-8") as f:
        json.dump({**report.to_dict(), "torch_device": device, "device_note": note,
                   "mlx_tf32": os.environ.get(TF32_ENV), "torch_float32_matmul_precision":
                   torch.get_float32_matmul_precision()}, f)
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main(sys.argv[1:]))
