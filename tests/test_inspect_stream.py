"""`mlxgpt inspect stream`: the residual stream block by block and the logit lens.

The numbers are checked against the model itself (the lens's last row is the
model's own output; each row of the stream is the previous one through the real
block), on conftest's shared tiny trained run and on small untrained models
built with the architecture switches (post-LN, rotary, RMSNorm, untied head, ...).
"""

from __future__ import annotations

import io

import mlx.core as mx
import numpy as np
import pytest
from rich.console import Console

from conftest import assert_clean_failure, run_cli
from mlxgpt import plots
from mlxgpt.checkpoint import load
from mlxgpt.cli import main
from mlxgpt.config import ModelArgs
from mlxgpt.errors import MlxgptError
from mlxgpt.inspect import stream
from mlxgpt.model import GPT
from picture_checks import check_picture_file, figure_texts

PROMPT = "The old fox calls"  # 17 characters of conftest's grammar text: one more than block_size 16
SHORT = PROMPT[:14]  # fits the context


@pytest.fixture(scope="module")
def trained(trained_run):
    return load(trained_run)


def _model(seed: int = 0, **overrides) -> GPT:
    mx.random.seed(seed)
    args = ModelArgs(**{"vocab_size": 29, "block_size": 12, "n_layer": 3, "n_head": 2, "n_embd": 24, **overrides})
    model = GPT(args)
    model.eval()
    return model


def _ids(model: GPT, n: int, seed: int = 1) -> list[int]:
    return [int(i) for i in np.random.default_rng(seed).integers(0, model.args.vocab_size, n)]


def _own_logits(model: GPT, ids: list[int]) -> np.ndarray:
    logits = model(mx.array(ids, dtype=mx.int32)[None])[0].astype(mx.float32)
    mx.eval(logits)
    return np.array(logits)


# ---------------------------------------------------------------- the numbers


def test_the_lens_after_the_last_block_is_the_model_s_own_output(trained):
    model, tokenizer = trained
    ids = tokenizer.encode(SHORT)
    s = stream.residual_stream(model, ids)
    L, T, C = model.args.n_layer, len(ids), model.args.n_embd
    assert s.shape == (L + 1, T, C) and s.dtype == np.float32
    own = _own_logits(model, ids)
    lens = stream.lens_logits(model, s)
    assert lens.shape == (L + 1, T, model.args.vocab_size)
    np.testing.assert_allclose(lens[-1], own, rtol=1e-5, atol=1e-5)
    probs = stream.logit_lens(model, s)
    np.testing.assert_allclose(probs.sum(axis=-1), 1.0, atol=1e-5)
    want = np.exp(own - own.max(axis=-1, keepdims=True))
    np.testing.assert_allclose(probs[-1], want / want.sum(axis=-1, keepdims=True), atol=1e-6)
    # row 0 is the embedding itself
    np.testing.assert_array_equal(s[0], np.array(model.embed(mx.array(ids)[None])[0]))


@pytest.mark.parametrize("overrides", [
    {"post_ln": True, "pos_embedding": "rope"},  # blocks end in a norm, ln_f is nn.Identity
    {"post_ln": True, "pos_embedding": "sinusoidal", "bias": True},
    {"norm": "rmsnorm", "tie_embeddings": False, "logit_softcap": 15.0, "mlp": "swiglu", "qk_norm": True},
    {"pos_embedding": "rope", "mlp": "relu2", "zero_init_proj": True},
])
def test_the_lens_equals_the_model_with_architecture_switches(overrides):
    model = _model(**overrides)
    if overrides.get("post_ln"):
        assert type(model.ln_f).__name__ == "Identity"
    ids = _ids(model, model.args.block_size)
    s = stream.residual_stream(model, ids)
    assert s.shape == (model.args.n_layer + 1, len(ids), model.args.n_embd)
    np.testing.assert_allclose(stream.lens_logits(model, s)[-1], _own_logits(model, ids), rtol=1e-5, atol=1e-5)
    report = stream.analyse(model, ids, positions=5)
    np.testing.assert_array_equal(report.final_ids, np.argmax(_own_logits(model, ids)[-5:], axis=-1))


