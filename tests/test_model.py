"""The GPT itself: causality, initial loss, parameter count, initialisation, the KV cache."""

from __future__ import annotations

import math

import mlx.core as mx
import numpy as np
import pytest
from conftest import TINY_MODEL

from mlxgpt.config import ModelArgs
from mlxgpt.errors import MlxgptError
from mlxgpt.model import GPT, KVCache, attention_weights, sinusoidal_positions
from mlxgpt.training import loss_fn

VOCAB = 20


def tiny_model(seed: int = 0, vocab_size: int = VOCAB, **overrides) -> GPT:
    mx.random.seed(seed)
    model = GPT(ModelArgs(vocab_size=vocab_size, **{**TINY_MODEL, **overrides}))
    model.eval()
    return model


def change_from(idx: np.ndarray, t: int, rng: np.random.Generator) -> np.ndarray:
    """A copy of idx whose tokens at positions >= t all differ from the original."""
    changed = idx.copy()
    shift = rng.integers(1, VOCAB, size=changed[:, t:].shape)
    changed[:, t:] = (changed[:, t:] + shift) % VOCAB
    assert (changed[:, t:] != idx[:, t:]).all()
    return changed


@pytest.mark.parametrize("pos_embedding", ["learned", "sinusoidal"])
def test_changing_future_tokens_leaves_earlier_logits_unchanged(pos_embedding):
    model = tiny_model(pos_embedding=pos_embedding)
    rng = np.random.default_rng(0)
    idx = rng.integers(0, VOCAB, size=(2, 16))
    base = np.array(model(mx.array(idx)))
    for t in (1, 8, 15):
        out = np.array(model(mx.array(change_from(idx, t, rng))))
        np.testing.assert_allclose(out[:, :t], base[:, :t], rtol=0, atol=1e-6)
        # ...while the first changed position does see its new token
        assert np.abs(out[:, t] - base[:, t]).max() > 1e-3


def test_causal_mask_also_holds_on_the_dropout_path():
    """With dropout in training mode the model uses explicit attention weights
    (so dropout can act on them); the mask must hold there too. Reseeding makes
    both forwards draw the same dropout masks."""
    model = tiny_model(dropout=0.2)
    model.train()
    rng = np.random.default_rng(1)
    idx = rng.integers(0, VOCAB, size=(2, 16))
    mx.random.seed(42)
    base = np.array(model(mx.array(idx)))
    mx.random.seed(42)
    out = np.array(model(mx.array(change_from(idx, 9, rng))))
    np.testing.assert_allclose(out[:, :9], base[:, :9], rtol=0, atol=1e-6)
    assert np.abs(out[:, 9] - base[:, 9]).max() > 1e-3


def test_attention_weights_are_causal_rows_of_probabilities():
    rng = np.random.default_rng(2)
    q = mx.array(rng.normal(size=(1, 2, 3, 4)).astype(np.float32))  # the last 3 of 5 positions
    k = mx.array(rng.normal(size=(1, 2, 5, 4)).astype(np.float32))
    w = np.array(attention_weights(q, k, 0.5))
    np.testing.assert_allclose(w.sum(-1), 1.0, atol=1e-6)
    for i in range(3):  # query i sits at absolute position 2 + i
        assert (w[..., i, 3 + i:] == 0).all()
        assert (w[..., i, : 3 + i] > 0).all()
    # the same queries placed explicitly (as mlxgpt/fast's StaticKVCache does, start as an array)
    np.testing.assert_array_equal(np.array(attention_weights(q, k, 0.5, mx.array([2]))), w)




def test_more_tokens_than_block_size_is_refused():
    model = tiny_model()
    with pytest.raises(ValueError, match="block_size"):
        model(mx.zeros((1, 17), dtype=mx.int32))
    cache = model.make_cache()
    model(mx.zeros((1, 16), dtype=mx.int32), cache)
    with pytest.raises(ValueError, match="block_size"):
        model(mx.zeros((1, 1), dtype=mx.int32), cache)


def test_untrained_loss_is_about_ln_vocab():
    """GPT-2 init gives near-uniform predictions: the loss starts at ln(V) (4.17 for 65)."""
    model = tiny_model(vocab_size=65)
    rng = np.random.default_rng(4)
    x = mx.array(rng.integers(0, 65, size=(8, 16)))
    y = mx.array(rng.integers(0, 65, size=(8, 16)))
    loss = loss_fn(model, x, y).item()
    assert abs(loss - math.log(65)) < 0.05, loss


