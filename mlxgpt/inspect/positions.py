"""Positional encodings: how the model tells position 3 from position 30.

A sinusoidal model adds the fixed vectors of `model.sinusoidal_positions`:
    PE[p, 2i] = sin(p / 10000^(2i/d)),  PE[p, 2i+1] = cos(p / 10000^(2i/d))
— each pair of dimensions is a clock ticking at its own speed. A learned model
has a trained table `wpe` (block_size, d_model); the interesting part is which
positions ended up with similar vectors (their cosine-similarity matrix).
"""

from __future__ import annotations

import math

import numpy as np

from mlxgpt.model import GPT

FORMULA = "PE[p, 2i] = sin(p / 10000^(2i/d)),  PE[p, 2i+1] = cos(p / 10000^(2i/d))"


def position_vectors(model: GPT) -> np.ndarray:
    """(block_size, d_model): what the model adds to the token embedding at each position."""
    import mlx.core as mx

    pe = model.position_embedding(0, model.args.block_size)
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

    from mlxgpt.inspect.canvas import DIVERGING
    from mlxgpt.inspect.term import colour_scale, console, half_block_text

    con = console()
    pe = position_vectors(model)
    T, d = pe.shape
    sim = cosine_similarity_matrix(pe)
    step = math.ceil(T / min(64, con.width - 4))  # at most 64 positions fit the terminal; --save shows all
    every = f" (one in {step} positions)" if step > 1 else ""
    parts: list = [Text(title, style="bold")]
    if model.args.pos_embedding == "sinusoidal":
        parts.append(Text("Sinusoidal (fixed, no parameters):  " + FORMULA, style="bold cyan"))
        parts.append(Text("p = position, d = model width, i = pair index: each pair of dimensions is a "
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
        parts.append(half_block_text(pe[::step, :cols], con=con, vmin=-1.0, vmax=1.0, stops=DIVERGING))
        parts.append(colour_scale(con, -1.0, 1.0, DIVERGING))
    else:
        parts.append(Text(f"Learned positional embedding wpe: {T} positions × {d} dimensions, trained with "
                          "the rest of the model.", style="bold cyan"))
    shown = sim[::step, ::step]
    parts.append(Text(f"cosine similarity of position vectors, position × position{every}; "
                      "top-left = position 0; blue −1, white 0, red +1:", style="dim"))
    parts.append(half_block_text(shown, con=con, vmin=-1.0, vmax=1.0, stops=DIVERGING))
    parts.append(colour_scale(con, -1.0, 1.0, DIVERGING))
    near = ", ".join(f"{k} apart: {neighbour_similarity(sim, k):+.2f}" for k in (1, 2, 4, 8, 16, 32) if k < T)
    parts.append(Text(f"mean similarity of positions {near}", style="dim"))
    return Group(*parts)


# ---------------------------------------------------------------- picture


def picture(model: GPT, title: str):
    from mlxgpt.inspect.canvas import CATEGORICAL, DIVERGING, Canvas
    from mlxgpt.inspect.pictures import colour_bar, heatmap, line_plot

    pe = position_vectors(model)
    T, d = pe.shape
    sim = cosine_similarity_matrix(pe)
    every = max(1, T // 16)
    ticks = [str(p) if p % every == 0 else "" for p in range(T)]
    if model.args.pos_embedding == "sinusoidal":
        pairs = curve_pairs(d)
        panel_h, panel_w = 70.0, 520.0
        left, top = 70.0, 100.0
        cell = max(2.0, min(10.0, 320.0 / max(T, d)))
        hx = left + panel_w + 80
        width = max(hx + d * cell + 80, hx + 330)
        height = max(top + len(pairs) * (panel_h + 44) + 20, top + T * cell + 90)
        cv = Canvas(width, height)
        cv.text(14, 24, title, 14, bold=True)
        cv.text(14, 44, "Sinusoidal positional encoding (fixed, no parameters): each pair of dimensions is a clock",
                11, "#333333")
        cv.text(14, 64, FORMULA, 12, "#1f4e79", bold=True)
        fine = np.linspace(0, T - 1, 8 * T)
        xs = np.arange(T)
        for k, pair in enumerate(pairs):
            y = top + k * (panel_h + 44)
            freq = 1.0 / 10000 ** (2 * pair / d)
            px, py = line_plot(cv, left, y, panel_w, panel_h,
                               [(f"dim {2 * pair}: sin", fine, np.sin(fine * freq), CATEGORICAL[0]),
                                (f"dim {2 * pair + 1}: cos", fine, np.cos(fine * freq), CATEGORICAL[1])],
                               ylim=(-1.1, 1.1), title=f"i={pair}: one turn every {wavelength(pair, d):,.1f} positions",
                               xlabel="position p (dots: the values the model adds)" if k == len(pairs) - 1 else "")
            for p in xs:  # what the model actually uses: the curves at whole positions
                cv.circle(px(float(p)), py(float(pe[p, 2 * pair])), 1.8, CATEGORICAL[0])
                cv.circle(px(float(p)), py(float(pe[p, 2 * pair + 1])), 1.8, CATEGORICAL[1])
        cv.text(hx, top - 22, "every value: position (row)", 11, bold=True)
        cv.text(hx, top - 8, f"× dimension (column), {T} × {d}", 11, bold=True)
        heatmap(cv, hx, top, pe, cell, vmin=-1.0, vmax=1.0, stops=DIVERGING,
                row_labels=ticks if cell >= 4 else None, label_size=9)
        cv.text(hx + d * cell / 2, top + T * cell + 16, "dimension → (slower clocks to the right)", 10,
                "#444444", anchor="middle")
        colour_bar(cv, hx + d * cell + 20, top, min(200.0, T * cell), vmin=-1.0, vmax=1.0, stops=DIVERGING,
                   label="value")
        return cv
    cell = max(4.0, min(12.0, 640.0 / T))
    left, top = 60.0, 84.0
    cv = Canvas(left + T * cell + 100, top + T * cell + 60)
    cv.text(14, 24, title, 14, bold=True)
    cv.text(14, 44, f"Learned positional embedding: cosine similarity between the vectors of positions p (row) and "
                    f"q (column), {T} × {T}", 11, "#333333")
    cv.text(14, 62, f"neighbours 1 apart: {neighbour_similarity(sim, 1):+.2f} on average; "
                    f"8 apart: {neighbour_similarity(sim, 8):+.2f}", 10, "#555555")
    heatmap(cv, left, top, sim, cell, vmin=-1.0, vmax=1.0, stops=DIVERGING, row_labels=ticks, col_labels=ticks,
            col_labels_below=True, label_size=9)
    cv.text(left + T * cell / 2, top + T * cell + 30, "position q →", 11, "#444444", anchor="middle")
    cv.text(left - 30, top + T * cell / 2, "← position p", 11, "#444444", anchor="middle", rotate=-90)
    colour_bar(cv, left + T * cell + 20, top, min(240.0, T * cell), vmin=-1.0, vmax=1.0, stops=DIVERGING,
               label="cosine")
    return cv