def test_each_row_of_the_stream_is_the_previous_one_through_its_block(trained):
    model, tokenizer = trained
    ids = tokenizer.encode(SHORT)
    s = stream.residual_stream(model, ids)
    for l, block in enumerate(model.h):
        np.testing.assert_allclose(np.array(block(mx.array(s[l])[None])[0]), s[l + 1], atol=1e-5)
    # the stream at the end is the embedding plus every block's addition
    additions = np.diff(s.astype(np.float64), axis=0)
    np.testing.assert_allclose(s[0] + additions.sum(axis=0), s[-1], atol=1e-5)
    added = stream.block_contributions(s)
    assert added.shape == (model.args.n_layer, len(ids))
    np.testing.assert_allclose(added, np.linalg.norm(additions, axis=-1))
    relative = stream.block_contributions(s, relative=True)
    np.testing.assert_allclose(relative, added / np.linalg.norm(s[:-1].astype(np.float64), axis=-1))
    assert np.all(added > 0)  # a trained block changes every position
    # causal: a shorter prompt's stream is the start of the longer one's
    np.testing.assert_allclose(stream.residual_stream(model, ids[:5]), s[:, :5], atol=1e-5)


def test_the_report_s_tokens_and_probabilities(trained):
    model, tokenizer = trained
    ids = tokenizer.encode(SHORT)
    report = stream.analyse(model, ids, positions=6)
    L = model.args.n_layer
    assert report.positions == list(range(len(ids) - 6, len(ids)))
    probs = stream.logit_lens(model, report.stream[:, report.positions])
    assert report.top_ids.shape == report.top_p.shape == report.p_final.shape == report.p_next.shape == (L + 1, 6)
    np.testing.assert_array_equal(report.top_ids, probs.argmax(axis=-1))
    np.testing.assert_allclose(report.top_p, probs.max(axis=-1))
    np.testing.assert_array_equal(report.final_ids, report.top_ids[-1])
    np.testing.assert_allclose(report.p_final[-1], report.top_p[-1])  # the last row gives its own top token
    assert np.all(report.p_final <= report.top_p + 1e-7)
    assert report.next_ids == [*ids[len(ids) - 5:], None]
    for k, nxt in enumerate(report.next_ids[:-1]):
        np.testing.assert_allclose(report.p_next[:, k], probs[:, k, nxt])
    assert np.all(np.isnan(report.p_next[:, -1]))
    # asking for more positions than the prompt has shows them all
    assert stream.analyse(model, ids, positions=100).positions == list(range(len(ids)))


def test_bad_prompts_are_one_line_errors(trained):
    model, tokenizer = trained
    with pytest.raises(MlxgptError, match=r"^the prompt is empty: pass --prompt with at least one character$"):
        stream.residual_stream(model, [])
    with pytest.raises(MlxgptError, match=r"^the prompt is 17 tokens, more than the model's context of 16: "
                                          r"shorten it$"):
        stream.residual_stream(model, tokenizer.encode(PROMPT))
    with pytest.raises(MlxgptError, match=r"^--positions must be at least 1, got 0$"):
        stream.analyse(model, tokenizer.encode("The"), positions=0)


# ---------------------------------------------------------------- terminal and picture


@pytest.mark.parametrize("width", [80, 100, 120])
def test_the_tables_fit_the_terminal(trained, width):
    model, tokenizer = trained
    report = stream.analyse(model, tokenizer.encode(SHORT))
    out = io.StringIO()
    Console(file=out, width=width, color_system=None).print(stream.render(report, tokenizer, "title", width=width))
    text = out.getvalue()
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= width
    assert "embedding" in text and "block 1 = model" in text and "next in prompt" in text
    assert "+ block 0" in text and "+ block 1" in text and "= end ‖x‖" in text
    assert "Logit lens" in text and "unembedding" in text
    row = next(k for k, line in enumerate(lines) if line.startswith("block 1 = model"))
    last = tokenizer.token_label(int(report.top_ids[-1, -1]))
    p = stream._short_prob(float(report.top_p[-1, -1]))
    if width >= 100:  # each cell on one line: token and probability
        assert lines[row].rstrip().endswith(f"{last} {p}")
    else:  # token over probability
        assert lines[row].rstrip().endswith(last) and lines[row + 1].rstrip().endswith(p)


def test_a_narrow_terminal_stacks_the_cells_and_then_shows_fewer_positions(trained):
    model, tokenizer = trained
    report = stream.analyse(model, tokenizer.encode(SHORT), positions=14)
    for width in (60, 40):
        out = io.StringIO()
        Console(file=out, width=width, color_system=None).print(stream.render(report, tokenizer, "t", width=width))
        text = out.getvalue()
        assert max(len(line) for line in text.splitlines()) <= width
        assert f"of the 14 positions asked for fit in {width} columns" in " ".join(text.split())


