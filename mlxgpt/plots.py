"""Every picture mlxgpt draws, with matplotlib: a run's loss curves and the views of
`mlxgpt inspect` (attention maps, cross-attention alignments, token embeddings,
positional encodings, the next-token distribution, the logit lens, the parameter tally).

Each function takes plain numbers (numpy arrays, lists of labels) and returns a
matplotlib `Figure`; `save(fig, "x.png")` writes it as PNG, SVG or PDF. The same
calls work in a notebook, where a Figure shows itself:

    from mlxgpt import plots
    fig = plots.attention_heads(maps, labels, [(1, 0)], "Attention for 'The old fox'")
    plots.save(fig, "attention.svg")

Figures are built with `matplotlib.figure.Figure`, not pyplot: no global state, no
window, no display needed (the Agg renderer draws into memory). matplotlib is imported
inside the functions, so `import mlxgpt` and the start of training stay fast.
A token or a prompt is text, never maths: `parse_math=False` wherever one is shown
(matplotlib would read "$...$" as a formula).
"""

from __future__ import annotations

import dataclasses
import io
import math
import warnings
from pathlib import Path
from contextlib import contextmanager
from typing import TYPE_CHECKING, Iterator, Sequence

import numpy as np

from mlxgpt.events import RunFinished
from mlxgpt.files import write_atomic
from mlxgpt.ui.format import format_prob
from mlxgpt.ui.history import LossHistory

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure, SubFigure

FORMATS = (".png", ".svg", ".pdf")
LOSS_PICTURES = ("loss.png", "loss.svg")  # written into every run directory at the end
DPI = 150

MASKED = "#e4e4e4"  # attention cells the causal mask hides (keys after the query)
NOTE = "#555555"  # explanatory text under a title
TRAIN, TRAIN_AT_EVAL, VAL, BEST = "#1f77b4", "#9467bd", "#ff7f0e", "#d62728"


# ---------------------------------------------------------------- figures and files


def new_figure(width: float, height: float, title: str = "", *notes: str,
               layout: str = "constrained") -> tuple[Figure, Figure | SubFigure]:
    """A figure of width x height inches (plus a header band when there is a title):
    a bold title and grey notes, one per line, above the body where the plots go.

    "constrained" layout keeps titles, tick labels and colour bars from overlapping;
    "compressed" does the same for a grid of square images (heatmaps) and closes the gaps."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    head = 0.5 + 0.24 * len(notes) if title else 0.0  # inches
    fig = Figure(figsize=(width, height + head), layout=layout)
    FigureCanvasAgg(fig)  # draws into memory (PNG); savefig switches to SVG or PDF by itself
    if not title:
        return fig, fig
    header, body = fig.subfigures(2, 1, height_ratios=[head, height])
    header.text(0.01, 1 - 0.12 / head, title, va="top", fontsize=13, fontweight="bold", parse_math=False)
    for k, note in enumerate(notes):
        header.text(0.01, 1 - (0.46 + 0.24 * k) / head, note, va="top", fontsize=9, color=NOTE, parse_math=False)
    return fig, body


def save(fig: Figure, path: Path | str) -> Path:
    """Write `fig` to `path` as .png, .svg or .pdf (from the suffix), all at once (files.write_atomic)."""
    import matplotlib

    path = Path(path)
    kind = path.suffix.lower()
    if kind not in FORMATS:
        raise ValueError(f"{path}: pictures are .png, .svg or .pdf")
    data = io.BytesIO()
    # SVG text stays text (searchable, copyable) rather than outlines of letters
    with _missing_glyphs_allowed(), matplotlib.rc_context({"svg.fonttype": "none"}):
        fig.savefig(data, format=kind[1:], dpi=DPI, facecolor="white")
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_atomic(path, data.getvalue())


@contextmanager
def _missing_glyphs_allowed() -> Iterator[None]:
    """A token the font has no glyph for (a rare symbol, an emoji) is drawn as a box, without a warning."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Glyph .* missing from font")
        yield


