"""mlxgpt/fast against the textbook path: every speed trick computes what the plain code does.

The plain path (--plain) stays runnable and is the reference: a step split over CPU
streams trains like the textbook step, compiled decoding with a fixed-shape cache gives
the eager model's logits, single-row matmuls and the fused attention kernel give the
same numbers as nn.Linear and the written-out softmax."""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np
import pytest
from conftest import TINY_FLAGS, run_cli
from mlx.utils import tree_flatten, tree_map
from test_model import VOCAB, tiny_model
from test_training import assert_trains_alike

from mlxgpt.fast import decoding, streams
from mlxgpt.fast.decoding import StaticKVCache, make_static_cache
from mlxgpt.generate import generate_tokens
from mlxgpt.training import make_train_step
from mlxgpt.ui.metrics import read_metrics


# ---------------------------------------------------------------- training on CPU streams


@pytest.mark.parametrize("count", [2, 3])
def test_the_fast_step_trains_like_the_textbook_step(count):
    """Shards on concurrent streams (each padded differently) with dealt-out clipping and
    AdamW give the textbook step's losses, gradient norms and parameters, to float tolerance.
    (atol: the shards' sums differ at float level, and Adam moves an entry whose gradient
    is near zero by up to ~lr = 1e-3 per step either way, so a few such entries drift by
    ~1e-5; the losses and norms are the tight check.)"""
    textbook = lambda model, optimizer: make_train_step(model, optimizer, grad_clip=1.0)  # noqa: E731
    fast = lambda model, optimizer: streams.make_train_step(model, optimizer, 1.0, streams=count)  # noqa: E731
    assert_trains_alike((textbook, fast), (lambda a: a[None],) * 2, batch_size=6, atol=1e-4)


@pytest.mark.parametrize("pos_embedding", ["learned", "sinusoidal"])
def test_padding_positions_leave_the_logits_unchanged(pos_embedding):
    """k zero vectors after a full block (so past block_size) are computed and dropped:
    earlier positions never see later ones, so the logits are the model's own."""
    model = tiny_model(pos_embedding=pos_embedding)
    idx = mx.array(np.random.default_rng(8).integers(0, VOCAB, size=(2, 16)))
    base = np.array(model(idx))
    for pad in (0, 1, 3):
        padded = streams.padded_logits(model, idx, pad)
        assert padded.shape == base.shape
        np.testing.assert_allclose(np.array(padded), base, rtol=0, atol=1e-5)


def test_adamw_dealt_over_streams_matches_mlx_adamw_exactly():
    """Spreading the per-parameter updates over streams changes where they run, not what they compute."""
    mx.random.seed(3)
    params = {"w": mx.random.normal((8, 4)), "b": mx.random.normal((4,)), "e": mx.random.normal((5, 8))}
    grads = tree_map(lambda p: mx.random.normal(p.shape), params)
    ours = optim.AdamW(learning_rate=1e-2, weight_decay=0.1, bias_correction=True)
    streams.deal_updates(ours, streams.dealer(streams.cpu_streams(2)))
    theirs = optim.AdamW(learning_rate=1e-2, weight_decay=0.1, bias_correction=True)
    p_ours, p_theirs = params, params
    for _ in range(3):
        p_ours, p_theirs = ours.apply_gradients(grads, p_ours), theirs.apply_gradients(grads, p_theirs)
    for (name, a), (_, b) in zip(tree_flatten(p_ours), tree_flatten(p_theirs)):
        assert np.array_equal(np.array(a), np.array(b)), name


# ---------------------------------------------------------------- decoding


@pytest.mark.parametrize("pos_embedding", ["learned", "sinusoidal"])
def test_static_cache_chunks_give_the_same_logits_as_one_full_forward(pos_embedding):
    """A StaticKVCache attends over all its slots: the causal mask must hide the unfilled ones."""
    model = tiny_model(pos_embedding=pos_embedding)
    idx = mx.array(np.random.default_rng(3).integers(0, VOCAB, size=(1, 16)))
    full = np.array(model(idx))
    cache = make_static_cache(model)
    pieces = [np.array(model(idx[:, a:b], cache)) for a, b in ((0, 5), (5, 9), (9, 10), (10, 16))]
    assert cache[0].offset.item() == 16
    np.testing.assert_allclose(np.concatenate(pieces, axis=1), full, rtol=0, atol=1e-5)


def test_compiled_static_cache_step_matches_the_eager_forward():
    """One token through a StaticKVCache inside mx.compile (the cache's arrays as compile
    state) gives the full forward's logits at every position, with one trace for all of
    them; reset() empties the cache for reuse."""
    model = tiny_model()
    idx = mx.array(np.random.default_rng(6).integers(0, VOCAB, size=(1, 16)))
    full = np.array(model(idx))[0]
    cache = make_static_cache(model)
    state = [layer.state for layer in cache]
    traces = []

    def one_token(token: mx.array) -> mx.array:
        traces.append(1)
        return model(token.reshape(1, 1), cache)[0, -1]

    step = mx.compile(one_token, inputs=state, outputs=state)
    for _ in range(2):
        model(idx[:, :3], cache)  # an eager prefill of 3 tokens, then 13 compiled steps
        logits = [np.array(step(idx[:, t])) for t in range(3, 16)]
        np.testing.assert_allclose(np.stack(logits), full[3:], rtol=0, atol=1e-5)
        for layer in cache:
            layer.reset()
    assert len(traces) == 1


