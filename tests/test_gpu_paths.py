"""The GPU code paths, forced on the CPU: no GPU is needed to check that they are taken and agree.

Our CI has no GPU, and most users run on one (Metal). So each place where mlxgpt does
something different on a GPU is run here with `on_gpu` made to say yes: fused attention
(forward, cached decoding, gradients), no CPU set-up, bfloat16 by default; and the CPU-only
set-up is checked to be off on macOS and under MLX's CUDA backend.
"""

from __future__ import annotations

import os
import sys

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest

from conftest import TINY_MODEL
from mlxgpt import training
from mlxgpt.config import ModelArgs, TrainArgs
from mlxgpt.fast import blas, decoding, device, jit, streams
from mlxgpt.model import GPT


@pytest.fixture
def pretend_gpu(monkeypatch):
    """Every `on_gpu()` in mlxgpt/fast answers True (they all ask fast/device.py's, by import)."""
    for module in (device, decoding, streams):
        monkeypatch.setattr(module, "on_gpu", lambda: True)


@pytest.fixture
def fused_calls(monkeypatch):
    """Counts calls of mx.fast.scaled_dot_product_attention (still computing them)."""
    calls = []
    real = mx.fast.scaled_dot_product_attention

    def spy(*args, **kwargs):
        calls.append(kwargs.get("mask"))
        return real(*args, **kwargs)

    monkeypatch.setattr(mx.fast, "scaled_dot_product_attention", spy)
    return calls


def tiny_model(seed: int = 0, **overrides) -> GPT:
    mx.random.seed(seed)
    model = GPT(ModelArgs(vocab_size=23, **{**TINY_MODEL, "dropout": 0.0, **overrides}))
    mx.eval(model.parameters())
    return model


def tokens(shape=(3, 16), seed=1) -> mx.array:
    return mx.array(np.random.default_rng(seed).integers(0, 23, shape), dtype=mx.int32)


def test_fused_attention_matches_the_written_out_attention(pretend_gpu, fused_calls):
    model, x = tiny_model(), tokens()
    model.eval()
    plain = model(x)
    decoding.accelerate(model)  # on a "GPU": the fused kernel
    fused = model(x)
    assert fused_calls == ["causal", "causal"]  # one per layer, on the kernel's fast causal path
    np.testing.assert_allclose(np.array(fused), np.array(plain), rtol=1e-4, atol=1e-5)


def test_gradients_through_the_fused_kernel_match(pretend_gpu, fused_calls):
    from mlx.utils import tree_flatten

    x, y = tokens(seed=2), tokens(seed=3)
    results = []
    for fused in (False, True):
        model = tiny_model()
        if fused:
            decoding.use_fused_attention(model)
        loss, grads = nn.value_and_grad(model, training.loss_fn)(model, x, y)
        results.append((loss.item(), dict(tree_flatten(grads))))
    assert fused_calls, "the fused kernel was not used"
    (loss_a, a), (loss_b, b) = results
    assert loss_b == pytest.approx(loss_a, rel=1e-5)
    for name in a:
        np.testing.assert_allclose(np.array(b[name]), np.array(a[name]), rtol=2e-3, atol=2e-6, err_msg=name)


def test_the_training_step_uses_the_fused_kernel_on_a_gpu(pretend_gpu, fused_calls):
    model = tiny_model()
    optimizer = training.build_optimizer(TrainArgs())
    step, state = streams.make_train_step(model, optimizer, 1.0, streams=1)
    loss, _ = step(tokens()[None], tokens(seed=4)[None])
    mx.eval(state, loss)
    assert fused_calls and np.isfinite(loss.item())


def test_fused_cached_decoding_draws_the_same_tokens(pretend_gpu, fused_calls):
    from mlxgpt.generate import generate_tokens

    model = tiny_model()
    model.eval()
    reference = [t for t, _ in generate_tokens(model, [1, 2, 3], 30, temperature=0.0, fast=False)]
    fast = [t for t, _ in generate_tokens(model, [1, 2, 3], 30, temperature=0.0, fast=True)]
    assert fused_calls  # the compiled one-token step went through the fused kernel (with its explicit mask)
    assert fast == reference