def _tokens_on_axis(ax: Axes, which: str, labels: Sequence[str], every: int = 1, size: float = 10) -> None:
    """Token labels as the ticks of the x or y axis (every n-th one when they would not fit);
    labels longer than two characters (subword tokens) are turned to read upwards."""
    ticks = list(range(0, len(labels), every))
    shown = [labels[i] for i in ticks]
    if which == "x":
        upright = all(len(s) <= 2 for s in shown)
        ax.set_xticks(ticks, shown, fontsize=size, rotation=0 if upright else 90, parse_math=False)
    else:
        ax.set_yticks(ticks, shown, fontsize=size, parse_math=False)


def _label_step(n: int, room: int) -> int:
    """Label every n-th of `n` ticks so that at most about `room` labels are shown."""
    return max(1, math.ceil(n / room))


# ---------------------------------------------------------------- the loss curves of a run


def loss_curves(history: LossHistory, title: str = "loss") -> Figure:
    """Train loss at every logged step, train and val loss at each eval, the best val
    loss ringed; the right axis reads the val curve in bits per character."""
    fig, body = new_figure(10, 5.5)
    ax = body.subplots()
    ax.set_title(title, fontweight="bold", parse_math=False)
    ax.set_xlabel("iteration")
    ax.xaxis.set_major_formatter("{x:,g}")  # 5,000 rather than 5000
    ax.set_ylabel("loss (nats per token)")
    ax.grid(color="#e6e6e6")
    if not history.steps and not history.evals:
        ax.text(0.5, 0.5, "no losses recorded yet", transform=ax.transAxes, ha="center", color="#888888")
        return fig
    if history.steps:
        it, loss = zip(*history.steps)
        ax.plot(it, loss, color=TRAIN, lw=1.2, alpha=0.8, label="train loss (logged steps)")
    ratio = history.bits_per_nat
    if history.evals:
        it, train, val, _ = (np.array(column) for column in zip(*history.evals))
        seen = np.isfinite(train)
        ax.plot(it[seen], train[seen], color=TRAIN_AT_EVAL, lw=1.5, ls=":", label="train loss (eval)")
        ax.plot(it, val, color=VAL, lw=2, marker="o", ms=4,
                label="val loss (eval; right axis: bits/char)" if ratio else "val loss (eval)")
        best_it, best_val = history.best
        ax.plot([best_it], [best_val], "o", ms=11, mfc="none", mec=BEST, mew=2, label="_best")
        bpc = f" ({best_val * ratio:.3f} bpc)" if ratio else ""
        late = best_it > it.min() + 0.7 * (it.max() - it.min())  # near the right edge: the note goes left
        ax.annotate(f"best val {best_val:.4f}{bpc} @ {best_it:,}", (best_it, best_val), xytext=(0, 14),
                    textcoords="offset points", ha="right" if late else "left", color=BEST,
                    bbox=dict(boxstyle="round,pad=0.2", fc="white", ec="none", alpha=0.85))
    if ratio:  # bits/char = nats/token x a fixed ratio, so the same curve reads in both units
        right = ax.secondary_yaxis("right", functions=(lambda nats: nats * ratio, lambda bits: bits / ratio))
        right.set_ylabel(f"val loss in bits per character (nats x {ratio:.4f})", color="#c85a00")
        right.tick_params(colors="#c85a00")
    ax.legend(loc="upper right", framealpha=0.85)
    return fig


def write_loss_pictures(metrics_path: Path, title: str | None = None) -> Path:
    """Draw the curves recorded in metrics.jsonl into loss.png and loss.svg beside it; return the PNG's path."""
    metrics_path = Path(metrics_path)
    history = LossHistory.from_metrics(metrics_path)
    fig = loss_curves(history, title or f"mlxgpt loss curves: {metrics_path.parent}")
    png, svg = (metrics_path.parent / name for name in LOSS_PICTURES)
    save(fig, svg)
    return save(fig, png)


def with_loss_picture(event: RunFinished, metrics_path: Path) -> RunFinished:
    """The run is over: draw its loss pictures and return the event naming the PNG.
    A full disk, or a missing matplotlib, costs the picture, never the finished run."""
    try:
        path = write_loss_pictures(metrics_path)
    except (OSError, ImportError):
        return event
    return dataclasses.replace(event, picture_path=str(path))


