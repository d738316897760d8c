"""`mlxgpt inspect`: the numbers behind each view, and every view run on a tiny trained checkpoint.

The checkpoints are conftest's shared session runs (`trained_run`: learned
positions, `trained_run_sinusoidal`), trained through the real train.py on a
generated grammar text, so no extra training happens here.
"""

from __future__ import annotations

import dataclasses
import math
import struct
import xml.etree.ElementTree as ET
import zlib
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest

from conftest import REPO_ROOT, assert_clean_failure, run_cli
from mlxgpt.checkpoint import load
from mlxgpt.cli import main
from mlxgpt.config import ModelArgs
from mlxgpt.errors import MlxgptError
from mlxgpt.inspect import attention, embeddings, next_token, params, positions
from mlxgpt.inspect.canvas import Canvas
from mlxgpt.model import GPT, sinusoidal_positions

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


# ---------------------------------------------------------------- every command, with a picture


def check_picture(path: Path) -> None:
    data = path.read_bytes()
    if path.suffix == ".svg":
        root = ET.fromstring(data)
        assert root.tag == "{http://www.w3.org/2000/svg}svg"
        assert float(root.get("width")) > 100 and float(root.get("height")) > 100
        assert len(list(root)) >= 5
    else:
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
        width, height = struct.unpack(">II", data[16:24])
        assert data[12:16] == b"IHDR" and width > 100 and height > 100
        idat = data.index(b"IDAT")
        length = struct.unpack(">I", data[idat - 4:idat])[0]
        raw = zlib.decompress(data[idat + 4: idat + 4 + length])
        assert len(raw) == height * (1 + 3 * width)  # every row: filter byte + RGB
        assert len(set(raw)) > 2  # not a blank image


VIEWS = [
    ("params", [], "svg"),
    ("params-gpt3", ["--gpt3"], "png"),
    ("attention-all", ["--prompt", PROMPT], "svg"),
    ("attention-one", ["--prompt", PROMPT, "--layer", "1", "--head", "0"], "png"),
    ("embeddings-token", ["--token", "e", "--k", "5"], "svg"),
    ("embeddings-analogy", ["--analogy", "a", "T", "t"], "png"),
    ("embeddings-map", ["--map"], "svg"),
    ("embeddings-map-png", ["--map"], "png"),
    ("positions", [], "png"),
    ("next", ["--prompt", PROMPT, "--temperature", "0.8", "--top", "8"], "svg"),
]


@pytest.mark.parametrize("name,args,ext", VIEWS, ids=[v[0] for v in VIEWS])
def test_each_view_runs_and_saves_a_picture(name, args, ext, trained_run, tmp_path, capsys):
    view = name.split("-")[0]
    picture = tmp_path / f"{name}.{ext}"
    checkpoint = [] if "--gpt3" in args else ["--checkpoint", str(trained_run)]
    assert main(["inspect", view, *checkpoint, *args, "--save", str(picture)]) == 0
    out = capsys.readouterr().out
    assert f"picture saved to {picture}" in out
    check_picture(picture)
    if view == "params":
        assert "175,181,291,520" in out if "--gpt3" in args else "✓ equals the loaded model's real count" in out


def test_positions_of_a_sinusoidal_model(trained_run_sinusoidal, tmp_path, capsys):
    picture = tmp_path / "sin.svg"
    assert main(["inspect", "positions", "--checkpoint", str(trained_run_sinusoidal), "--save", str(picture)]) == 0
    assert "sin(p / 10000^(2i/d))" in capsys.readouterr().out
    check_picture(picture)


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
    assert_clean_failure(result, ".svg or .png")
    result = run_cli("-m", "mlxgpt", "inspect", "positions", cwd=tmp_path,  # no out/ here
                     env={"PYTHONPATH": str(REPO_ROOT)})
    assert_clean_failure(result, "no trained model found")


def test_canvas_writes_the_same_shapes_as_svg_and_png(tmp_path):
    cv = Canvas(160, 120)
    cv.rect(10, 10, 30, 20, "#ff0000")
    cv.line(0, 0, 120, 60, "#0000ff", 2)
    cv.text(60, 40, "Hello ⏎ é", 12, anchor="middle")
    cv.text(110, 55, "up", 10, rotate=-90)
    check_picture(cv.save(tmp_path / "c.svg"))
    check_picture(cv.save(tmp_path / "c.png"))
    with pytest.raises(MlxgptError, match=r"^--save .*c\.gif: pictures are \.svg or \.png$"):
        cv.save(tmp_path / "c.gif")
    assert not (tmp_path / "c.gif").exists()
