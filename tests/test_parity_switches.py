"""The PyTorch mirror (mlxgpt/bench/torch_ref.py) follows every architecture switch of model.py.

For each switch (and one combination of several), a tiny MLX model with "trained-size" weights
is copied into the mirror with the benchmark's own transfer code (torch_ref.from_mlx) and both
must give the same logits, loss and gradients (parity.check_parity, fp32, its tolerances), and
the same logits through the KV cache. Each case also checks that the test can see its switch:
the mirror with that switch ignored must fail the same check. At init (weights of std 0.02)
attention is nearly uniform and logits tiny, so a missing rotation or soft-cap would hide
below the tolerance; hence the scaled-up weights and random gains.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable

import mlxgpt  # noqa: F401  (before torch and mlx.core: loads the fast BLAS first)
import numpy as np
import pytest

torch = pytest.importorskip(
    "torch", reason="PyTorch is not installed; the MLX-vs-PyTorch parity tests need it: pip install -e '.[bench]'")

import mlx.core as mx  # noqa: E402
from mlx.utils import tree_flatten  # noqa: E402

from mlxgpt.bench import common, torch_ref  # noqa: E402
from mlxgpt.bench.parity import check_parity, compare  # noqa: E402
from mlxgpt.config import ModelArgs  # noqa: E402
from mlxgpt.errors import MlxgptError  # noqa: E402
from mlxgpt.model import GPT, rotary  # noqa: E402

torch_ref.set_tf32(False)  # true float32 on a CUDA torch too (MLX's side: MLX_ENABLE_TF32=0, tests/conftest.py)

TINY = dict(vocab_size=20, block_size=16, n_layer=2, n_head=2, n_embd=32, dropout=0.0)
BATCH = 4

COMBO = dict(pos_embedding="rope", norm="rmsnorm", qk_norm=True, mlp="relu2", tie_embeddings=False,
             logit_softcap=15.0)
# case id -> the ModelArgs switches it sets (each alone, then together)
CASES: dict[str, dict] = {
    "rope": dict(pos_embedding="rope"),
    "rmsnorm": dict(norm="rmsnorm"),
    "qk-norm": dict(qk_norm=True),
    "relu": dict(mlp="relu"),
    "relu2": dict(mlp="relu2"),
    "swiglu": dict(mlp="swiglu"),
    "swiglu-bias-rmsnorm": dict(mlp="swiglu", bias=True, norm="rmsnorm"),  # c_gate's bias; RMSNorm has none
    "softcap": dict(logit_softcap=2.0),
    "zero-init-proj": dict(zero_init_proj=True),
    "no-causal-mask": dict(causal=False),
    "post-ln": dict(post_ln=True),
    "no-attn-scale": dict(attn_scale=False),
    "untied": dict(tie_embeddings=False),
    "combo": COMBO,
}


# ---------------------------------------------------------------- helpers


def scale_up(model: GPT, seed: int) -> None:
    """Weights of a trained size, in place: sharp attention (c_attn x8), MLP inputs where the
    nonlinearities differ (c_fc, c_gate x20, as test_parity's GELU test), logits of a few units
    (wte, lm_head x20) and random gains and biases (a swapped q_norm/k_norm would hide behind
    gains that are all ones). zero-init-proj keeps its zero projections: init is what it changes."""
    rng = np.random.default_rng(seed)
    factors = {"c_attn.weight": 8.0, "c_fc.weight": 20.0, "c_gate.weight": 20.0, "wte.weight": 20.0,
               "lm_head.weight": 20.0}
    updates = []
    for name, w in tree_flatten(model.parameters()):
        factor = next((f for suffix, f in factors.items() if name.endswith(suffix)), None)
        if factor is not None:
            updates.append((name, w * factor))
        elif w.ndim == 1:  # gains around 1, biases around 0
            base = 0.0 if name.endswith("bias") else 1.0
            updates.append((name, mx.array(base + 0.3 * rng.standard_normal(w.shape), dtype=mx.float32)))
    model.load_weights(updates, strict=False)


def pair(overrides: dict, seed: int = 0, trained: bool = True) -> tuple[GPT, torch_ref.GPT]:
    """An MLX model and its mirror, built by the benchmark's transfer code."""
    mx.random.seed(seed)
    model = GPT(ModelArgs(**{**TINY, **overrides}))
    if trained:
        scale_up(model, seed)
    return model, torch_ref.from_mlx(model)


def batch(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, TINY["vocab_size"], size=(BATCH, TINY["block_size"] + 1)).astype(np.int32)
    return ids[:, :-1], ids[:, 1:]


def torch_blocks(model: torch_ref.GPT) -> list[torch.nn.Module]:
    return list(model.transformer.h)


def _set_all(model: torch_ref.GPT, which: str, **values) -> None:
    for block in torch_blocks(model):
        target = block if which == "block" else getattr(block, which)
        for key, value in values.items():
            setattr(target, key, value)


def _layernorms(model: torch_ref.GPT) -> None:
    """Every RMSNorm of the residual stream replaced by a LayerNorm with the same gain."""
    owners = [*torch_blocks(model), model.transformer]
    for owner in owners:
        for name in ("ln_1", "ln_2", "ln_f"):
            old = owner._modules.get(name)
            if isinstance(old, torch_ref.RMSNorm):
                new = torch_ref.LayerNorm(old.weight.shape[0], bias=False)
                new.weight = old.weight
                owner._modules[name] = new


def _gelu(model: torch_ref.GPT) -> None:
    _set_all(model, "mlp", kind="gelu", gelu=torch.nn.GELU())


def _tie(model: torch_ref.GPT) -> None:
    with torch.no_grad():
        model.lm_head.weight.copy_(model.transformer.wte.weight)


def _no_softcap(model: torch_ref.GPT) -> None:
    model.args = dataclasses.replace(model.args, logit_softcap=0.0)


# case id -> the mirror with that switch ignored (what a mirror that forgot it would compute)
IGNORED: dict[str, Callable[[torch_ref.GPT], None]] = {
    "rope": lambda m: _set_all(m, "attn", rotary=False),
    "rmsnorm": _layernorms,
    "qk-norm": lambda m: _set_all(m, "attn", qk_norm=False),
    "relu": _gelu,
    "relu2": lambda m: _set_all(m, "mlp", kind="relu"),  # ReLU, not squared
    "swiglu": lambda m: _set_all(m, "mlp", kind="relu"),  # no gate
    "swiglu-bias-rmsnorm": _layernorms,
    "softcap": _no_softcap,
    "no-causal-mask": lambda m: _set_all(m, "attn", causal=True),
    "post-ln": lambda m: _set_all(m, "block", post_ln=False),
    "no-attn-scale": lambda m: _set_all(m, "attn", scale=1.0 / math.sqrt(TINY["n_embd"] // TINY["n_head"])),
    "untied": _tie,
    "combo": _no_softcap,  # soft-capping at 15 is the subtlest of the five: it must still show
}


# ---------------------------------------------------------------- the switches, one by one


@pytest.mark.parametrize("case", list(CASES))
def test_logits_loss_and_gradients_agree(case):
    mlx_model, torch_model = pair(CASES[case])
    x, y = batch()
    report = check_parity(mlx_model, torch_model, x, y)
    assert report.ok, report.summary()
    grads = [d for d in report.differences if d.name.startswith("grad ")]
    assert len(grads) == len(torch_ref.mlx_weights(mlx_model))  # every parameter, none only on one side
    # the same shape on both sides, from the shape alone too (ModelArgs.parameter_count)
    args = mlx_model.args
    assert (torch_model.get_num_params(non_embedding=False) == mlx_model.num_params(non_embedding=False)
            == args.parameter_count())
    assert torch_model.get_num_params() == mlx_model.num_params()


@pytest.mark.parametrize("case", list(IGNORED))
def test_a_mirror_that_ignores_the_switch_fails(case):
    """The weights above make each switch visible: without it the check fails."""
    mlx_model, torch_model = pair(CASES[case])
    IGNORED[case](torch_model)
    x, y = batch()
    report = check_parity(mlx_model, torch_model, x, y)
    assert not report.ok, f"{case}: the parity check cannot tell the switch is missing ({report.summary()})"


def test_switch_parameters_have_model_py_names():
    mlx_model, torch_model = pair({**COMBO, "mlp": "swiglu", "bias": True}, trained=False)
    names = set(torch_ref.torch_weights(torch_model))
    assert names == set(torch_ref.mlx_weights(mlx_model))
    assert {"h.0.attn.q_norm.weight", "h.0.attn.k_norm.weight", "h.1.mlp.c_gate.weight", "h.1.mlp.c_gate.bias",
            "ln_f.weight", "lm_head.weight"} <= names
    assert not any(n.endswith("ln_f.bias") or n.endswith("ln_1.bias") or n.startswith("wpe") for n in names)
    assert torch_model.lm_head.weight is not torch_model.transformer.wte.weight  # untied
    assert torch_model.transformer.h[0].mlp.c_fc.weight.shape == (ModelArgs(**TINY, mlp="swiglu").mlp_hidden, 32)
    _, post = pair(dict(post_ln=True), trained=False)
    assert isinstance(post.transformer.ln_f, torch.nn.Identity)
    assert not any("ln_f" in n for n in torch_ref.torch_weights(post))


def test_zero_init_proj_on_both_sides():
    """--zero-init-proj is init only: MLX's init and the mirror's own (the cold-start rows train from
    it without copying MLX's weights) both start every residual projection at zero."""
    args = ModelArgs(**TINY, zero_init_proj=True)
    mx.random.seed(0)
    mlx_w = torch_ref.mlx_weights(GPT(args))
    torch_w = torch_ref.torch_weights(torch_ref.GPT(args))
    for weights in (mlx_w, torch_w):
        projections = [w for n, w in weights.items() if n.endswith("c_proj.weight")]
        assert len(projections) == 2 * TINY["n_layer"] and not any(np.any(w) for w in projections)
        assert np.any(weights["h.0.attn.c_attn.weight"])
    default = torch_ref.torch_weights(torch_ref.GPT(ModelArgs(**TINY)))
    assert np.any(default["h.0.attn.c_proj.weight"])


# ---------------------------------------------------------------- positions: rope and the KV cache


@pytest.mark.parametrize("offset", [0, 5, mx.array(5)], ids=["0", "int-5", "array-5"])
def test_rotary_is_mlx_fast_rope(offset):
    """model.rotary is the non-interleaved ("halves") RoPE of mx.fast.rope, base 10000; so is the mirror's."""
    hs = TINY["n_embd"] // TINY["n_head"]
    x = mx.random.normal((2, 2, 7, hs), key=mx.random.key(1))
    expected = mx.fast.rope(x, hs, traditional=False, base=10000.0, scale=1.0, offset=offset)
    ours = rotary(x, offset)
    assert ours.shape == x.shape and ours.dtype == x.dtype
    assert mx.abs(ours - expected).max().item() < 1e-5
    mirrored = torch_ref.rotary(torch.from_numpy(np.array(x)), int(offset) if isinstance(offset, mx.array) else offset)
    np.testing.assert_allclose(mirrored.numpy(), np.array(expected), atol=1e-5)


def _mlx_cached(model: GPT, ids: np.ndarray, chunks: list[int]) -> list[np.ndarray]:
    cache, out, start = model.make_cache(), [], 0
    for size in chunks:
        out.append(np.array(model(mx.array(ids[:, start:start + size]), cache=cache)))
        start += size
    return out


def _torch_cached(model: torch_ref.GPT, ids: np.ndarray, chunks: list[int]) -> list[np.ndarray]:
    cache, out, start = model.make_cache(), [], 0
    with torch.no_grad():
        for size in chunks:
            out.append(model(torch.from_numpy(ids[:, start:start + size]).long(), cache=cache)[0].numpy())
            start += size
    return out


@pytest.mark.parametrize("case", ["rope", "combo", "no-causal-mask", "no-attn-scale", "post-ln"])
def test_kv_cache_path_agrees(case):
    """Through the cache: a 5-token prompt, then 3 tokens at once (the masked path at an offset),
    then one at a time; rope rotates each chunk at the cache's offset on both sides."""
    mlx_model, torch_model = pair(CASES[case])
    mlx_model.eval()
    torch_model.eval()
    ids = batch()[0][:2]
    chunks = [5, 3] + [1] * 8
    mlx_steps, torch_steps = _mlx_cached(mlx_model, ids, chunks), _torch_cached(torch_model, ids, chunks)
    for i, (a, b) in enumerate(zip(mlx_steps, torch_steps)):
        diff = compare(f"chunk {i}", a, b)
        assert diff.ok, f"{diff.name}: {diff.max_abs:.2e} > {diff.tolerance:.2e}"
    if CASES[case].get("causal", True):  # with the mask, the cache changes nothing: same as one full pass
        full = np.array(mlx_model(mx.array(ids)))
        np.testing.assert_allclose(np.concatenate(torch_steps, axis=1), full, rtol=1e-4, atol=1e-4)


def test_generation_agrees_greedy_with_switches():
    """Greedy tokens, MLX vs the mirror, with and without the cache (past block_size: the window slides
    and the cache is refilled at offset 0)."""
    from mlxgpt.generate import default_keep, generate_tokens

    mlx_model, torch_model = pair(COMBO, seed=3)
    mlx_model.eval()
    torch_model.eval()
    keep = default_keep(TINY["block_size"])
    for use_cache in (True, False):
        mlx_ids = [t for t, _ in generate_tokens(mlx_model, [1, 2, 3], 30, temperature=0.0, seed=0,
                                                 use_cache=use_cache, keep=keep if use_cache else 16)]
        torch_ids = list(torch_ref.generate_tokens(torch_model, [1, 2, 3], 30, use_cache=use_cache, keep=keep))
        assert mlx_ids == torch_ids


# ---------------------------------------------------------------- the benchmark builds the same model


def test_bench_passes_every_switch_to_its_children():
    """The children rebuild ModelArgs from the spec's asdict(cfg.model): every switch survives."""
    from mlxgpt.bench.processes import _spec
    from mlxgpt.bench.settings import BenchConfig
    from mlxgpt.config import TrainArgs

    model = ModelArgs(**TINY, **COMBO, causal=False, post_ln=True, attn_scale=False, zero_init_proj=True)
    cfg = BenchConfig(preset="baby", preset_note="", model=model, train=TrainArgs(), warmup=0, iters=1,
                      min_seconds=0.0, dtype="float32", gen_tokens=0, modes=["mlx", "torch"], cold_start=False,
                      cold_cache=False, threads=1, cpu_streams=None, torch_device=None, seed=0, quick=True,
                      use_torch=True, command="")
    assert ModelArgs.from_dict(_spec(cfg)["model"]) == model  # the parity check's and torch_worker's
    assert BenchConfig.from_dict(cfg.to_dict()).model == model  # mlx_worker's


def test_every_switch_is_mirrored():
    switched = {name for overrides in CASES.values() for name in overrides}
    assert switched <= common.MIRRORED_MODEL_FIELDS
    assert common.unmirrored_switch(ModelArgs(**TINY, **COMBO)) is None


def test_an_unmirrored_switch_is_refused(monkeypatch):
    """A switch torch_ref does not know (simulated by taking qk_norm off the list): the benchmark and the
    mirror refuse it in one line naming the flag, instead of timing two different models."""
    from types import SimpleNamespace

    from mlxgpt.bench.runner import run_bench

    monkeypatch.setattr(common, "MIRRORED_MODEL_FIELDS", common.MIRRORED_MODEL_FIELDS - {"qk_norm"})
    monkeypatch.setenv(common.TF32_ENV, "0")
    args = ModelArgs(**TINY, qk_norm=True)
    with pytest.raises(MlxgptError, match="--qk-norm") as refused:
        torch_ref.GPT(args)
    assert "\n" not in str(refused.value)
    with pytest.raises(MlxgptError, match="does not implement --qk-norm"):
        run_bench(SimpleNamespace(model=args, use_torch=True))
    torch_ref.GPT(ModelArgs(**TINY))  # at its default the field is harmless