# ---------------------------------------------------------------- attention


def attention_heads(maps: np.ndarray, labels: Sequence[str], chosen: Sequence[tuple[int, int]],
                    title: str) -> Figure:
    """Attention weights (n_layer, n_head, T, T) as heatmaps, row = query, column = key,
    future keys (hidden by the causal mask) grey. One head: a large map with token
    labels and, when they fit, the weight in each cell. Several: a grid, layer by head."""
    from matplotlib import colormaps

    T = len(labels)
    hidden = np.triu(np.ones((T, T), dtype=bool), k=1)  # True where a query may not look (keys after it)
    cmap = colormaps["viridis"].with_extremes(bad=MASKED)  # masked ("bad") cells are drawn grey

    def heatmap(ax: Axes, layer: int, head: int):
        weights = np.ma.masked_array(maps[layer, head], mask=hidden)
        return ax.imshow(weights, cmap=cmap, vmin=0.0, vmax=1.0, interpolation="nearest")

    if len(chosen) == 1:
        layer, head = chosen[0]
        size = min(11.0, max(5.0, 1.5 + 0.42 * T))
        fig, body = new_figure(size + 1.6, size, title,
                               f"layer {layer}, head {head}: attention weights softmax(q·kᵀ/√d_head), rows sum to 1",
                               "grey = future tokens, hidden by the causal mask")
        ax = body.subplots()
        image = heatmap(ax, layer, head)
        cell = size * 72 / T  # points per cell
        font = min(11.0, max(6.0, 0.7 * cell))
        every = math.ceil(1.3 * font / cell)  # smaller cells than letters: label every n-th token
        _tokens_on_axis(ax, "x", labels, every, font)
        _tokens_on_axis(ax, "y", labels, every, font)
        ax.xaxis.tick_top()
        ax.xaxis.set_label_position("top")
        ax.set_xlabel("key: the token being looked at →")
        ax.set_ylabel("← query: the token looking")
        if T <= 24:  # the numbers themselves, dark text on light cells and light on dark
            for q, k in zip(*np.nonzero(~hidden)):
                w = float(maps[layer, head, q, k])
                ax.text(k, q, f"{w:.2f}"[1:] if 0 <= w < 1 else f"{w:.1f}", ha="center", va="center",
                        fontsize=9 if T <= 12 else 7, color="black" if w > 0.6 else "white")
        body.colorbar(image, ax=ax, label="weight", shrink=0.6)
        return fig

    layers = sorted({l for l, _ in chosen})
    heads = sorted({h for _, h in chosen})
    cell = max(1.2, min(2.6, 16.0 / max(len(layers), len(heads))))  # inches per map
    scope = "every head of every layer; " if len(chosen) == maps.shape[0] * maps.shape[1] else ""
    fig, body = new_figure(cell * len(heads) + 1.8, cell * len(layers) + 0.6, title,
                           f"{scope}in each map rows = queries, columns = keys (first token top-left), "
                           "grey = hidden by the causal mask", layout="compressed")
    axes = body.subplots(len(layers), len(heads), squeeze=False, sharex=True, sharey=True)
    with_labels = T <= 24 and cell >= 1.8
    for r, layer in enumerate(layers):
        for c, head in enumerate(heads):
            ax = axes[r][c]
            if (layer, head) not in chosen:
                ax.axis("off")
                continue
            image = heatmap(ax, layer, head)
            ax.tick_params(length=0)
            if with_labels:
                _tokens_on_axis(ax, "x", labels, size=7)
                _tokens_on_axis(ax, "y", labels, size=7)
            else:
                ax.set_xticks([])
                ax.set_yticks([])
            if r == 0:
                ax.set_title(f"head {head}", fontweight="bold", fontsize=10)
            if c == 0:
                ax.set_ylabel(f"layer {layer}", fontweight="bold", fontsize=10)
    body.colorbar(image, ax=axes, label="weight", shrink=min(0.8, 3.0 / len(layers) + 0.2))
    return fig


