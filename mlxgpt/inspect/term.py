"""Terminal heatmaps and helpers for the inspect views (Rich).

In a colour terminal a cell is a coloured block; half blocks ("▀": top colour
as foreground, bottom colour as background) fit two rows in one line of text.
Without colour (a pipe, a file, NO_COLOR) a cell becomes a shade character
from " .:-=+*#%@", so the picture survives in plain text too.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Callable, Sequence

import numpy as np
from rich.console import Console
from rich.style import Style
from rich.text import Text

SHADES = " .:-=+*#%@"
MASK_CHAR = "·"
TERM_MASKED = "#3a3a3a"  # dark grey: the hidden (future) half of an attention map
# matplotlib's colour maps, so the terminal shows the colours of the saved pictures (mlxgpt/plots.py)
VIRIDIS = "viridis"  # perceptually uniform, readable in grey and by most colour-blind readers
DIVERGING = "RdBu_r"  # blue = negative, white = 0, red = positive


@lru_cache(maxsize=None)
def _palette(cmap: str) -> tuple[str, ...]:
    """256 hex colours along a matplotlib colour map."""
    from matplotlib import colormaps
    from matplotlib.colors import to_hex

    return tuple(to_hex(rgba) for rgba in colormaps[cmap](np.linspace(0.0, 1.0, 256)))


def colour(cmap: str, t: float) -> str:
    """The colour at t in [0, 1] (NaN counts as 0) along a colour map, as '#rrggbb'."""
    t = 0.0 if t != t else min(1.0, max(0.0, t))
    return _palette(cmap)[int(round(t * 255))]


def console() -> Console:
    return Console(highlight=False)


def has_colour(con: Console) -> bool:
    return con.color_system is not None


def shade(t: float) -> str:
    """A character for t in [0, 1]: ' ' only for (almost) nothing, so faint weights stay visible."""
    t = 0.0 if t != t else min(1.0, max(0.0, t))
    if t < 0.005:
        return SHADES[0]
    return SHADES[min(len(SHADES) - 1, 1 + int(t * (len(SHADES) - 1)))]


def normaliser(vmin: float, vmax: float) -> Callable[[float], float]:
    span = (vmax - vmin) or 1.0
    return lambda v: (v - vmin) / span


def heatmap_text(values: np.ndarray, *, con: Console, row_labels: Sequence[str] | None = None,
                 col_labels: Sequence[str] | None = None, mask: np.ndarray | None = None,
                 vmin: float = 0.0, vmax: float = 1.0, cmap: str = VIRIDIS,
                 cell_width: int = 2) -> Text:
    """A full-size heatmap: one text line per row, `cell_width` characters per cell.

    mask[i, j] True means "not allowed" (drawn as a dim dot)."""
    norm = normaliser(vmin, vmax)
    n_rows, n_cols = values.shape
    label_w = max((len(s) for s in row_labels), default=0) if row_labels else 0
    out = Text()
    if col_labels is not None:
        longest = max((len(s) for s in col_labels), default=1)
        if longest <= cell_width:  # one line of labels, each centred in its cell
            out.append(" " * (label_w + 1))
            for s in col_labels:
                out.append(s.center(cell_width), style="bold")
            out.append("\n")
        else:  # long labels (subword tokens) run downwards, one character per line
            depth = min(longest, 8)
            for line in range(depth):
                out.append(" " * (label_w + 1))
                for s in col_labels:
                    ch = s[line] if line < len(s) else " "
                    out.append(ch.center(cell_width), style="bold")
                out.append("\n")
    coloured = has_colour(con)
    for i in range(n_rows):
        if row_labels is not None:
            out.append(row_labels[i].rjust(label_w) + " ", style="bold")
        for j in range(n_cols):
            if mask is not None and mask[i, j]:
                out.append(MASK_CHAR.center(cell_width), style="grey42")
                continue
            t = norm(float(values[i, j]))
            if coloured:
                out.append("█" * cell_width, style=Style(color=colour(cmap, t)))
            else:
                out.append(shade(t) * cell_width)
        out.append("\n")
    return out


def half_block_text(values: np.ndarray, *, con: Console, mask: np.ndarray | None = None,
                    vmin: float = 0.0, vmax: float = 1.0, cmap: str = VIRIDIS) -> Text:
    """A compact heatmap: one character per column, two rows per line."""
    norm = normaliser(vmin, vmax)
    n_rows, n_cols = values.shape
    coloured = has_colour(con)

    def colour_at(i: int, j: int) -> str | None:
        if i >= n_rows:
            return None
        if mask is not None and mask[i, j]:
            return TERM_MASKED if coloured else None
        return colour(cmap, norm(float(values[i, j])))

    out = Text()
    if not coloured:  # one line per row, shade characters
        for i in range(n_rows):
            for j in range(n_cols):
                masked = mask is not None and mask[i, j]
                out.append(" " if masked else shade(norm(float(values[i, j]))))
            out.append("\n")
        out.rstrip()
        return out
    for i in range(0, n_rows, 2):
        for j in range(n_cols):
            top, bottom = colour_at(i, j), colour_at(i + 1, j)
            out.append("▀", style=Style(color=top, bgcolor=bottom))
        out.append("\n")
    out.rstrip()
    return out


def colour_scale(con: Console, vmin: float, vmax: float, cmap: str = VIRIDIS, width: int = 20,
                 fmt: str = "{:.2f}") -> Text:
    """A legend: vmin ████ vmax."""
    out = Text(fmt.format(vmin) + " ", style="dim")
    for k in range(width):
        t = k / (width - 1)
        if has_colour(con):
            out.append("█", style=Style(color=colour(cmap, t)))
        else:
            out.append(shade(t))
    out.append(" " + fmt.format(vmax), style="dim")
    return out