@pytest.fixture(scope="module")
def shakespeare_char_model() -> GPT:
    mx.random.seed(0)
    return GPT(ModelArgs(vocab_size=65))  # the defaults are nanoGPT's shakespeare-char model


def test_parameter_count_matches_nanogpt(shakespeare_char_model):
    model = shakespeare_char_model
    assert round(model.num_params() / 1e6, 2) == 10.65  # nanoGPT: "number of parameters: 10.65M"
    assert model.num_params(non_embedding=False) - model.num_params() == 256 * 384  # the position table


def test_gpt2_initialisation(shakespeare_char_model):
    params = dict(shakespeare_char_model.parameters()["h"][0]["attn"].items())
    assert params["c_attn"]["weight"].std().item() == pytest.approx(0.02, rel=0.02)
    # residual projections are scaled by 1/sqrt(2 * n_layer)
    assert params["c_proj"]["weight"].std().item() == pytest.approx(0.02 / math.sqrt(12), rel=0.02)
    assert shakespeare_char_model.wte.weight.std().item() == pytest.approx(0.02, rel=0.02)
    assert (np.array(shakespeare_char_model.h[0].ln_1.weight) == 1).all()


def test_weight_tying_and_bias_flags():
    tied = tiny_model()
    names = {k for k, _ in _flat(tied)}
    assert "lm_head.weight" not in names and not any(n.endswith("bias") for n in names)
    x = mx.array([[1, 2, 3]])
    hidden = tied.ln_f(_hidden(tied, x))
    np.testing.assert_allclose(np.array(tied(x)), np.array(hidden @ tied.wte.weight.T), atol=1e-5)

    untied = tiny_model(tie_embeddings=False, bias=True)
    names = {k for k, _ in _flat(untied)}
    assert "lm_head.weight" in names and "h.0.attn.c_attn.bias" in names and "ln_f.bias" in names


def _flat(model: GPT):
    from mlx.utils import tree_flatten

    return tree_flatten(model.parameters())


def _hidden(model: GPT, idx: mx.array) -> mx.array:
    x = model.embed(idx)
    for block in model.h:
        x = block(x)
    return x


def test_sinusoidal_positions_follow_the_formula():
    pe = np.array(sinusoidal_positions(mx.arange(10), 8))
    p, i = np.arange(10)[:, None], np.arange(0, 8, 2)[None, :]
    angles = p / 10000 ** (i / 8)
    np.testing.assert_allclose(pe[:, 0::2], np.sin(angles), atol=1e-5)
    np.testing.assert_allclose(pe[:, 1::2], np.cos(angles), atol=1e-5)
    model = tiny_model(pos_embedding="sinusoidal")
    assert "wpe" not in model.parameters()
    assert model.num_params() == model.num_params(non_embedding=False)


def test_kv_cache_grows_past_its_preallocation_and_resets():
    cache = KVCache()
    rng = np.random.default_rng(5)
    chunks = [rng.normal(size=(1, 2, n, 4)).astype(np.float32) for n in (200, 100, 1)]  # 301 > one 256 chunk
    for chunk in chunks:
        keys, values = cache.update_and_fetch(mx.array(chunk), mx.array(-chunk))
    expected = np.concatenate(chunks, axis=2)
    assert cache.offset == 301
    np.testing.assert_array_equal(np.array(keys), expected)
    np.testing.assert_array_equal(np.array(values), -expected)
    cache.reset()
    keys, _ = cache.update_and_fetch(mx.array(chunks[2]), mx.array(chunks[2]))
    assert cache.offset == 1
    np.testing.assert_array_equal(np.array(keys), chunks[2])


@pytest.mark.parametrize("bad, message", [
    (dict(n_embd=30, n_head=4), "divisible"),
    (dict(pos_embedding="rotary"), "pos-embedding"),
    (dict(pos_embedding="sinusoidal", n_embd=33, n_head=3), "even"),
    (dict(dropout=1.0), "dropout"),
    (dict(n_layer=0), "n_layer"),
])
def test_model_args_reject_impossible_shapes(bad, message):
    with pytest.raises(MlxgptError, match=message):
        ModelArgs(**{**dict(vocab_size=VOCAB, **TINY_MODEL), **bad})


def test_model_args_from_dict_ignores_unknown_keys():
    args = ModelArgs.from_dict({"vocab_size": 7, "n_embd": 64, "n_head": 4, "rope_theta": 1e4})
    assert (args.vocab_size, args.n_embd, args.n_head) == (7, 64, 4)
