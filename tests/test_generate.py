"""Generation: the KV cache agrees with full recomputation (also past block_size),
seeded sampling is reproducible, and the streaming API and CLI behave."""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest
from conftest import run_cli

import mlxgpt
from mlxgpt.errors import MlxgptError
from mlxgpt.generate import generate, generate_tokens
from mlxgpt.tokenizers import UnknownCharactersError

BLOCK = 16


@pytest.fixture(scope="module", params=["learned", "sinusoidal"])
def loaded(request, trained_run, trained_run_sinusoidal):
    run = trained_run if request.param == "learned" else trained_run_sinusoidal
    model, tokenizer = mlxgpt.load(run)
    assert model.args.pos_embedding == request.param and model.args.block_size == BLOCK
    return model, tokenizer


def tokens_and_logprobs(model, prompt_ids, n, **kwargs):
    pairs = list(generate_tokens(model, prompt_ids, n, **kwargs))
    return [t for t, _ in pairs], np.stack([np.array(lp) for _, lp in pairs])


@pytest.mark.parametrize("keep", [None, BLOCK, 5, 1])
def test_kv_cache_greedy_equals_full_recompute_past_block_size(loaded, keep):
    model, tokenizer = loaded
    prompt = tokenizer.encode("The old fox ")
    cached, cached_lp = tokens_and_logprobs(model, prompt, 3 * BLOCK, temperature=0, keep=keep)
    full, full_lp = tokens_and_logprobs(model, prompt, 3 * BLOCK, temperature=0, keep=keep, use_cache=False)
    assert len(cached) == 3 * BLOCK  # the window slid at least twice
    assert cached == full
    np.testing.assert_allclose(cached_lp, full_lp, rtol=0, atol=1e-4)


def test_kv_cache_sampling_equals_full_recompute(loaded):
    model, tokenizer = loaded
    prompt = tokenizer.encode("The ")
    kwargs = dict(temperature=0.9, top_k=10, seed=5)
    cached, _ = tokens_and_logprobs(model, prompt, 2 * BLOCK + 3, **kwargs)
    full, _ = tokens_and_logprobs(model, prompt, 2 * BLOCK + 3, use_cache=False, **kwargs)
    assert cached == full


def test_keep_block_size_is_nanogpt_cropping(loaded):
    """keep=block_size means: each token is predicted from the last block_size tokens,
    exactly nanoGPT's sample.py loop (written out here as the reference)."""
    model, tokenizer = loaded
    tokens = tokenizer.encode("The maid ")
    expected = []
    for _ in range(2 * BLOCK):
        logits = model(mx.array(tokens[-BLOCK:])[None])[0, -1]
        tokens.append(int(mx.argmax(logits).item()))
        expected.append(tokens[-1])
    got, _ = tokens_and_logprobs(model, tokenizer.encode("The maid "), 2 * BLOCK, temperature=0, keep=BLOCK)
    assert got == expected


def test_temperature_zero_picks_the_argmax(loaded):
    model, tokenizer = loaded
    prompt = tokenizer.encode("T")
    first, logprobs = next(generate_tokens(model, prompt, 1, temperature=0))
    logits = model(mx.array(prompt)[None])[0, -1]
    assert first == int(mx.argmax(logits).item())
    np.testing.assert_allclose(np.array(logprobs), np.array(logits - mx.logsumexp(logits)), atol=1e-5)


def test_prompt_longer_than_block_size_keeps_its_last_block(loaded):
    model, tokenizer = loaded
    long_prompt = tokenizer.encode("The proud king likes the small dog. The ")
    assert len(long_prompt) > BLOCK
    got, _ = tokens_and_logprobs(model, long_prompt, 20, temperature=0)
    cropped, _ = tokens_and_logprobs(model, long_prompt[-BLOCK:], 20, temperature=0)
    assert got == cropped


