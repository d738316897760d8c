"""The architecture switches (issue 21): each does what its comment in model.py says,
is counted by ModelArgs.parameter_count, works with both KV caches, and survives a
checkpoint. Parity with a PyTorch mirror is in test_parity_switches.py."""

from __future__ import annotations

import json
import math

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
from mlx.utils import tree_flatten

from conftest import TINY_FLAGS, TINY_MODEL, assert_clean_failure, run_cli
from mlxgpt.config import SWITCH_FLAGS, ModelArgs
from mlxgpt.errors import MlxgptError
from mlxgpt.fast.decoding import make_static_cache
from mlxgpt.generate import generate_tokens
from mlxgpt.model import GPT, KVCache, rotary
from mlxgpt.training import masked_cross_entropy

VOCAB = 20

# every switch away from its default, alone, and a modern combination
SWITCHES = {
    "rope": dict(pos_embedding="rope"),
    "rmsnorm": dict(norm="rmsnorm"),
    "qk_norm": dict(qk_norm=True),
    "relu": dict(mlp="relu"),
    "relu2": dict(mlp="relu2"),
    "swiglu": dict(mlp="swiglu"),
    "untied": dict(tie_embeddings=False),
    "softcap": dict(logit_softcap=5.0),
    "zero_init": dict(zero_init_proj=True),
    "post_ln": dict(post_ln=True),
    "no_scale": dict(attn_scale=False),
    "modern": dict(pos_embedding="rope", norm="rmsnorm", qk_norm=True, mlp="relu2", tie_embeddings=False,
                   logit_softcap=15.0, zero_init_proj=True),
}


def tiny(seed: int = 0, **switches) -> GPT:
    mx.random.seed(seed)
    model = GPT(ModelArgs(vocab_size=VOCAB, **TINY_MODEL, **switches))
    model.eval()
    return model


def random_ids(shape: tuple[int, ...], seed: int = 0) -> mx.array:
    return mx.array(np.random.default_rng(seed).integers(0, VOCAB, size=shape), dtype=mx.int32)


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("name", list(SWITCHES))
def test_parameter_count_from_the_shape_matches_the_built_model(name, bias):
    model = tiny(bias=bias, **SWITCHES[name])
    assert model.args.parameter_count() == sum(w.size for _, w in tree_flatten(model.parameters()))


def test_swiglu_holds_about_as_many_weights_as_the_gelu_mlp():
    gelu, swiglu = ModelArgs(n_embd=384, n_head=6), ModelArgs(n_embd=384, n_head=6, mlp="swiglu")
    assert swiglu.mlp_hidden == 1024  # 8/3 * 384
    assert abs(swiglu.parameter_count() - gelu.parameter_count()) / gelu.parameter_count() < 0.01


@pytest.mark.parametrize("name", list(SWITCHES))
def test_each_switch_trains_with_finite_gradients(name):
    model = tiny(**SWITCHES[name])
    model.train()
    x, y = random_ids((4, 16), 1), random_ids((4, 16), 2)
    loss_fn = lambda m: masked_cross_entropy(m(x), y)
    loss, grads = nn.value_and_grad(model, loss_fn)(model)
    assert math.isfinite(loss.item())
    flat = tree_flatten(grads)
    assert all(bool(mx.all(mx.isfinite(g)).item()) for _, g in flat)
    # every parameter gets a gradient signal (zero-initialised projections: through the other blocks' outputs)
    assert sum(float(mx.sum(g * g).item()) for _, g in flat) > 0


@pytest.mark.parametrize("name", list(SWITCHES))
def test_kv_caches_give_the_full_forwards_logits(name):
    """Rotary positions must rotate each new token by its own position: chunks through the
    growing KVCache and through the fixed-shape StaticKVCache equal one full forward."""
    model = tiny(seed=1, **SWITCHES[name])
    if name == "zero_init":  # zero projections make every block the identity: perturb them
        model.update({"h": [{"attn": {"c_proj": {"weight": mx.random.normal((32, 32)) * 0.02}}}] * 2})
    idx = random_ids((1, 16), 3)
    full = np.array(model(idx))
    for cache in (model.make_cache(), make_static_cache(model)):
        pieces = [np.array(model(idx[:, a:b], cache)) for a, b in ((0, 5), (5, 9), (9, 10), (10, 16))]
        np.testing.assert_allclose(np.concatenate(pieces, axis=1), full, rtol=0, atol=2e-5)


