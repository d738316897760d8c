"""`mlxgpt inspect`: the numbers behind each view, and every view run on a tiny trained checkpoint.

The checkpoints are conftest's shared session runs (`trained_run`: learned
positions, `trained_run_sinusoidal`), trained through the real train.py on a
generated grammar text, so no extra training happens here.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
from matplotlib.colors import to_rgba

from conftest import REPO_ROOT, assert_clean_failure, run_cli
from mlxgpt import plots
from mlxgpt.checkpoint import load
from mlxgpt.cli import main
from mlxgpt.config import ModelArgs
from mlxgpt.errors import MlxgptError
from mlxgpt.inspect import attention, embeddings, next_token, params, positions
from mlxgpt.model import GPT, sinusoidal_positions
from picture_checks import check_picture_file, figure_texts

PROMPT = "The old fox"  # every character occurs in conftest's grammar text; within block_size 16


# ---------------------------------------------------------------- parameter tally


def test_gpt3_tally_is_exact_and_computed_from_the_shape():
    t = params.tally(params.GPT3)
    counts = {r.key: r.count for r in t.families}
    assert counts == {
        "embedding": 617_558_016,
        "query": 14_495_514_624, "key": 14_495_514_624, "value": 14_495_514_624, "output": 14_495_514_624,
        "mlp_up": 57_982_058_496, "mlp_down": 57_982_058_496,
        "unembedding": 617_558_016,
    }
    assert t.families_total == 175_181_291_520
    # the same code on another shape gives other numbers: nothing is hard-coded
    half = params.tally(dataclasses.replace(params.GPT3, n_layer=48))
    assert half.families_total == 175_181_291_520 - 48 * (4 * 96 * 12288 * 128 + 2 * 12288 * 49152)
    source = Path(params.__file__).read_text(encoding="utf-8")
    for literal in ("175181291520", "175_181_291_520", "14495514624", "14_495_514_624", "57982058496",
                    "57_982_058_496", "617558016", "617_558_016"):
        assert literal not in source  # as a Python number (the docstring may quote the figure)


@pytest.mark.parametrize("overrides", [
    {},  # nanoGPT style: no biases, tied, learned positions
    {"bias": True},
    {"tie_embeddings": False},
    {"pos_embedding": "sinusoidal"},
    {"bias": True, "tie_embeddings": False, "pos_embedding": "sinusoidal", "n_head": 4},
    {"pos_embedding": "rope", "norm": "rmsnorm", "qk_norm": True, "mlp": "swiglu", "bias": True},
    {"mlp": "swiglu", "post_ln": True, "tie_embeddings": False},
    {"norm": "rmsnorm", "bias": True, "mlp": "relu2", "qk_norm": True},
])
def test_tally_of_a_small_model_equals_its_real_parameter_count(overrides):
    args = ModelArgs(**{"vocab_size": 29, "block_size": 12, "n_layer": 3, "n_head": 2, "n_embd": 24, **overrides})
    model = GPT(args)
    t = params.tally(params.Shape.from_args(args))
    real = params.model_counts(model)
    assert real["unknown"] == 0
    for row in t.families + t.others:
        assert real[row.key] == row.count, row.key
    assert t.total == params.stored_total(model) == sum(w.size for _, w in _flat(model))
    assert real["shared"] == t.shared == (args.vocab_size * args.n_embd if args.tie_embeddings else 0)


def _flat(model):
    from mlx.utils import tree_flatten

    return tree_flatten(model.parameters())


# ---------------------------------------------------------------- attention


@pytest.fixture(scope="module")
def trained(trained_run):
    return load(trained_run)


def test_attention_rows_sum_to_one_and_respect_the_causal_mask(trained):
    model, tokenizer = trained
    ids = tokenizer.encode(PROMPT)
    maps = attention.attention_maps(model, ids)
    T = len(ids)
    assert maps.shape == (model.args.n_layer, model.args.n_head, T, T)
    np.testing.assert_allclose(maps.sum(axis=-1), 1.0, atol=1e-5)
    assert np.all(maps[..., attention.causal_mask(T)] == 0.0)  # no weight on future tokens
    assert np.all(maps >= 0.0)
    # causality seen from outside: appending tokens leaves the earlier rows unchanged
    shorter = attention.attention_maps(model, ids[:5])
    np.testing.assert_allclose(maps[..., :5, :5], shorter, atol=1e-5)


def test_attention_rejects_missing_layers_and_heads(trained):
    model, tokenizer = trained
    maps = attention.attention_maps(model, tokenizer.encode("The"))
    assert attention.select(maps, 1, 0) == [(1, 0)]
    assert len(attention.select(maps, None, None)) == model.args.n_layer * model.args.n_head
    with pytest.raises(MlxgptError, match=r"^--layer 5 does not exist: this model has layers 0 to 1$"):
        attention.select(maps, 5, None)
    with pytest.raises(MlxgptError, match=r"^--head -1 does not exist: this model has heads 0 to 1$"):
        attention.select(maps, None, -1)  # not Python's "last head"


# ---------------------------------------------------------------- embeddings


def test_nearest_neighbour_of_a_token_is_itself_at_similarity_one(trained):
    model, tokenizer = trained
    E = embeddings.embedding_matrix(model)
    for token in range(tokenizer.vocab_size):
        rows = embeddings.nearest(E, token, k=5)
        assert rows[0] == (token, 1.0)
        sims = [s for _, s in rows]
        assert sims == sorted(sims, reverse=True)
        assert all(-1.0 - 1e-9 <= s <= 1.0 + 1e-9 for s in sims)


def test_analogy_leaves_out_its_inputs_and_pca_explains_variance(trained):
    model, tokenizer = trained
    E = embeddings.embedding_matrix(model)
    a, b, c = (tokenizer.encode(ch)[0] for ch in "aTt")
    rows = embeddings.analogy(E, a, b, c, k=5)
    assert len(rows) == 5 and not {a, b, c} & {i for i, _ in rows}
    coords, share = embeddings.pca_2d(E)
    assert coords.shape == (tokenizer.vocab_size, 2)
    assert 0 < share[1] <= share[0] and share[0] + share[1] <= 1 + 1e-9


def test_tokens_can_be_named_by_text_label_or_escape(trained):
    _, tokenizer = trained
    space, newline = tokenizer.encode(" ")[0], tokenizer.encode("\n")[0]
    assert embeddings.resolve_token(tokenizer, " ") == space
    assert embeddings.resolve_token(tokenizer, "␣") == embeddings.resolve_token(tokenizer, "space") == space
    assert embeddings.resolve_token(tokenizer, "\\n") == embeddings.resolve_token(tokenizer, "⏎") == newline
    with pytest.raises(MlxgptError, match=r"^'fox' is 3 tokens \(f o x\), not one: pass a single token$"):
        embeddings.resolve_token(tokenizer, "fox")


# ---------------------------------------------------------------- positions


@pytest.mark.parametrize("dims", [8, 32, 130])
def test_sinusoidal_encoding_matches_the_formula(dims):
    n = 40
    got = np.array(sinusoidal_positions(mx.arange(n), dims))
    want = np.zeros((n, dims))
    for p in range(n):
        for i in range(dims // 2):
            want[p, 2 * i] = math.sin(p / 10000 ** (2 * i / dims))
            want[p, 2 * i + 1] = math.cos(p / 10000 ** (2 * i / dims))
    np.testing.assert_allclose(got, want, atol=2e-5)
    np.testing.assert_allclose(positions.reference_sinusoidal(n, dims), want, atol=1e-12)
    assert positions.wavelength(0, dims) == pytest.approx(2 * math.pi)


def test_sinusoidal_model_adds_exactly_the_formula(trained_run_sinusoidal):
    model, _ = load(trained_run_sinusoidal)
    pe = positions.position_vectors(model)
    np.testing.assert_allclose(pe, positions.reference_sinusoidal(*pe.shape), atol=2e-5)


def test_rotary_model_shows_its_rotation_clocks_per_head():
    """A RoPE model adds nothing to the stream: the view shows the rotation angles' sines and
    cosines, the sinusoidal formula with d = the head size, which depend on distance only."""
    model = GPT(ModelArgs(vocab_size=29, block_size=12, n_layer=1, n_head=2, n_embd=24, pos_embedding="rope"))
    pe = positions.position_vectors(model)
    np.testing.assert_allclose(pe, positions.reference_sinusoidal(12, 12), atol=1e-6)
    sim = positions.cosine_similarity_matrix(pe)
    assert sim[0, 3] == pytest.approx(sim[5, 8], abs=1e-6)  # relative: only the distance matters
    assert positions.picture(model, "rope").axes


def test_position_similarity_matrix_is_a_cosine_matrix(trained):
    model, _ = trained
    sim = positions.cosine_similarity_matrix(positions.position_vectors(model))
    assert sim.shape == (model.args.block_size,) * 2
    np.testing.assert_allclose(np.diag(sim), 1.0, atol=1e-9)
    np.testing.assert_allclose(sim, sim.T, atol=1e-12)


# ---------------------------------------------------------------- next token


def test_next_token_distribution_at_each_temperature(trained):
    model, tokenizer = trained
    from mlxgpt.ui import probs

    assert next_token.top_candidates is probs.top_candidates  # the same code as generate --show-probs
    logits = next_token.next_logits(model, tokenizer.encode(PROMPT))
    orders, entropies = [], []
    for t in (0.5, 1.0, 2.0):
        lp = next_token.distribution(logits, t)
        assert float(mx.exp(lp).sum()) == pytest.approx(1.0, abs=1e-5)
        orders.append([i for i, _ in probs.top_candidates(lp, 5)])
        entropies.append(next_token.entropy_bits(lp))
    assert orders[0] == orders[1] == orders[2]  # temperature never reorders the candidates
    assert entropies[0] < entropies[1] < entropies[2]  # but flattens the distribution as it rises


# ---------------------------------------------------------------- what each picture shows


def bar_widths(ax) -> list[float]:
    return [patch.get_width() for patch in ax.patches]


def tick_texts(ax, axis: str) -> list[str]:
    return [t.get_text() for t in (ax.get_xticklabels() if axis == "x" else ax.get_yticklabels())]


def test_attention_picture_of_one_head_is_its_weights_with_the_future_greyed(trained):
    model, tokenizer = trained
    ids, labels, _ = attention.prompt_tokens(tokenizer, PROMPT, model.args.block_size)
    maps = attention.attention_maps(model, ids)
    T = len(ids)
    fig = attention.picture(maps, labels, [(1, 0)], "Attention for 'The old fox'")
    ax = next(a for a in fig.axes if a.images and a.get_ylabel() == "← query: the token looking")
    image = ax.images[0]
    shown = image.get_array()
    np.testing.assert_array_equal(shown.mask, attention.causal_mask(T))  # the hidden triangle...
    assert tuple(image.cmap.get_bad()) == to_rgba(plots.MASKED)  # ...drawn grey
    np.testing.assert_allclose(shown.filled(0.0), maps[1, 0], atol=1e-7)
    assert image.get_clim() == (0.0, 1.0)
    assert image.colorbar is not None and image.colorbar.ax.get_ylabel() == "weight"
    assert tick_texts(ax, "x") == labels and tick_texts(ax, "y") == labels
    assert ax.get_xlabel() == "key: the token being looked at →"
    cells = [t.get_text() for t in ax.texts]  # the weight in every visible cell, none in the hidden ones
    assert len(cells) == T * (T + 1) // 2
    assert f"{maps[1, 0, 2, 1]:.2f}"[1:] in cells
    texts = figure_texts(fig)
    assert "Attention for 'The old fox'" in texts and "grey = future tokens, hidden by the causal mask" in texts


def test_attention_picture_of_every_head_is_a_grid(trained):
    model, tokenizer = trained
    ids, labels, _ = attention.prompt_tokens(tokenizer, PROMPT, model.args.block_size)
    maps = attention.attention_maps(model, ids)
    chosen = attention.select(maps, None, None)
    fig = attention.picture(maps, labels, chosen, "every head")
    images = [a.images[0] for a in fig.axes if a.images]
    assert len(images) == len(chosen) == model.args.n_layer * model.args.n_head
    for (layer, head), image in zip(chosen, images):  # row by row: layer, then head
        np.testing.assert_allclose(image.get_array().filled(0.0), maps[layer, head], atol=1e-7)
    texts = figure_texts(fig)
    assert {"head 0", "head 1", "layer 0", "layer 1", "weight"} <= set(texts)


def test_a_prompt_with_dollar_signs_is_shown_as_typed(tmp_path):
    """matplotlib reads "$...$" as maths; a token or a prompt must be shown as it is."""
    labels = ["$", "x", "$"]
    maps = np.tile(np.tril(np.ones((3, 3))) / np.arange(1, 4)[:, None], (1, 1, 1, 1))
    path = plots.save(plots.attention_heads(maps, labels, [(0, 0)], "Attention for '$x$'"), tmp_path / "a.svg")
    check_picture_file(path, "Attention for '$x$'")


def test_embedding_pictures_show_the_similarities_and_the_map(trained):
    model, tokenizer = trained
    E = embeddings.embedding_matrix(model)
    e = tokenizer.encode("e")[0]
    rows = embeddings.nearest(E, e, 6)
    fig = embeddings.neighbours_picture(rows, tokenizer, "Nearest tokens to 'e'", "cosine", highlight=0)
    ax = fig.axes[0]
    np.testing.assert_allclose(bar_widths(ax), [s for _, s in rows])
    assert tick_texts(ax, "y") == [tokenizer.token_label(i) for i, _ in rows]
    assert ax.patches[0].get_facecolor() != ax.patches[1].get_facecolor()  # the token itself stands out
    assert f"{rows[1][1]:+.3f}" in figure_texts(fig)

    coords, share = embeddings.pca_2d(E)
    labels = [tokenizer.token_label(i) for i in range(tokenizer.vocab_size)]
    fig = embeddings.map_picture(coords, share, labels, "map")
    ax = fig.axes[0]
    np.testing.assert_allclose(ax.collections[0].get_offsets(), coords)  # one dot per token, where PCA put it
    assert sorted(t.get_text() for t in ax.texts) == sorted(labels)  # few tokens: every one labelled
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == [c for c in embeddings.CATEGORY_ORDER if c in {embeddings.category(s) for s in labels}]
    assert f"1st principal component ({100 * share[0]:.1f}% of the variance)" in figure_texts(fig)


def test_position_pictures_show_the_model_s_own_vectors(trained, trained_run_sinusoidal):
    model, _ = trained
    sim = positions.cosine_similarity_matrix(positions.position_vectors(model))
    fig = positions.picture(model, "learned")
    image = next(a for a in fig.axes if a.images).images[0]
    np.testing.assert_allclose(image.get_array(), sim)
    assert image.colorbar.ax.get_ylabel() == "cosine" and image.get_clim() == (-1.0, 1.0)

    model, _ = load(trained_run_sinusoidal)
    pe = positions.position_vectors(model)
    fig = positions.picture(model, "sinusoidal")
    heat = next(a for a in fig.axes if a.images)
    np.testing.assert_allclose(heat.images[0].get_array(), pe)  # every value, position x dimension
    curves = [a for a in fig.axes if a.get_lines()]
    assert len(curves) == len(positions.curve_pairs(pe.shape[1]))
    for ax, pair in zip(curves, positions.curve_pairs(pe.shape[1])):
        dots = [line for line in ax.get_lines() if line.get_linestyle() == "None"]
        np.testing.assert_allclose(dots[0].get_ydata(), pe[:, 2 * pair], atol=1e-6)  # the sin dots: the model's values
        np.testing.assert_allclose(dots[1].get_ydata(), pe[:, 2 * pair + 1], atol=1e-6)
        assert ax.get_title(loc="left") == f"i={pair}: one turn every {positions.wavelength(pair, pe.shape[1]):,.1f} positions"
    assert positions.FORMULA in figure_texts(fig)


def test_next_token_picture_has_a_panel_per_temperature(trained):
    model, tokenizer = trained
    logits = next_token.next_logits(model, tokenizer.encode(PROMPT))
    fig = next_token.picture(logits, tokenizer, PROMPT, 0.8, 6, "Next token")
    ids, panels = next_token.compare(logits, 0.8, 6)
    assert [t for t, _, _ in panels] == [0.5, 0.8, 1.0, 2.0]
    assert len(fig.axes) == len(panels)
    for ax, (t, probs, entropy) in zip(fig.axes, panels):
        np.testing.assert_allclose(bar_widths(ax), probs)
        assert tick_texts(ax, "y") == [tokenizer.token_label(i) for i in ids]
        assert ax.get_title() == f"T = {t:g}   (entropy {entropy:.2f} bits)"
    assert f"after: {PROMPT}" in figure_texts(fig)


def test_params_picture_has_a_bar_per_family():
    t = params.tally(params.GPT3)
    fig = params.picture(t, "GPT-3")
    ax = fig.axes[0]
    assert bar_widths(ax) == [r.count for r in t.families]
    assert tick_texts(ax, "y") == [r.name for r in t.families]
    texts = figure_texts(fig)
    assert f"Total: {t.total:,}" in texts and "Not in the families:" in texts
    assert f"{t.families[5].count:,}  (33.1%)   = {t.families[5].numbers}" in texts


# ---------------------------------------------------------------- every command, with a picture


VIEWS = [
    ("params", [], "svg"),
    ("params-gpt3", ["--gpt3"], "png"),
    ("attention-all", ["--prompt", PROMPT], "svg"),
    ("attention-one", ["--prompt", PROMPT, "--layer", "1", "--head", "0"], "png"),
    ("embeddings-token", ["--token", "e", "--k", "5"], "pdf"),
    ("embeddings-analogy", ["--analogy", "a", "T", "t"], "png"),
    ("embeddings-map", ["--map"], "svg"),
    ("embeddings-map-png", ["--map"], "png"),
    ("positions", [], "png"),
    ("next", ["--prompt", PROMPT, "--temperature", "0.8", "--top", "8"], "svg"),
]


@pytest.mark.parametrize("name,args,ext", VIEWS, ids=[v[0] for v in VIEWS])
def test_each_view_runs_and_saves_a_picture(name, args, ext, trained_run, tmp_path, capsys):
    view = name.split("-")[0]
    picture = tmp_path / "pictures" / f"{name}.{ext}"  # a folder that does not exist yet
    checkpoint = [] if "--gpt3" in args else ["--checkpoint", str(trained_run)]
    assert main(["inspect", view, *checkpoint, *args, "--save", str(picture)]) == 0
    out = capsys.readouterr().out
    assert f"picture saved to {picture}" in out
    check_picture_file(picture, min_width=500)
    if view == "params":
        assert "175,181,291,520" in out if "--gpt3" in args else "✓ equals the loaded model's real count" in out


def test_positions_of_a_sinusoidal_model(trained_run_sinusoidal, tmp_path, capsys):
    picture = tmp_path / "sin.svg"
    assert main(["inspect", "positions", "--checkpoint", str(trained_run_sinusoidal), "--save", str(picture)]) == 0
    assert "sin(p / 10000^(2i/d))" in capsys.readouterr().out
    check_picture_file(picture, "Positional encodings (sinusoidal)", positions.FORMULA)


def test_inspect_through_python_dash_m_and_clean_errors(trained_run, tmp_path):
    result = run_cli("-m", "mlxgpt", "inspect", "params", "--checkpoint", trained_run)
    assert result.returncode == 0, result.stderr
    assert "Eight families" in result.stdout and "✓ equals" in result.stdout
    result = run_cli("-m", "mlxgpt.inspect", "attention", "--checkpoint", trained_run, "--prompt", "zébra")
    assert_clean_failure(result, "not in the model's vocabulary")
    result = run_cli("-m", "mlxgpt", "inspect", "attention", "--checkpoint", trained_run, "--prompt", "The",
                     "--layer", "7")
    assert_clean_failure(result, "--layer 7")
    result = run_cli("-m", "mlxgpt", "inspect", "next", "--checkpoint", trained_run, "--prompt", "The",
                     "--save", tmp_path / "x.jpg")
    assert_clean_failure(result, "x.jpg: pictures are .png, .svg or .pdf")
    assert not (tmp_path / "x.jpg").exists()
    result = run_cli("-m", "mlxgpt", "inspect", "positions", cwd=tmp_path,  # no out/ here
                     env={"PYTHONPATH": str(REPO_ROOT)})
    assert_clean_failure(result, "no trained model found")