def test_seeded_generation_is_reproducible(loaded):
    model, tokenizer = loaded
    text = lambda seed: "".join(p.text for p in generate(model, tokenizer, "The ", 60, temperature=1.0, seed=seed))
    assert text(3) == text(3)
    assert text(3) != text(4)


def test_generate_streams_decoded_pieces(trained_run):
    model, tokenizer = mlxgpt.load(trained_run)
    pieces = list(generate(model, tokenizer, "The ", 25, temperature=0.8, seed=1))
    assert len(pieces) == 25
    assert "".join(p.text for p in pieces) == tokenizer.decode([p.token for p in pieces])
    for piece in pieces:
        assert np.exp(np.array(piece.logprobs)).sum() == pytest.approx(1.0, abs=1e-4)
        assert piece.tokens_per_s > 0


def test_generate_stops_at_the_stop_string_and_restores_training_mode(trained_run):
    model, tokenizer = mlxgpt.load(trained_run)
    model.train()
    text = "".join(p.text for p in generate(model, tokenizer, "The ", 200, temperature=0.8, seed=2, stop="."))
    assert text.endswith(".") and text.count(".") == 1
    assert model.training  # generate() switches to eval mode only while it runs


def test_unknown_prompt_characters_are_named(trained_run):
    model, tokenizer = mlxgpt.load(trained_run)
    with pytest.raises(UnknownCharactersError, match="'Z'.*'€'"):
        list(generate(model, tokenizer, "The €Zebra", 5))
    with pytest.raises(MlxgptError, match="empty"):
        list(generate(model, tokenizer, "", 5))


def test_load_finds_best_then_latest(trained_run):
    best, _ = mlxgpt.load(trained_run)
    direct, tokenizer = mlxgpt.load(trained_run / "best")
    latest, _ = mlxgpt.load(trained_run / "latest")
    x = mx.array([tokenizer.encode("The dog sees ")])
    np.testing.assert_array_equal(np.array(best(x)), np.array(direct(x)))
    # the run's last eval was its best, so both checkpoints hold the same weights here
    np.testing.assert_array_equal(np.array(best(x)), np.array(latest(x)))


# ---------------------------------------------------------------- the generate.py CLI


def test_cli_greedy_is_deterministic_and_matches_no_cache(trained_run):
    args = ["generate.py", "--checkpoint", trained_run, "--prompt", "The ", "--temperature", "0",
            "--max-new-tokens", "40"]
    first, second, no_cache = run_cli(*args), run_cli(*args), run_cli(*args, "--no-cache")
    for result in (first, second, no_cache):
        assert result.returncode == 0, result.stderr
    assert first.stdout.startswith("The ") and len(first.stdout) == len("The ") + 40 + 1
    assert first.stdout == second.stdout == no_cache.stdout


def test_cli_seeded_samples_and_stop(trained_run):
    args = ["generate.py", "--checkpoint", trained_run, "--prompt", "The ", "--seed", "1", "--num-samples", "2",
            "--max-new-tokens", "80", "--stop", "."]
    first, second = run_cli(*args), run_cli(*args)
    assert first.returncode == 0, first.stderr
    assert first.stdout == second.stdout
    samples = first.stdout.split("\n---------------\n")
    assert len(samples) == 2
    for sample in samples:
        assert sample.startswith("The ") and sample.rstrip("\n").endswith(".")
    assert samples[0] != samples[1]  # seeds 1 and 2


def test_cli_prompt_file(trained_run, tmp_path):
    prompt = tmp_path / "prompt.txt"
    prompt.write_text("The queen ", encoding="utf-8")
    from_file = run_cli("generate.py", "--checkpoint", trained_run, "--prompt-file", prompt, "--temperature", "0",
                        "--max-new-tokens", "20")
    inline = run_cli("generate.py", "--checkpoint", trained_run, "--prompt", "The queen ", "--temperature", "0",
                     "--max-new-tokens", "20")
    assert from_file.returncode == 0, from_file.stderr
    assert from_file.stdout == inline.stdout and from_file.stdout.startswith("The queen ")