def cross_attention(maps: np.ndarray, source_labels: Sequence[str], target_labels: Sequence[str],
                    chosen: Sequence[tuple[int, int]], title: str, main_title: str, *notes: str) -> Figure:
    """An encoder-decoder's cross-attention (n_layer, n_head, Tt, Ts), the alignment figure of
    Bahdanau et al.: source characters across (top), target positions down, each row labelled by
    the token predicted there. Above, the mean of the chosen maps (the one map when one is chosen),
    large, labelled and, when they fit, with the weight in each cell. Below, when several are
    chosen, each of them small, layer by head, with each layer's mean of its heads in the last column."""
    Tt, Ts = len(target_labels), len(source_labels)
    main = np.mean([maps[l, h] for l, h in chosen], axis=0)
    cell = min(0.5, max(0.22, 10.0 / max(Ts, Tt)))  # inches per cell of the main map
    main_w, main_h = cell * Ts + 2.6, cell * Tt + 1.3
    layers = sorted({l for l, _ in chosen})
    heads = sorted({h for _, h in chosen})
    grid = len(chosen) > 1
    columns = len(heads) + (len(heads) > 1)  # the heads, and their mean
    small = min(2.6, max(1.3, 12.0 / columns))  # inches per small map, across
    grid_w, grid_h = small * columns + 1.2, (small * Tt / Ts + 0.45) * len(layers) + 0.5
    fig, body = new_figure(max(9.0, main_w, grid_w if grid else 0.0), main_h + (grid_h if grid else 0.0), title,
                           *notes, "rows: the target positions, each labelled by the token it predicts (t1 … <eos>); "
                           "columns: the source characters", f"{main_title}; each row sums to 1 over the source")
    top, bottom = body.subfigures(2, 1, height_ratios=[main_h, grid_h]) if grid else (body, None)

    ax = top.subplots()
    image = ax.imshow(main, cmap="viridis", vmin=0.0, vmax=1.0, interpolation="nearest")
    points = cell * 72  # per cell
    font = min(11.0, max(6.0, 0.7 * points))
    every = math.ceil(1.3 * font / points)  # smaller cells than letters: label every n-th character
    _tokens_on_axis(ax, "x", source_labels, every, font)
    _tokens_on_axis(ax, "y", target_labels, every, font)
    ax.tick_params(length=0)
    ax.xaxis.tick_top()
    ax.xaxis.set_label_position("top")
    ax.set_xlabel("source: the characters the encoder read →")
    ax.set_ylabel("← target: the token predicted at that position")
    ax.set_title(main_title, fontweight="bold", fontsize=10, loc="left", parse_math=False)
    if Ts <= 24 and Tt <= 32:  # the numbers themselves, dark text on light cells and light on dark
        for (t, s), w in np.ndenumerate(main):
            ax.text(s, t, f"{w:.2f}"[1:] if 0 <= w < 1 else f"{w:.1f}", ha="center", va="center",
                    fontsize=8 if cell >= 0.4 else 6, color="black" if w > 0.6 else "white")
    top.colorbar(image, ax=ax, label="weight", shrink=0.8)
    if not grid:
        return fig

    bottom.suptitle("each map on its own: decoder layer (row) × head (column)", x=0.01, ha="left", fontsize=10,
                    fontweight="bold")
    axes = bottom.subplots(len(layers), columns, squeeze=False, sharex=True, sharey=True)
    with_labels = Ts <= 24 and Tt <= 32 and small >= 1.8
    for r, layer in enumerate(layers):
        panels = [(f"head {h}", maps[layer, h] if (layer, h) in chosen else None) for h in heads]
        if len(heads) > 1:
            panels.append(("mean of heads", maps[layer, heads].mean(axis=0)))
        for c, (name, weights) in enumerate(panels):
            ax = axes[r][c]
            if weights is None:
                ax.axis("off")
                continue
            ax.imshow(weights, cmap="viridis", vmin=0.0, vmax=1.0, interpolation="nearest")
            ax.tick_params(length=0)
            if with_labels:
                _tokens_on_axis(ax, "x", source_labels, size=6)
                _tokens_on_axis(ax, "y", target_labels, size=6)
            else:
                ax.set_xticks([])
                ax.set_yticks([])
            if r == 0:
                ax.set_title(name, fontweight="bold", fontsize=10)
            if c == 0:
                ax.set_ylabel(f"layer {layer}", fontweight="bold", fontsize=10)
    return fig