def test_rotary_attention_depends_only_on_relative_position():
    q, k = mx.random.normal((1, 1, 1, 8)), mx.random.normal((1, 1, 1, 8))
    score = lambda i, j: (rotary(q, i) * rotary(k, j)).sum().item()
    assert score(3, 1) == pytest.approx(score(10, 8), abs=1e-5)
    assert score(3, 1) != pytest.approx(score(3, 2), abs=1e-3)
    assert np.allclose(np.linalg.norm(np.array(rotary(q, 7))), np.linalg.norm(np.array(q)), atol=1e-5)  # a rotation


def test_rope_model_has_no_position_table_and_learns_positions_in_attention():
    model = tiny(pos_embedding="rope")
    assert "wpe" not in model and model.h[0].attn.rotary
    # the same token at two positions enters the residual stream as the same vector
    x = model.embed(mx.array([[4, 4]]))
    assert np.array_equal(np.array(x[0, 0]), np.array(x[0, 1]))


def test_qk_norm_gives_every_query_and_key_the_same_length():
    model = tiny(qk_norm=True)
    attn = model.h[0].attn
    q, k, _ = attn.qkv(mx.random.normal((1, 5, 32)))
    for t in (q, k):  # RMSNorm with unit gains: root mean square 1, i.e. length sqrt(hs)
        np.testing.assert_allclose(np.linalg.norm(np.array(t), axis=-1), math.sqrt(16), rtol=5e-3)  # eps 1e-5