def test_dropout_keeps_the_written_out_attention_while_training(pretend_gpu, fused_calls):
    model = tiny_model(dropout=0.2)
    decoding.use_fused_attention(model)
    model.train()
    model(tokens())
    assert fused_calls == []  # dropout acts on the attention weights, which the kernel never shows
    model.eval()
    model(tokens())
    assert fused_calls  # without dropout (evaluation, sampling) the kernel is used


def test_a_gpu_gets_no_cpu_tuning(pretend_gpu, monkeypatch):
    touched = []
    monkeypatch.setattr(device, "set_blas_threads", lambda n: touched.append("blas threads"))
    monkeypatch.setattr(mx, "set_cache_limit", lambda n: touched.append("cache limit"))
    settings = device.configure_device()
    assert (settings.streams, settings.blas_threads, settings.cache_limit_gb) == (1, None, None)
    assert touched == [] and settings.describe() == ""


def test_auto_precision_is_bfloat16_on_a_gpu_and_float32_on_a_cpu(monkeypatch):
    assert device.resolve_dtype("auto") == (mx.float32, None)  # this machine: a CPU
    dtype, warning = device.resolve_dtype("bfloat16")
    assert dtype == mx.bfloat16 and "slower" in warning and "--dtype float32" in warning
    monkeypatch.setattr(device, "on_gpu", lambda: True)
    assert device.resolve_dtype("auto") == (mx.bfloat16, None)
    assert device.resolve_dtype("float16") == (mx.float16, None)
    assert device.resolve_dtype("float32") == (mx.float32, None)


@pytest.fixture
def fresh_blas(monkeypatch):
    """setup_blas() decides once per process: let it decide again, and record library loads."""
    monkeypatch.setattr(blas, "_blas", None)
    loads = []
    monkeypatch.setattr(blas.ctypes, "CDLL", lambda *a, **k: loads.append(a) or (_ for _ in ()).throw(OSError()))
    return loads


def test_no_blas_is_loaded_on_macos(monkeypatch, fresh_blas):
    monkeypatch.setattr(sys, "platform", "darwin")
    info = blas.setup_blas()
    assert info.name == "accelerate" and info.fast and fresh_blas == []
    assert blas.blas_warning(info) is None


def test_no_blas_is_loaded_under_mlx_cuda(monkeypatch, fresh_blas):
    monkeypatch.setattr(blas, "cuda_backend", lambda: True)
    info = blas.setup_blas()
    assert fresh_blas == [] and info.fast and "CUDA" in info.note
    assert blas.blas_warning(info) is None  # no slow-BLAS warning on an aarch64 CUDA machine


def test_cuda_backend_needs_mlx_cuda_installed():
    assert blas.cuda_backend() is False  # this machine has mlx[cpu] only


@pytest.mark.parametrize("platform, cuda", [("darwin", False), ("linux", True)])
def test_no_compiler_wrapper_on_macos_or_cuda(monkeypatch, platform, cuda):
    monkeypatch.setattr(jit, "_jit", None)
    monkeypatch.setattr(sys, "platform", platform)
    monkeypatch.setattr(jit, "cuda_backend", lambda: cuda)
    before = (os.environ.get("PATH"), os.environ.get("TMPDIR"))
    assert jit.setup_jit_flags() == "default"
    assert (os.environ.get("PATH"), os.environ.get("TMPDIR")) == before


def test_mixed_precision_training_learns_and_keeps_float32_weights():
    """bfloat16 compute (what a GPU runs by default), here on the CPU: the loss falls like float32's,
    and the weights and AdamW's moments stay float32."""
    from mlx.utils import tree_flatten

    rng = np.random.default_rng(0)
    pattern = np.tile(np.arange(23), 40)
    finals = {}
    for dtype in (mx.float32, mx.bfloat16):
        model = tiny_model()
        optimizer = training.build_optimizer(TrainArgs(lr=1e-2, warmup_iters=0, max_iters=60))
        step, state = training.make_train_step(model, optimizer, 1.0, dtype=dtype)
        for _ in range(60):
            starts = rng.integers(0, len(pattern) - 17, 8)
            x = np.stack([pattern[s:s + 16] for s in starts])
            y = np.stack([pattern[s + 1:s + 17] for s in starts])
            loss, _ = step(mx.array(x[None]), mx.array(y[None]))
            mx.eval(state, loss)
        finals[dtype] = loss.item()
        assert {v.dtype for _, v in tree_flatten(model.parameters())} == {mx.float32}
        assert {v.dtype for _, v in tree_flatten(optimizer.state) if v.dtype != mx.uint64} == {mx.float32}
    assert finals[mx.bfloat16] < 0.5 * np.log(23)  # learned the cycle (from ~3.1 nats)
    assert finals[mx.bfloat16] == pytest.approx(finals[mx.float32], abs=0.15)