# ---------------------------------------------------------------- token embeddings


def similarity_bars(labels: Sequence[str], similarity: Sequence[float], title: str, note: str = "",
                    highlight: int | None = None) -> Figure:
    """One bar per token, longest at the top: cosine similarity to a token (or to a − b + c)."""
    n = len(labels)
    fig, body = new_figure(7.5, 0.6 + 0.34 * n, title, *([note] if note else []))
    ax = body.subplots()
    colours = [BEST if i == highlight else "C0" for i in range(n)]
    bars = ax.barh(range(n), similarity, color=colours)
    ax.bar_label(bars, fmt="{:+.3f}", padding=3, fontsize=9)
    _tokens_on_axis(ax, "y", labels, size=12)
    if highlight is not None:
        ax.get_yticklabels()[highlight].set_fontweight("bold")
    ax.invert_yaxis()  # the most similar first
    ax.set_xlim(min(0.0, min(similarity, default=0.0)) * 1.2, 1.15)
    ax.axvline(0, color="#888888", lw=0.8)
    ax.set_xlabel("cosine similarity")
    ax.spines[["top", "right"]].set_visible(False)
    return fig


# spots to try around a point for its label, in points: right, left, above, below, then the corners, further out
_LABEL_SPOTS = [(dx * d, dy * d) for d in (3, 7, 12, 18, 26, 36)
                for dx, dy in ((1, 0), (-1, 0), (0, 1), (0, -1), (1, 1), (-1, 1), (1, -1), (-1, -1))]


def _place_labels(ax: Axes, xy: np.ndarray, labels: Sequence[str], colours: Sequence[str],
                  sizes: Sequence[float], every_label: bool) -> None:
    """Each label beside its point, at the first spot around it where it overlaps no earlier
    label; a label set further away gets a thin line back to its point. every_label=False
    tries only the spots next to the point and leaves out a label that finds none free.

    Sizes come from the renderer (one measurement per label); the spots are tried with arithmetic."""
    from matplotlib.patheffects import withStroke

    halo = withStroke(linewidth=2.5, foreground="white")  # a white outline keeps a label readable over dots
    renderer = ax.figure.canvas.get_renderer()
    frame = ax.get_window_extent(renderer)
    pixels_per_point = ax.figure.dpi / 72
    taken = np.empty((0, 4))  # x0, y0, x1, y1 of the labels placed so far, in pixels
    for (x, y), label, colour, size in zip(xy, labels, colours, sizes):
        style = dict(color=colour, fontsize=size, fontweight="bold" if len(label) == 1 else "normal", parse_math=False,
                     path_effects=[halo])
        probe = ax.annotate(label, (x, y), **style)
        w, h = probe.get_window_extent(renderer).size
        probe.remove()
        px, py = ax.transData.transform((x, y))
        for dx, dy in _LABEL_SPOTS if every_label else _LABEL_SPOTS[:16]:
            x0 = px + dx * pixels_per_point - (w if dx < 0 else w / 2 if dx == 0 else 0)
            y0 = py + dy * pixels_per_point - (h if dy < 0 else h / 2 if dy == 0 else 0)
            inside = frame.x0 <= x0 and x0 + w <= frame.x1 and frame.y0 <= y0 and y0 + h <= frame.y1
            overlaps = (x0 < taken[:, 2]) & (taken[:, 0] < x0 + w) & (y0 < taken[:, 3]) & (taken[:, 1] < y0 + h)
            if inside and not overlaps.any():
                break
        else:  # no spot free
            if not every_label:
                continue
            dx, dy = _LABEL_SPOTS[0]
            x0, y0 = px + dx * pixels_per_point, py - h / 2
        ax.annotate(label, (x, y), xytext=(dx, dy), textcoords="offset points",
                    ha="left" if dx > 0 else "right" if dx < 0 else "center",
                    va="bottom" if dy > 0 else "top" if dy < 0 else "center",
                    arrowprops=dict(arrowstyle="-", color="#bbbbbb", lw=0.6) if abs(dx) + abs(dy) > 8 else None,
                    **style)
        taken = np.vstack([taken, [x0, y0, x0 + w, y0 + h]])


