"""MLX and its PyTorch mirror (mlxgpt/bench/torch_ref.py) compute the same thing.

Same weights (copied MLX -> torch) and the same batches must give the same
logits, loss, gradients, AdamW update and 20-step loss curve, in fp32 to tight
tolerances; and the check must fail when one weight is perturbed. Tiny models:
the whole file takes seconds.
"""

from __future__ import annotations

import json
import subprocess
import sys

import mlxgpt  # noqa: F401  (before torch and mlx.core: loads the fast BLAS first)
import numpy as np
import pytest

torch = pytest.importorskip(
    "torch", reason="PyTorch is not installed; the MLX-vs-PyTorch parity tests need it: pip install -e '.[bench]'")

import mlx.core as mx  # noqa: E402

from mlxgpt.bench import torch_ref  # noqa: E402
from mlxgpt.bench.parity import check_parity, compare_trees  # noqa: E402
from mlxgpt.config import ModelArgs, TrainArgs  # noqa: E402
from mlxgpt.model import GPT  # noqa: E402
from mlxgpt.fast.streams import make_train_step as fast_train_step  # noqa: E402
from mlxgpt.training import build_optimizer, lr_schedule  # noqa: E402

torch_ref.set_tf32(False)  # true float32 on a CUDA torch too (MLX's side: MLX_ENABLE_TF32=0, tests/conftest.py)

TINY = dict(vocab_size=65, block_size=16, n_layer=2, n_head=2, n_embd=32, dropout=0.0)  # conftest's TINY_MODEL
BATCH = 8  # conftest's TINY_BATCH: the same shapes, so MLX's compiled kernels are shared


def tiny_pair(seed: int = 0, **overrides) -> tuple[GPT, torch_ref.GPT]:
    mx.random.seed(seed)
    model = GPT(ModelArgs(**{**TINY, **overrides}))
    return model, torch_ref.from_mlx(model)