def test_bfloat16_eval_loss_is_close_to_float32():
    model = tiny_model()
    x, y = tokens(seed=5), tokens(seed=6)
    full = training.make_eval_loss(model)(x, y).item()
    half = training.make_eval_loss(model, mx.bfloat16)(x, y).item()
    assert half == pytest.approx(full, rel=2e-2)
    assert model.wte.weight.dtype == mx.float32  # the weights are back to float32 afterwards


def test_train_and_generate_take_dtype_and_warn_on_a_cpu(tmp_path, text_file, trained_run):
    import json

    from conftest import TINY_FLAGS, run_cli
    from mlxgpt.checkpoint import load

    out = tmp_path / "bf16"
    result = run_cli("train.py", "--data", text_file, "--out", out, *TINY_FLAGS, "--max-iters", "40",
                     "--eval-interval", "40", "--eval-iters", "2", "--dtype", "bfloat16")
    assert result.returncode == 0, result.stderr
    assert "--dtype bfloat16 on MLX's CPU backend is much slower" in result.stderr
    assert "bfloat16 compute (float32 weights)" in result.stdout
    config = json.loads((out / "latest" / "config.json").read_text())
    assert config["train"]["dtype"] == "bfloat16"  # saved, so --resume computes the same way
    model, _ = load(out / "latest")
    assert model.wte.weight.dtype == mx.float32  # checkpoints hold the float32 master weights
    events = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    evals = [e["val_loss"] for e in events if e["event"] == "eval"]
    assert evals[-1] < evals[0]

    generated = run_cli("generate.py", "--checkpoint", trained_run, "--prompt", "The", "--max-new-tokens", "40",
                        "--temperature", "0", "--dtype", "bfloat16")
    assert generated.returncode == 0, generated.stderr
    assert generated.stdout.startswith("The") and len(generated.stdout) > 30
    assert "much slower" in generated.stderr


def test_a_small_gpu_splits_a_big_presets_batch():
    from mlxgpt.config import PRESETS

    _, values = PRESETS["shakespeare-char"].with_overrides({})
    note = device.fit_batch_to_memory(values, set(), memory_gb=8.0)  # an 8 GB Mac
    assert (values["batch_size"], values["grad_accum"]) == (32, 2) and "32 x 2" in note and "8 GB" in note
    _, values = PRESETS["shakespeare-char"].with_overrides({"batch_size": 64})
    assert device.fit_batch_to_memory(values, {"batch_size"}, 8.0) is None and values["batch_size"] == 64
    _, values = PRESETS["shakespeare-char"].with_overrides({})
    assert device.fit_batch_to_memory(values, set(), 96.0) is None and values["batch_size"] == 64
    assert device.fit_batch_to_memory(values, set(), None) is None  # a CPU
    _, values = PRESETS["baby"].with_overrides({})
    assert device.fit_batch_to_memory(values, set(), 8.0) is None  # small batches need no splitting
    assert device.gpu_memory_gb() is None  # this machine: a CPU


def test_accumulated_micro_batches_give_the_big_batchs_gradient():
    """Two micro-batches of 4, each evaluated on its own, update the weights as one batch of 8 does."""
    from mlx.utils import tree_flatten

    x, y = tokens((8, 16), seed=7), tokens((8, 16), seed=8)
    weights = []
    for shape in ((1, 8, 16), (2, 4, 16)):
        model = tiny_model()
        optimizer = training.build_optimizer(TrainArgs())
        step, state = training.make_train_step(model, optimizer, 1.0)
        loss, _ = step(x.reshape(shape), y.reshape(shape))
        mx.eval(state, loss)
        weights.append((loss.item(), dict(tree_flatten(model.parameters()))))
    (one_loss, one), (two_loss, two) = weights
    assert two_loss == pytest.approx(one_loss, rel=1e-5)
    for name in one:
        np.testing.assert_allclose(np.array(two[name]), np.array(one[name]), rtol=1e-4, atol=1e-6, err_msg=name)