def test_the_picture_shows_the_lens_and_the_additions(trained):
    model, tokenizer = trained
    report = stream.analyse(model, tokenizer.encode(SHORT), positions=8)
    fig = stream.picture(report, tokenizer, "Logit lens for 'The old fox'")
    lens_ax, added_ax = [a for a in fig.axes if a.images]
    np.testing.assert_allclose(lens_ax.images[0].get_array(), report.p_final)
    assert lens_ax.images[0].get_clim() == (0.0, 1.0)
    np.testing.assert_allclose(added_ax.images[0].get_array(), report.contributions[:, report.positions])
    assert [t.get_text() for t in lens_ax.get_yticklabels()] == ["embedding", "block 0", "block 1 = model"]
    assert [t.get_text() for t in added_ax.get_yticklabels()] == ["+ block 0", "+ block 1"]
    cells = [t.get_text() for t in lens_ax.texts]  # the top token written in every cell, row by row
    assert cells == [tokenizer.token_label(int(i)) for i in report.top_ids.ravel()]
    texts = figure_texts(fig)
    assert "Logit lens for 'The old fox'" in texts and "p(final prediction)" in texts


def test_the_view_runs_and_saves_a_picture(trained_run, tmp_path, capsys):
    picture = tmp_path / "pictures" / "stream.png"
    assert main(["inspect", "stream", "--checkpoint", str(trained_run), "--prompt", SHORT, "--positions", "6",
                 "--save", str(picture)]) == 0
    out = capsys.readouterr().out
    assert "Logit lens" in out and "block 1 = model" in out and "+ block 1" in out
    assert f"picture saved to {picture}" in out
    check_picture_file(picture, min_width=500)
    svg = tmp_path / "stream.svg"
    assert main(["inspect", "stream", "--checkpoint", str(trained_run), "--prompt", "The fox", "--save",
                 str(svg)]) == 0
    check_picture_file(svg, "Logit lens for 'The␣fox'", "p(final prediction)", "+ block 1")


def test_tokens_with_dollar_signs_are_drawn_as_typed(tmp_path):
    """matplotlib reads "$...$" as maths; a token must be shown as it is."""
    p_final = np.array([[0.1, 0.2, 0.3], [0.5, 0.9, 1.0]])
    fig = plots.logit_lens_picture(p_final, [["$", "x", "$"], ["$x", "y", "$"]], np.array([[1.0, 2.0, 3.0]]),
                                   ["embedding", "block 0 = model"], ["$", "x", "$"], ["x", "$", "?"],
                                   "Logit lens for '$x$'")
    check_picture_file(plots.save(fig, tmp_path / "dollars.svg"), "Logit lens for '$x$'", "$x", "block 0 = model")


def test_a_prompt_longer_than_the_context_is_cut_with_a_note(trained_run, capsys):
    assert main(["inspect", "stream", "--checkpoint", str(trained_run), "--prompt", PROMPT]) == 0
    out = capsys.readouterr().out
    assert "longer than the context (16 tokens): showing its last tokens" in out
    assert "prompt (16 tokens): he␣old␣fox␣calls" in out


def test_the_view_fails_cleanly(trained_run, tmp_path):
    result = run_cli("-m", "mlxgpt", "inspect", "stream", "--checkpoint", trained_run, "--prompt", "")
    assert_clean_failure(result, "the prompt is empty")
    result = run_cli("-m", "mlxgpt.inspect", "stream", "--checkpoint", trained_run, "--prompt", "zébra")
    assert_clean_failure(result, "not in the model's vocabulary")
    result = run_cli("-m", "mlxgpt", "inspect", "stream", "--checkpoint", trained_run, "--prompt", "The",
                     "--positions", "0")
    assert_clean_failure(result, "--positions must be at least 1, got 0")
    result = run_cli("-m", "mlxgpt", "inspect", "stream", "--checkpoint", trained_run, "--prompt", "The",
                     "--save", tmp_path / "x.gif")
    assert_clean_failure(result, "x.gif: pictures are .png, .svg or .pdf")
    result = run_cli("-m", "mlxgpt", "inspect", "stream", "--checkpoint", trained_run)
    assert result.returncode != 0 and "--prompt" in result.stderr and "Traceback" not in result.stderr