def token_map(coords: np.ndarray, share: tuple[float, float], labels: Sequence[str], kinds: Sequence[str],
              palette: dict[str, str], title: str, note: str = "") -> Figure:
    """Every token at its place on the first two principal components, labelled and coloured
    by kind (`palette`: kind -> colour, in legend order). Beyond 400 tokens, coloured dots
    and labels for an even sample of them."""
    from matplotlib.patches import Patch

    n = len(coords)
    many = n > 400
    fig, body = new_figure(12.5, 8.5, title, "every token embedding projected on its two principal components "
                           "(PCA); nearby = similar vectors" + (f"; {note}" if note else ""))
    ax = body.subplots()
    colours = [palette[k] for k in kinds]
    ax.scatter(coords[:, 0], coords[:, 1], s=6 if many else 9, c=colours if many else "#999999", zorder=2)
    lo, hi = coords.min(axis=0), coords.max(axis=0)
    pad = (hi - lo) * 0.05 + 1e-9
    ax.set_xlim(lo[0] - pad[0], hi[0] + pad[0])
    ax.set_ylim(lo[1] - pad[1], hi[1] + pad[1])
    ax.axvline(0, color="#dddddd", lw=0.8, ls="--", zorder=1)
    ax.axhline(0, color="#dddddd", lw=0.8, ls="--", zorder=1)
    ax.set_xticks([])
    ax.set_yticks([])  # the coordinates' values mean nothing; only distances do
    ax.set_xlabel(f"1st principal component ({100 * share[0]:.1f}% of the variance)")
    ax.set_ylabel(f"2nd principal component ({100 * share[1]:.1f}%)")
    shown = range(0, n, _label_step(n, 300) if many else 1)
    present = [k for k in palette if k in set(kinds)]
    ax.legend(handles=[Patch(color=palette[k], label=k) for k in present], title="colour = kind of token",
              loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, alignment="left")
    with _missing_glyphs_allowed():
        fig.draw_without_rendering()  # lay the figure out once, then freeze it: labels are placed by measuring
        fig.set_layout_engine("none")
        _place_labels(ax, coords[shown], [labels[i] for i in shown], [colours[i] for i in shown],
                      [13 if len(labels[i]) == 1 else 9 for i in shown], every_label=not many)
    return fig


# ---------------------------------------------------------------- positional encodings


def sinusoidal_encoding(pe: np.ndarray, clocks: Sequence[tuple[int, float]], formula: str, title: str) -> Figure:
    """Left: a few dimension pairs (i, wavelength) as sine and cosine curves over the
    positions, with dots at the whole positions the model uses. Right: every value of the
    encoding, position x dimension."""
    T, d = pe.shape
    fig, body = new_figure(15, 1.9 * len(clocks) + 0.9, title,
                           "Sinusoidal positional encoding (fixed, no parameters): each pair of dimensions is a clock")
    body.suptitle(formula, x=0.01, ha="left", fontsize=11, fontweight="bold", color="#1f4e79")
    grid = body.add_gridspec(len(clocks), 2, width_ratios=[1.8, 1])
    p, fine = np.arange(T), np.linspace(0, T - 1, 8 * T)
    for k, (pair, wavelength) in enumerate(clocks):
        ax = body.add_subplot(grid[k, 0])
        turn = 2 * math.pi / wavelength  # radians per position
        ax.plot(fine, np.sin(turn * fine), color="C0", lw=1.4, label=f"dim {2 * pair}: sin")
        ax.plot(fine, np.cos(turn * fine), color="C1", lw=1.4, label=f"dim {2 * pair + 1}: cos")
        ax.plot(p, pe[:, 2 * pair], "o", color="C0", ms=2.5)  # what the model adds at each whole position
        ax.plot(p, pe[:, 2 * pair + 1], "o", color="C1", ms=2.5)
        ax.set_ylim(-1.15, 1.15)
        ax.set_xlim(0, T - 1)
        ax.grid(color="#eeeeee")
        ax.set_title(f"i={pair}: one turn every {wavelength:,.1f} positions", loc="left", fontsize=10,
                     fontweight="bold")
        ax.legend(loc="upper right", ncol=2, fontsize=8, bbox_to_anchor=(1.0, 1.3), frameon=False)
        if k == len(clocks) - 1:
            ax.set_xlabel("position p (dots: the values the model adds)")
    ax = body.add_subplot(grid[:, 1])
    image = ax.imshow(pe, cmap="RdBu_r", vmin=-1.0, vmax=1.0, interpolation="nearest", aspect="auto")
    ax.set_title(f"every value: position (row) × dimension (column), {T} × {d}", fontsize=10, fontweight="bold")
    ax.set_xlabel("dimension → (slower clocks to the right)")
    ax.set_ylabel("position")
    body.colorbar(image, ax=ax, label="value", shrink=0.6)
    return fig