def batches(count: int, seed: int = 0, vocab: int = 65, block: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """Random windows of a learnable "text": a cycle of 23 token ids, so the loss can fall."""
    rng = np.random.default_rng(seed)
    text = np.tile(rng.permutation(vocab)[:23], 200)
    starts = rng.integers(0, len(text) - block - 1, size=(count, BATCH))
    windows = text[starts[..., None] + np.arange(block + 1)]
    return windows[..., :-1].astype(np.int32), windows[..., 1:].astype(np.int32)


def train_args(**overrides) -> TrainArgs:
    values = dict(batch_size=BATCH, lr=1e-3, min_lr=1e-4, warmup_iters=5, max_iters=20, lr_decay_iters=20,
                  beta2=0.99, weight_decay=0.1, grad_clip=1.0)
    return TrainArgs(**{**values, **overrides})


def mlx_params(model: GPT) -> dict[str, np.ndarray]:
    return torch_ref.mlx_weights(model)


def assert_all_ok(differences) -> None:
    bad = [d for d in differences if not d.ok]
    assert not bad, "; ".join(f"{d.name}: {d.max_abs:.2e} > {d.tolerance:.2e}" for d in bad[:5])


def test_mirror_has_nanogpt_names_and_parameter_count():
    args = ModelArgs(vocab_size=65, block_size=256, n_layer=6, n_head=6, n_embd=384)  # shakespeare-char
    mlx_model, torch_model = GPT(args), torch_ref.GPT(args)
    assert torch_model.get_num_params() == mlx_model.num_params() == 10_646_784  # nanoGPT: "10.65M"
    assert torch_model.get_num_params(non_embedding=False) == mlx_model.num_params(non_embedding=False)
    names = set(torch_model.state_dict())
    assert {"transformer.wte.weight", "transformer.wpe.weight", "transformer.h.5.attn.c_attn.weight",
            "transformer.h.0.mlp.c_proj.weight", "transformer.ln_f.weight", "lm_head.weight"} <= names
    assert torch_model.lm_head.weight is torch_model.transformer.wte.weight  # tied, as in nanoGPT


def test_weights_copy_exactly():
    mlx_model, torch_model = tiny_pair()
    mlx_w, torch_w = mlx_params(mlx_model), torch_ref.torch_weights(torch_model)
    assert mlx_w.keys() == torch_w.keys()
    assert all(np.array_equal(mlx_w[k], torch_w[k]) for k in mlx_w)


@pytest.mark.parametrize("overrides", [{}, {"bias": True, "tie_embeddings": False}, {"pos_embedding": "sinusoidal"}],
                         ids=["nanogpt", "bias-untied", "sinusoidal"])
def test_logits_and_loss_agree(overrides):
    mlx_model, torch_model = tiny_pair(**overrides)
    x, y = batches(1)
    report = check_parity(mlx_model, torch_model, x[0], y[0], grads=False)
    assert report.ok, report.summary()
    assert report.get("logits").max_abs < 1e-5
    assert abs(report.loss_mlx - report.loss_torch) < 1e-5


def test_all_gradients_agree():
    mlx_model, torch_model = tiny_pair()
    x, y = batches(1)
    report = check_parity(mlx_model, torch_model, x[0], y[0])
    assert report.ok, report.summary()
    grads = [d for d in report.differences if d.name.startswith("grad ")]
    assert len(grads) == len(mlx_params(mlx_model))  # every parameter, none missing on either side


def test_schedule_matches_nanogpt():
    args = train_args()
    schedule = lr_schedule(args)
    for it in range(0, 30):
        assert float(schedule(mx.array(it))) == pytest.approx(torch_ref.get_lr(it, args), rel=1e-6, abs=1e-9)


def _mlx_steps(model: GPT, args: TrainArgs, xs: np.ndarray, ys: np.ndarray, streams: int = 1):
    optimizer = build_optimizer(args)
    step, state = fast_train_step(model, optimizer, args.grad_clip, streams)
    out = []
    for x, y in zip(xs, ys):
        loss, norm = step(mx.array(x), mx.array(y))
        mx.eval(state, loss, norm)
        out.append((loss.item(), norm.item()))
    return out, optimizer


def _torch_steps(model: torch_ref.GPT, args: TrainArgs, xs: np.ndarray, ys: np.ndarray):
    trainer = torch_ref.Trainer(model, args)
    out = []
    for x, y in zip(xs, ys):
        loss, norm = trainer.step(torch.from_numpy(x).long(), torch.from_numpy(y).long())
        out.append((loss.item(), norm.item()))
    return out, trainer


def _mlx_moments(optimizer, which: str) -> dict[str, np.ndarray]:
    """AdamW's m or v by parameter name, from both decay groups of the MultiOptimizer."""
    from mlx.utils import tree_flatten

    out = {}
    for key, value in tree_flatten(optimizer.state):
        group, _, rest = key.removeprefix("states.").partition(".")
        if rest.endswith("." + which):
            out[rest[: -len(which) - 1]] = np.array(value)
    return out


def _torch_moments(trainer: torch_ref.Trainer, which: str) -> dict[str, np.ndarray]:
    key = {"m": "exp_avg", "v": "exp_avg_sq"}[which]
    return {torch_ref.mlx_name(n): trainer.optimizer.state[p][key].numpy()
            for n, p in trainer.model.named_parameters()}


@pytest.mark.parametrize("accum", [1, 2])
def test_one_adamw_step_with_schedule_and_clipping_agrees(accum):
    args = train_args(grad_clip=0.5, grad_accum=accum)
    mlx_model, torch_model = tiny_pair()
    before = mlx_params(mlx_model)
    x, y = batches(accum)
    xs, ys = x[None], y[None]  # one step of `accum` micro-batches: (1, accum, B, T)
    [(loss_m, norm_m)], optimizer = _mlx_steps(mlx_model, args, xs, ys)
    [(loss_t, norm_t)], trainer = _torch_steps(torch_model, args, xs, ys)
    assert norm_m > args.grad_clip  # the clipping really acted
    assert loss_m == pytest.approx(loss_t, abs=1e-5)
    assert norm_m == pytest.approx(norm_t, rel=1e-4)
    # The moments hold the clipped gradient (m) and its square (v).
    for which in ("m", "v"):
        assert_all_ok(compare_trees(f"{which} ", _mlx_moments(optimizer, which), _torch_moments(trainer, which)))
    # The updates themselves (after - before; the weights alone would hide a wrong update or weight
    # decay). Adam's first step is lr * g / (|g| + eps): where |g| is near eps, float noise in g
    # moves it a lot, so compare where |g| > 1e-5 (most elements), to 1e-4 or fp32's resolution.
    after_m, after_t = mlx_params(mlx_model), torch_ref.torch_weights(torch_model)
    m_torch = _torch_moments(trainer, "m")
    compared = 0
    for name in before:
        update_m, update_t = after_m[name] - before[name], after_t[name] - before[name]
        assert np.abs(update_m).max() > 0
        sure = np.abs(m_torch[name]) / (1 - args.beta1) > 1e-5
        compared += sure.sum()
        resolution = 2 * np.spacing(np.abs(before[name]).max())  # after - before is exact only to fp32's grid
        np.testing.assert_allclose(update_m[sure], update_t[sure], rtol=1e-4, atol=resolution, err_msg=name)
    assert compared > 0.5 * sum(w.size for w in before.values())


@pytest.mark.parametrize("streams", [1, 2])
def test_twenty_step_loss_curve_agrees(streams):
    """Warmup, cosine decay and clipping all act within the 20 steps; no dropout."""
    args = train_args(lr=3e-3)
    mlx_model, torch_model = tiny_pair()
    x, y = batches(20)
    xs, ys = x[:, None], y[:, None]  # 20 steps of one micro-batch
    mlx_curve = np.array(_mlx_steps(mlx_model, args, xs, ys, streams)[0])
    torch_curve = np.array(_torch_steps(torch_model, args, xs, ys)[0])
    losses_m, losses_t = mlx_curve[:, 0], torch_curve[:, 0]
    assert losses_m[-1] < losses_m[0] - 0.05  # it learned something, so the comparison means something
    assert np.abs(losses_m - losses_t).max() < 1e-4, np.abs(losses_m - losses_t)
    assert_all_ok(compare_trees("", mlx_params(mlx_model), torch_ref.torch_weights(torch_model), rtol=1e-4,
                                atol=1e-7))


def test_bfloat16_steps_keep_float32_weights_in_both_frameworks():
    """--dtype bfloat16 (speed rows only): MLX computes in bfloat16 with float32 weights and AdamW state,
    PyTorch under torch.autocast; the losses agree to bfloat16's rounding, a sanity check only."""
    args = train_args()
    mlx_model, torch_model = tiny_pair()
    x, y = batches(3)
    optimizer = build_optimizer(args)
    step, state = fast_train_step(mlx_model, optimizer, args.grad_clip, 1, dtype=mx.bfloat16)
    trainer = torch_ref.Trainer(torch_model, args, dtype=torch.bfloat16)
    for i in range(3):
        loss_m, norm_m = step(mx.array(x[i][None]), mx.array(y[i][None]))
        mx.eval(state, loss_m, norm_m)
        loss_t, _ = trainer.step(torch.from_numpy(x[i][None]).long(), torch.from_numpy(y[i][None]).long())
        assert loss_m.dtype == mx.float32 and loss_t.dtype == torch.float32
        assert abs(loss_m.item() - loss_t.item()) < 0.05
    assert all(w.dtype == np.float32 for w in mlx_params(mlx_model).values())
    assert all(p.dtype == torch.float32 for p in torch_model.parameters())


def test_parity_check_catches_one_perturbed_weight():
    mlx_model, torch_model = tiny_pair()
    x, y = batches(1)
    assert check_parity(mlx_model, torch_model, x[0], y[0]).ok
    with torch.no_grad():  # one of 32x128 weights, moved by 1/20 of the init's std
        torch_model.transformer.h[0].mlp.c_fc.weight[7, 3] += 1e-3
    report = check_parity(mlx_model, torch_model, x[0], y[0])
    assert not report.ok
    assert "PARITY FAILED" in report.summary()
    assert any(d.name == "grad h.0.mlp.c_fc.weight" for d in report.failures)


def test_parity_check_catches_a_different_gelu():
    """GPT-2's tanh GELU instead of the exact one. At init the MLP's inputs are ~0.1, where the
    two agree to ~1e-7; with trained-size activations (c_fc scaled up, |x| ~ 2) they do not."""
    mx.random.seed(0)
    mlx_model = GPT(ModelArgs(**TINY))
    for block in mlx_model.h:
        block.mlp.c_fc.weight = block.mlp.c_fc.weight * 20
    torch_model = torch_ref.from_mlx(mlx_model)
    x, y = batches(1)
    assert check_parity(mlx_model, torch_model, x[0], y[0]).ok
    for block in torch_model.transformer.h:
        block.mlp.gelu = torch.nn.GELU(approximate="tanh")
    report = check_parity(mlx_model, torch_model, x[0], y[0])
    assert not report.ok
    assert any("mlp.c_fc" in d.name for d in report.failures)


def test_torch_kv_cache_matches_full_recompute():
    _, torch_model = tiny_pair()
    torch_model.eval()
    ids = torch.from_numpy(batches(1)[0][0, :1]).long()  # (1, 16)
    with torch.no_grad():
        full, _ = torch_model(ids)
        cache = torch_model.make_cache()
        prefix, _ = torch_model(ids[:, :5], cache=cache)
        steps = [torch_model(ids[:, t:t + 1], cache=cache)[0] for t in range(5, 16)]
    incremental = torch.cat([prefix] + steps, dim=1)
    assert torch.allclose(full, incremental, atol=1e-5)


def test_generation_agrees_greedy():
    """Greedy tokens, MLX vs the mirror, with and without the cache (past block_size too)."""
    from mlxgpt.generate import default_keep, generate_tokens

    mlx_model, torch_model = tiny_pair(seed=3)
    mlx_model.eval()
    torch_model.eval()
    for use_cache in (True, False):
        keep = default_keep(16) if use_cache else 16
        mlx_ids = [t for t, _ in generate_tokens(mlx_model, [1, 2, 3], 40, temperature=0.0, seed=0,
                                                 use_cache=use_cache, keep=keep)]
        torch_ids = list(torch_ref.generate_tokens(torch_model, [1, 2, 3], 40, use_cache=use_cache,
                                                   keep=default_keep(16)))
        assert mlx_ids == torch_ids


# ---------------------------------------------------------------- the bench command

# the shapes of TINY and BATCH, so MLX's compiled CPU kernels are those the tests above already built
BENCH_TINY = ["--n-layer", "2", "--n-head", "2", "--n-embd", "32", "--block-size", "16", "--batch-size", "8",
              "--iters", "2", "--warmup", "1", "--min-seconds", "0", "--gen-tokens", "20", "--no-cold-start",
              "--quick"]


def test_bench_runs_and_writes_json(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, "-m", "mlxgpt.bench", *BENCH_TINY, "--modes", "mlx,mlx-uncompiled,torch",
                           "--json", str(out)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert "MLX vs PyTorch" in proc.stdout
    report = json.loads(out.read_text())
    assert report["parity"]["ok"] and report["config"]["dtype"] == "float32"
    rows = {r["mode"]: r for r in report["training"]}
    # then the TF32 rows: measured on a CUDA GPU, skipped with the reason anywhere else
    assert list(rows) == ["mlx", "mlx-uncompiled", "torch", "mlx-tf32", "torch-tf32"]
    assert all(rows[m]["ok"] or rows[m]["skipped"] for m in ("mlx-tf32", "torch-tf32"))
    measured = [r for r in report["training"] if r["ok"]]
    assert all(r["tokens_per_s"] > 0 and r["mfu"] > 0 and r["timed_steps"] >= 2 for r in measured)
    assert all(rows[m]["device"] == report["config"]["mlx_device"] for m in ("mlx", "mlx-uncompiled"))
    assert rows["torch"]["device"] == report["environment"]["torch"]["device"]
    assert {(g["framework"], g["kv_cache"]) for g in report["generation"]} == {
        ("mlx", True), ("mlx", False), ("torch", True), ("torch", False)}
    assert "agree" in report["loss_curve"]
    assert report["ratios"] and report["environment"]["torch"]["version"] == torch.__version__


def test_bench_without_torch_runs_mlx_only(tmp_path):
    out = tmp_path / "bench.json"
    code = ("import sys; sys.modules['torch'] = None\n"  # as if PyTorch were not installed
            "from mlxgpt.cli import main\n"
            f"sys.exit(main(['bench', *{BENCH_TINY!r}, '--json', {str(out)!r}]))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "PyTorch is not installed" in proc.stdout and "pip install" in proc.stdout
    report = json.loads(out.read_text())
    assert [r["mode"] for r in report["training"]] == ["mlx", "mlx-plain", "mlx-uncompiled", "mlx-tf32"]
    assert report["parity"] is None and "torch" not in report["environment"]
    losses = {r["mode"]: r["losses"] for r in report["training"]}  # the same batches: the fast path = the textbook
    np.testing.assert_allclose(losses["mlx"], losses["mlx-plain"], rtol=1e-5)


def test_bench_cold_start_child_reports_a_first_step():
    from types import SimpleNamespace

    from mlxgpt.bench.processes import cold_start

    cfg = SimpleNamespace(model=ModelArgs(**TINY), train=train_args(), seed=0, threads=1, cpu_streams=None)
    for mode in ("torch", "mlx-uncompiled", "mlx-plain"):
        row = cold_start(cfg, mode, None, empty_cache=False)  # PyTorch on the device matching MLX's
        assert "error" not in row, row
        assert row["device"] in ("cpu", "cuda", "metal", "mps"), row  # each row names its device
        assert 0 < row["first_step_s"] < row["cold_start_s"]
        assert row["rss_peak_mb"] >= row["rss_base_mb"] > 0


def test_bench_children_do_not_inherit_the_jit_compiler_wrapper():
    """A child that found fast.jit's g++ wrapper first on PATH would key MLX's kernel cache
    differently from its parent and recompile every kernel (a 30 s 'warm' cold start)."""
    from mlxgpt.fast.jit import jit_cache_root
    from mlxgpt.bench.processes import child_env

    root = str(jit_cache_root())
    for torch_side in (False, True):
        env = child_env(torch_side)
        assert not any(p.startswith(root) for p in env["PATH"].split(":"))
        assert env["MLX_ENABLE_TF32"] == "0"  # true float32 in every child but the TF32 row's
        assert (env.get("MLXGPT_BLAS") == "reference") == torch_side  # PyTorch's process loads no OpenBLAS
