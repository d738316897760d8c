"""Positional encodings: how the model tells position 3 from position 30.

A sinusoidal model adds the fixed vectors of `model.sinusoidal_positions`:
    PE[p, 2i] = sin(p / 10000^(2i/d)),  PE[p, 2i+1] = cos(p / 10000^(2i/d))
— each pair of dimensions is a clock ticking at its own speed. A learned model
has a trained table `wpe` (block_size, d_model); the interesting part is which
positions ended up with similar vectors (their cosine-similarity matrix). A rotary
(RoPE) model adds nothing: it rotates each head's queries and keys by the same
clocks' angles, with d = the head size (`model.rotary`); shown are those clocks.
"""

from __future__ import annotations

import math

import numpy as np

from mlxgpt.model import GPT, sinusoidal_positions

FORMULA = "PE[p, 2i] = sin(p / 10000^(2i/d)),  PE[p, 2i+1] = cos(p / 10000^(2i/d))"
ROPE_FORMULA = "q, k channels (i, i + hs/2) of every head rotated by the angle p / 10000^(2i/hs)"


def position_vectors(model: GPT) -> np.ndarray:
    """(block_size, d_model): what the model adds to the token embedding at each position; for
    rotary positions (block_size, head size): the sines and cosines of the rotation angles."""
    import mlx.core as mx

    if model.args.pos_embedding == "learned":
        pe = model.wpe.weight  # the trained table
    else:
        dims = model.args.head_dim if model.args.pos_embedding == "rope" else model.args.n_embd
        pe = sinusoidal_positions(mx.arange(model.args.block_size), dims)
    return np.array(pe.astype(mx.float32)).astype(np.float64)


def reference_sinusoidal(n_positions: int, dims: int) -> np.ndarray:
    """The formula, written out in numpy (what the tests compare the model against)."""
    pe = np.zeros((n_positions, dims))
    for p in range(n_positions):
        for i in range(0, dims, 2):
            angle = p / 10000 ** (i / dims)
            pe[p, i] = math.sin(angle)
            if i + 1 < dims:
                pe[p, i + 1] = math.cos(angle)
    return pe


def wavelength(pair: int, dims: int) -> float:
    """Positions per full turn of dimension pair i: 2π · 10000^(2i/d)."""
    return 2 * math.pi * 10000 ** (2 * pair / dims)


def cosine_similarity_matrix(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    unit = vectors / np.where(norms == 0, 1.0, norms)
    return unit @ unit.T


def neighbour_similarity(sim: np.ndarray, distance: int) -> float:
    """Mean cosine similarity of positions `distance` apart."""
    n = sim.shape[0]
    if distance >= n:
        return float("nan")
    return float(np.mean([sim[p, p + distance] for p in range(n - distance)]))


def curve_pairs(dims: int) -> list[int]:
    """Four frequency pairs worth plotting: the fastest clock, then pairs 1/8, 1/4 and 1/2 of the way
    along (their wavelengths are 2π times 1, 10^0.5, 10 and 100 whatever d is)."""
    half = dims // 2
    return sorted({min(half - 1, round(half * f)) for f in (0, 1 / 8, 1 / 4, 1 / 2)})


# ---------------------------------------------------------------- terminal


def render(model: GPT, title: str):
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    from mlxgpt.inspect.term import DIVERGING, colour_scale, console, half_block_text

    con = console()
    pe = position_vectors(model)
    T, d = pe.shape
    sim = cosine_similarity_matrix(pe)
    step = math.ceil(T / min(64, con.width - 4))  # at most 64 positions fit the terminal; --save shows all
    every = f" (one in {step} positions)" if step > 1 else ""
    parts: list = [Text(title, style="bold")]
    if model.args.pos_embedding == "rope":
        parts.append(Text("Rotary (RoPE, fixed, no parameters):  " + ROPE_FORMULA, style="bold cyan"))
        parts.append(Text("Nothing is added to the residual stream: attention compares rotated queries and keys, "
                          "so a score depends only on how far apart two positions are. The rotation angles are "
                          "the sinusoidal clocks with d = the head size; shown below as sin/cos pairs.",
                          style="dim"))
    if model.args.pos_embedding == "sinusoidal":
        parts.append(Text("Sinusoidal (fixed, no parameters):  " + FORMULA, style="bold cyan"))
    if model.args.pos_embedding in ("sinusoidal", "rope"):
        parts.append(Text(f"p = position, d = {'head size' if model.args.pos_embedding == 'rope' else 'model width'}"
                          ", i = pair index: each pair of dimensions is a "
                          "sine/cosine clock; low dimensions tick fast, high ones slowly.", style="dim"))
        table = Table(title="a few of the clocks", title_justify="left", header_style="bold")
        table.add_column("dims")
        table.add_column("one full turn every", justify="right")
        for pair in curve_pairs(d):
            table.add_row(f"{2 * pair}, {2 * pair + 1}", f"{wavelength(pair, d):,.1f} positions")
        parts.append(table)
        cols = min(d, con.width - 4)
        parts.append(Text(f"PE values, positions 0–{T - 1}{every} (rows) × dimensions 0–{cols - 1} "
                          "(columns); blue −1, white 0, red +1:", style="dim"))
        parts.append(half_block_text(pe[::step, :cols], con=con, vmin=-1.0, vmax=1.0, cmap=DIVERGING))
        parts.append(colour_scale(con, -1.0, 1.0, DIVERGING))
    else:
        parts.append(Text(f"Learned positional embedding wpe: {T} positions × {d} dimensions, trained with "
                          "the rest of the model.", style="bold cyan"))
    shown = sim[::step, ::step]
    parts.append(Text(f"cosine similarity of position vectors, position × position{every}; "
                      "top-left = position 0; blue −1, white 0, red +1:", style="dim"))
    parts.append(half_block_text(shown, con=con, vmin=-1.0, vmax=1.0, cmap=DIVERGING))
    parts.append(colour_scale(con, -1.0, 1.0, DIVERGING))
    near = ", ".join(f"{k} apart: {neighbour_similarity(sim, k):+.2f}" for k in (1, 2, 4, 8, 16, 32) if k < T)
    parts.append(Text(f"mean similarity of positions {near}", style="dim"))
    return Group(*parts)


# ---------------------------------------------------------------- picture


def picture(model: GPT, title: str):
    """Sinusoidal: a few of the clocks as curves, and every value. Learned: the similarity
    of the positions' vectors. (Drawn by mlxgpt/plots.py.)"""
    from mlxgpt import plots

    pe = position_vectors(model)
    T, d = pe.shape
    if model.args.pos_embedding in ("sinusoidal", "rope"):
        formula = ROPE_FORMULA if model.args.pos_embedding == "rope" else FORMULA
        return plots.sinusoidal_encoding(pe, [(pair, wavelength(pair, d)) for pair in curve_pairs(d)], formula, title)
    sim = cosine_similarity_matrix(pe)
    return plots.position_similarity(
        sim, title, f"Learned positional embedding: cosine similarity between the vectors of positions p (row) "
                    f"and q (column), {T} × {T}",
        f"neighbours 1 apart: {neighbour_similarity(sim, 1):+.2f} on average; "
        f"8 apart: {neighbour_similarity(sim, 8):+.2f}")