def position_similarity(sim: np.ndarray, title: str, *notes: str) -> Figure:
    """A learned position table's cosine-similarity matrix, position p (row) x position q (column)."""
    T = sim.shape[0]
    fig, body = new_figure(9.5, 8, title, *notes)
    ax = body.subplots()
    image = ax.imshow(sim, cmap="RdBu_r", vmin=-1.0, vmax=1.0, interpolation="nearest")
    ticks = range(0, T, _label_step(T, 16))
    ax.set_xticks(ticks)
    ax.set_yticks(ticks)
    ax.set_xlabel("position q →")
    ax.set_ylabel("← position p")
    body.colorbar(image, ax=ax, label="cosine", shrink=0.6)
    return fig


# ---------------------------------------------------------------- the next token


def next_token_bars(labels: Sequence[str], panels: Sequence[tuple[float, np.ndarray, float]], title: str,
                    *notes: str) -> Figure:
    """One panel per temperature (T, probabilities of `labels`, entropy in bits): the same
    tokens in the same order in each, so the bars show what temperature does."""
    n = len(labels)
    fig, body = new_figure(4.6 * len(panels), 0.8 + 0.3 * n, title, *notes)
    axes = body.subplots(1, len(panels), sharey=True, squeeze=False)[0]
    for k, (ax, (t, probs, entropy)) in enumerate(zip(axes, panels)):
        bars = ax.barh(range(n), probs, color=f"C{k}")
        ax.bar_label(bars, labels=[format_prob(p) for p in probs], padding=3, fontsize=8)
        ax.set_xlim(0, 1.2)  # room for the label of a bar at 100%
        ax.set_xticks([0, 0.25, 0.5, 0.75, 1.0], ["0", "25%", "50%", "75%", "100%"])
        ax.set_title(f"T = {t:g}   (entropy {entropy:.2f} bits)", fontweight="bold", fontsize=10)
        ax.set_xlabel("probability")
        ax.spines[["top", "right"]].set_visible(False)
        _tokens_on_axis(ax, "y", labels, size=11)
        ax.tick_params(labelleft=True)  # every panel names its tokens
    axes[0].invert_yaxis()  # the favourite at the top (the axes share y)
    return fig


# ---------------------------------------------------------------- the residual stream and the logit lens