def test_rmsnorm_divides_by_the_root_mean_square():
    model = tiny(norm="rmsnorm")
    x = mx.random.normal((2, 3, 32)) * 3 + 1
    ln = model.h[0].ln_1
    assert isinstance(ln, nn.RMSNorm) and "bias" not in ln
    expected = np.array(x) / np.sqrt((np.array(x) ** 2).mean(-1, keepdims=True) + 1e-5)
    np.testing.assert_allclose(np.array(ln(x)), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("mlp, formula", [("relu", lambda h: np.maximum(h, 0)),
                                          ("relu2", lambda h: np.maximum(h, 0) ** 2)])
def test_mlp_activations_follow_their_formulas(mlp, formula):
    block_mlp = tiny(mlp=mlp).h[0].mlp
    x = mx.random.normal((1, 3, 32))
    W1, W2 = np.array(block_mlp.c_fc.weight), np.array(block_mlp.c_proj.weight)
    expected = formula(np.array(x) @ W1.T) @ W2.T
    np.testing.assert_allclose(np.array(block_mlp(x)), expected, rtol=1e-4, atol=1e-6)


def test_swiglu_gates_the_up_projection():
    m = tiny(mlp="swiglu").h[0].mlp
    x = mx.random.normal((1, 3, 32))
    g, u = np.array(x) @ np.array(m.c_gate.weight).T, np.array(x) @ np.array(m.c_fc.weight).T
    expected = (g / (1 + np.exp(-g)) * u) @ np.array(m.c_proj.weight).T
    np.testing.assert_allclose(np.array(m(x)), expected, rtol=1e-4, atol=1e-6)


def test_logit_softcap_squashes_logits_into_the_cap():
    capped, plain = tiny(logit_softcap=0.5), tiny()  # same seed: same weights
    idx = random_ids((1, 8))
    raw = np.array(plain(idx))
    np.testing.assert_allclose(np.array(capped(idx)), 0.5 * np.tanh(raw / 0.5), rtol=1e-5, atol=1e-6)
    assert np.abs(np.array(capped(idx))).max() < 0.5


def test_zero_init_proj_makes_every_block_start_as_the_identity():
    model = tiny(zero_init_proj=True)
    idx = random_ids((1, 8))
    assert all(not np.any(np.array(block.attn.c_proj.weight)) and not np.any(np.array(block.mlp.c_proj.weight))
               for block in model.h)
    np.testing.assert_allclose(np.array(model(idx)), np.array(model.unembed(model.ln_f(model.embed(idx)))),
                               rtol=0, atol=1e-6)


def test_post_ln_normalises_after_each_block_and_drops_the_final_norm():
    model = tiny(post_ln=True)
    assert isinstance(model.ln_f, nn.Identity)
    x = model.h[0](model.embed(random_ids((1, 8))))
    arr = np.array(x)
    np.testing.assert_allclose(arr.mean(-1), 0, atol=1e-5)
    np.testing.assert_allclose(arr.std(-1), 1, atol=1e-2)


def test_no_attn_scale_uses_raw_dot_products():
    assert tiny(attn_scale=False).h[0].attn.scale == 1.0
    assert tiny().h[0].attn.scale == pytest.approx(1 / 4)


def test_without_the_causal_mask_earlier_positions_see_later_tokens():
    model = tiny(causal=False)
    a, b = random_ids((1, 8), 1), random_ids((1, 8), 1)
    b[0, 7] = (a[0, 7].item() + 1) % VOCAB
    assert not np.allclose(np.array(model(a))[0, 0], np.array(model(b))[0, 0])
    with pytest.raises(MlxgptError, match="--no-causal-mask"):
        next(generate_tokens(model, [1, 2], 3))


def test_switches_lists_the_flags_away_from_the_defaults():
    assert ModelArgs().switches() == []
    args = ModelArgs(pos_embedding="rope", mlp="relu2", logit_softcap=15.0, tie_embeddings=False, causal=False)
    assert args.switches() == ["--pos-embedding rope", "--untie-head", "--mlp relu2", "--logit-softcap 15",
                               "--no-causal-mask"]
    assert set(SWITCH_FLAGS) <= {f for f in ModelArgs.__dataclass_fields__}


@pytest.mark.parametrize("bad, message", [(dict(norm="batchnorm"), "--norm"), (dict(mlp="tanh"), "--mlp"),
                                          (dict(pos_embedding="alibi"), "--pos-embedding"),
                                          (dict(logit_softcap=-1.0), "--logit-softcap"),
                                          (dict(pos_embedding="rope", n_embd=30, n_head=2), "even")])
def test_bad_switch_values_are_refused(bad, message):
    with pytest.raises(MlxgptError, match=message):
        ModelArgs(**{**TINY_MODEL, **bad})


# ---------------------------------------------------------------- through the CLI

MODERN_FLAGS = ["--pos", "rope", "--norm", "rmsnorm", "--qk-norm", "--mlp", "relu2", "--untie-head",
                "--logit-softcap", "15", "--zero-init-proj", "--optimizer", "muon"]


def test_switches_are_saved_resumed_and_generate(tmp_path, text_file):
    out = tmp_path / "run"
    common = ["train.py", "--data", text_file, "--out", out, *TINY_FLAGS, *MODERN_FLAGS, "--eval-interval", "20",
              "--eval-iters", "2", "--lr", "3e-3", "--warmup-iters", "5"]
    result = run_cli(*common, "--max-iters", "20")
    assert result.returncode == 0, result.stderr
    saved = json.loads((out / "latest" / "config.json").read_text())["model"]
    assert saved | dict(pos_embedding="rope", norm="rmsnorm", qk_norm=True, mlp="relu2", tie_embeddings=False,
                        logit_softcap=15.0, zero_init_proj=True) == saved
    resumed = run_cli(*common, "--max-iters", "40", "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads((out / "latest" / "state.json").read_text())["iter"] == 40
    generated = run_cli("generate.py", "--checkpoint", out, "--prompt", "The ", "--max-new-tokens", "20",
                        "--temperature", "0")
    assert generated.returncode == 0, generated.stderr
    assert generated.stdout.startswith("The ") and len(generated.stdout) > 10


def test_checkpoints_from_before_the_switches_load_with_the_defaults(tmp_path, trained_run):
    import shutil

    from mlxgpt import load
    copy = tmp_path / "old"
    shutil.copytree(trained_run / "best", copy)
    config = json.loads((copy / "config.json").read_text())
    for name in ("norm", "qk_norm", "mlp", "logit_softcap", "zero_init_proj", "causal", "post_ln", "attn_scale"):
        config["model"].pop(name)
    (copy / "config.json").write_text(json.dumps(config))
    model, _ = load(copy)
    assert model.args.switches() == []


def test_no_causal_mask_loss_collapses_and_generation_is_refused(tmp_path, text_file):
    """Without the mask the model can read each answer from the next position's input: its
    loss falls far below what a real language model reaches on the same text and steps."""
    def final_val(out, *extra):
        result = run_cli("train.py", "--data", text_file, "--out", out, *TINY_FLAGS, "--max-iters", "300",
                         "--eval-interval", "300", "--eval-iters", "4", "--lr", "3e-3", "--warmup-iters", "10",
                         "--sample-tokens", "50", *extra)
        assert result.returncode == 0, result.stderr
        return json.loads((out / "latest" / "state.json").read_text())["last_val_loss"]

    causal, cheating = final_val(tmp_path / "causal"), final_val(tmp_path / "cheat", "--no-causal-mask")
    assert cheating < 0.5 * causal, (cheating, causal)
    assert json.loads((tmp_path / "cheat" / "latest" / "config.json").read_text())["train"]["sample_tokens"] == 0
    refused = run_cli("generate.py", "--checkpoint", tmp_path / "cheat", "--prompt", "The ")
    assert_clean_failure(refused, "--no-causal-mask")