def test_static_kv_cache_writes_at_its_offset():
    cache = StaticKVCache(batch=1, heads=2, capacity=8, head_size=4, dtype=mx.float32)
    rng = np.random.default_rng(7)
    chunks = [rng.normal(size=(1, 2, n, 4)).astype(np.float32) for n in (3, 1, 2)]
    for chunk in chunks:
        keys, values = cache.update_and_fetch(mx.array(chunk), mx.array(-chunk))
    expected = np.concatenate(chunks, axis=2)
    assert keys.shape == (1, 2, 8, 4) and cache.offset.item() == 6
    np.testing.assert_array_equal(np.array(keys)[:, :, :6], expected)
    np.testing.assert_array_equal(np.array(values)[:, :, :6], -expected)
    cache.reset()
    assert cache.offset.item() == 0


@pytest.mark.parametrize("bias", [False, True])
def test_row_linear_computes_what_nn_linear_does(bias):
    linear = nn.Linear(8, 5, bias=bias)
    holder = nn.Module()
    holder.proj = linear
    x_row, x_rows = mx.random.normal((1, 1, 8)), mx.random.normal((2, 3, 8))
    expected_row, expected_rows = np.array(linear(x_row)), np.array(linear(x_rows))
    decoding.use_row_matmul(holder)
    assert type(holder.proj) is decoding.RowLinear
    np.testing.assert_allclose(np.array(holder.proj(x_row)), expected_row, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(np.array(holder.proj(x_rows)), expected_rows)


@pytest.mark.parametrize("with_cache", [False, True])
def test_fused_attention_computes_the_written_out_softmax(with_cache):
    """mx.fast.scaled_dot_product_attention (what a GPU gets) runs on the CPU too: it must give
    the written-out attention's logits, with and without a cache (prefill, then single tokens)."""
    model = tiny_model()
    idx = mx.array(np.random.default_rng(9).integers(0, VOCAB, size=(1, 16)))
    expected = np.array(model(idx))
    decoding.use_fused_attention(model)
    if with_cache:
        cache = model.make_cache()
        got = np.concatenate([np.array(model(idx[:, :10], cache))]
                             + [np.array(model(idx[:, t:t + 1], cache)) for t in range(10, 16)], axis=1)
    else:
        got = np.array(model(idx))
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("temperature", [0.0, 0.8])
def test_fast_and_plain_generation_draw_the_same_tokens(temperature):
    """The compiled, fixed-shape decoding picks the plain loop's tokens (greedy and sampled,
    same seed), across a window slide (40 tokens with block 16)."""
    prompt = [1, 2, 3]
    plain = [t for t, _ in generate_tokens(tiny_model(), prompt, 40, temperature=temperature, seed=5, fast=False)]
    fast = [t for t, _ in generate_tokens(tiny_model(), prompt, 40, temperature=temperature, seed=5, fast=True)]
    assert fast == plain and len(plain) == 40


# ---------------------------------------------------------------- through the CLI


def test_plain_and_fast_training_runs_give_the_same_losses(tmp_path, text_file):
    """train.py --plain (the textbook step) and the default (2 CPU streams, padded shards,
    dealt updates): the same step losses on real text, to float tolerance."""
    flags = ["train.py", "--data", text_file, *TINY_FLAGS, "--max-iters", "8", "--log-interval", "1",
             "--eval-iters", "2", "--eval-interval", "4"]
    losses = {}
    for name, extra in (("plain", ["--plain"]), ("fast", ["--cpu-streams", "2"])):
        result = run_cli(*flags, "--out", tmp_path / name, *extra)
        assert result.returncode == 0, result.stderr
        losses[name] = [(r["iter"], r["train_loss"]) for r in read_metrics(tmp_path / name / "metrics.jsonl")
                        if r["event"] == "step"]
    started = read_metrics(tmp_path / "plain" / "metrics.jsonl")[0]
    assert started["parallelism"].startswith("plain")
    assert [i for i, _ in losses["plain"]] == [i for i, _ in losses["fast"]] == list(range(1, 9))
    np.testing.assert_allclose([l for _, l in losses["fast"]], [l for _, l in losses["plain"]], rtol=1e-5)
    assert losses["plain"][-1][1] < losses["plain"][0][1]  # and it learns


def test_generate_plain_prints_what_the_fast_path_prints(trained_run):
    outputs = [run_cli("generate.py", "--checkpoint", trained_run, "--prompt", "The ", "--max-new-tokens", "30",
                       "--seed", "3", *extra) for extra in ([], ["--plain"])]
    assert all(result.returncode == 0 for result in outputs), [r.stderr for r in outputs]
    assert outputs[0].stdout == outputs[1].stdout and len(outputs[0].stdout) > 30