def logit_lens_picture(p_final: np.ndarray, top_labels: Sequence[Sequence[str]], contributions: np.ndarray,
                       row_labels: Sequence[str], tokens: Sequence[str], next_tokens: Sequence[str], title: str,
                       *notes: str) -> Figure:
    """Above, the logit lens as a heatmap, layer (row: the embedding, then each block) x position
    (column): coloured by p_final, the probability that layer's lens gives to the model's final
    prediction, with that layer's top token written in the cell. Below, contributions
    (n_layer, positions): the length of what each block adds to the residual stream there."""
    from matplotlib import colormaps

    layers, P = p_final.shape
    cell_w = min(0.8, max(0.45, 10.0 / P))  # inches per position
    width = cell_w * P + 3.2
    fig, body = new_figure(width, 0.42 * (2 * layers - 1) + 1.9, title, *notes)
    lens_ax, added_ax = body.subplots(2, 1, height_ratios=[layers, layers - 1])
    font = min(10.0, max(7.0, 14 * cell_w))

    def cells(ax: Axes, values: np.ndarray, texts: Sequence[Sequence[str]], cmap, vmin: float, vmax: float):
        image = ax.imshow(values, cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest", aspect="auto")
        for (r, c), v in np.ndenumerate(values):  # dark text on light cells, light on dark
            light = (v - vmin) / ((vmax - vmin) or 1.0) > 0.6
            ax.text(c, r, texts[r][c], ha="center", va="center", fontsize=font, parse_math=False,
                    color="black" if light else "white")
        ax.tick_params(length=0)
        return image

    image = cells(lens_ax, p_final, top_labels, colormaps["viridis"], 0.0, 1.0)
    lens_ax.set_yticks(range(layers), row_labels, fontsize=9)
    lens_ax.get_yticklabels()[-1].set_fontweight("bold")  # the last block's row: the model's own prediction
    _tokens_on_axis(lens_ax, "x", next_tokens, size=font + 1)
    lens_ax.set_xlabel("next token in the prompt (? = not yet written)", fontsize=9, color=NOTE)
    top = lens_ax.secondary_xaxis("top")
    top.set_xticks(range(P), tokens, fontsize=font + 1, parse_math=False,
                   rotation=0 if all(len(s) <= 2 for s in tokens) else 90)
    top.tick_params(length=0)
    top.set_xlabel("token at the position →", fontsize=9)
    body.colorbar(image, ax=lens_ax, label="p(final prediction)", shrink=0.9)

    vmax = float(contributions.max()) or 1.0
    numbers = [[f"{v:.2f}" if v < 1 else f"{v:.1f}" if v < 100 else f"{v:.0f}" for v in row] for row in contributions]
    image = cells(added_ax, contributions, numbers, colormaps["magma"], 0.0, vmax)
    added_ax.set_yticks(range(layers - 1), [f"+ block {l}" for l in range(layers - 1)], fontsize=9)
    _tokens_on_axis(added_ax, "x", tokens, size=font + 1)
    added_ax.set_title("what each block adds to the residual stream: ‖x after − x before‖", fontsize=10,
                       fontweight="bold", loc="left")
    body.colorbar(image, ax=added_ax, label="length (L2 norm)", shrink=0.9)
    return fig


# ---------------------------------------------------------------- the parameter tally


def parameter_families(names: Sequence[str], counts: Sequence[int], formulas: Sequence[str],
                       others: Sequence[str], total: int, title: str) -> Figure:
    """A bar per family of weight matrices (longest = largest), each with its count, share
    and shape in numbers; below, what lies outside the families, and the total."""
    n = len(names)
    families = sum(counts) or 1
    fig, body = new_figure(10, 0.45 * n + 0.25 * len(others) + 1.2, title,
                           f"eight families: {sum(counts):,} parameters; bar length = size of the family")
    bars_ax, rest_ax = body.subplots(2, 1, height_ratios=[0.45 * n, 0.25 * len(others) + 0.6])
    bars = bars_ax.barh(range(n), counts, color=[f"C{i}" for i in range(n)])
    bars_ax.bar_label(bars, labels=[f"{c:,}  ({100 * c / families:.1f}%)   = {f}" for c, f in zip(counts, formulas)],
                      padding=5, fontsize=10)
    bars_ax.set_yticks(range(n), names, fontsize=11)
    bars_ax.invert_yaxis()
    bars_ax.set_xlim(0, max(counts, default=1) * 1.8)  # room for the text after the longest bar
    bars_ax.set_xticks([])
    bars_ax.spines[["top", "right", "bottom"]].set_visible(False)
    rest_ax.axis("off")
    lines = [("Not in the families:", "bold"), *((f"    {line}", "normal") for line in others), (f"Total: {total:,}", "bold")]
    for k, (line, weight) in enumerate(lines):  # one line every 17 points down from the top left
        rest_ax.annotate(line, (0, 1), xycoords="axes fraction", xytext=(0, -17 * k), textcoords="offset points",
                         va="top", fontsize=10, fontweight=weight)
    return fig
