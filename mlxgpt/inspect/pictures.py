"""Building blocks for the saved pictures: heatmaps, colour bars, bar charts,
line plots, labelled scatter plots, all drawn on a Canvas (canvas.py)."""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from mlxgpt.inspect.canvas import MASKED, VIRIDIS, Canvas, _rgb, ramp, ramp_rgb, readable_on, text_width


def heatmap(cv: Canvas, x: float, y: float, values: np.ndarray, cell: float, *,
            row_labels: Sequence[str] | None = None, col_labels: Sequence[str] | None = None,
            mask: np.ndarray | None = None, vmin: float = 0.0, vmax: float = 1.0,
            stops: list[str] = VIRIDIS, label_size: float | None = None, annotate: bool = False,
            col_labels_below: bool = False, label_every: int = 1) -> None:
    """Cells of `cell` units from (x, y); row labels to the left, column labels above (or below).

    Labels of one or two characters sit upright in their cell; longer ones are
    rotated. label_every=n labels only every n-th row/column (for long axes)."""
    n_rows, n_cols = values.shape
    span = (vmax - vmin) or 1.0
    rgb = ramp_rgb(stops, (np.asarray(values, dtype=np.float64) - vmin) / span)
    if mask is not None:
        rgb[mask] = _rgb(MASKED)
    cv.cells(x, y, cell, cell, rgb)
    if annotate:
        for i in range(n_rows):
            for j in range(n_cols):
                if mask is not None and mask[i, j]:
                    continue
                v = float(values[i, j])
                cv.text(x + j * cell + cell / 2, y + i * cell + cell / 2 + cell * 0.13,
                        f"{v:.2f}"[1:] if 0 <= v < 1 else f"{v:.1f}", cell * 0.36,
                        readable_on("#{:02x}{:02x}{:02x}".format(*rgb[i, j].tolist())),
                        anchor="middle")
    cv.rect(x, y, n_cols * cell, n_rows * cell, "none", stroke="#888888")
    size = label_size or min(12.0, max(6.0, cell * 0.8))
    if row_labels is not None:
        for i, s in enumerate(row_labels):
            if i % label_every == 0:
                cv.text(x - 4, y + i * cell + cell / 2 + size * 0.35, s, size, anchor="end")
    if col_labels is not None:
        upright = all(len(s) <= 2 for s in col_labels) and text_width("mm", size) <= cell * label_every * 1.6
        for j, s in enumerate(col_labels):
            if j % label_every:
                continue
            cx = x + j * cell + cell / 2
            if col_labels_below:
                if upright:
                    cv.text(cx, y + n_rows * cell + size + 2, s, size, anchor="middle")
                else:
                    cv.text(cx + size * 0.35, y + n_rows * cell + 4, s, size, anchor="end", rotate=-90)
            else:
                if upright:
                    cv.text(cx, y - 4, s, size, anchor="middle")
                else:
                    cv.text(cx + size * 0.35, y - 4, s, size, anchor="start", rotate=-90)


def label_extent(labels: Sequence[str], size: float) -> float:
    """Room needed for a column of labels (width) or rotated labels (height)."""
    return max((text_width(s, size) for s in labels), default=0.0)


def colour_bar(cv: Canvas, x: float, y: float, height: float, *, vmin: float, vmax: float,
               stops: list[str] = VIRIDIS, label: str = "", width: float = 12, ticks: int = 5) -> None:
    steps = 60
    for k in range(steps):
        t = 1 - k / (steps - 1)
        cv.rect(x, y + k * height / steps, width, height / steps + 0.3, ramp(stops, t))
    cv.rect(x, y, width, height, "none", stroke="#888888")
    for k in range(ticks):
        v = vmin + (vmax - vmin) * k / (ticks - 1)
        ty = y + height - height * k / (ticks - 1)
        cv.line(x + width, ty, x + width + 3, ty, "#666666", 0.8)
        cv.text(x + width + 5, ty + 3.5, f"{v:.2f}".rstrip("0").rstrip(".") if "." in f"{v:.2f}" else f"{v}", 10)
    if label:
        cv.text(x + width / 2, y - 12, label, 10, "#444444", anchor="middle")


def hbar_chart(cv: Canvas, x: float, y: float, labels: Sequence[str], values: Sequence[float], *,
               bar_width: float, row_h: float = 18, vmax: float | None = None, colour: str = "#4e79a7",
               value_fmt: str = "{:.3f}", highlight: int | None = None, label_size: float = 11,
               title: str = "") -> float:
    """Horizontal bars, one per label; returns the y below the chart."""
    vmax = vmax if vmax is not None else max((abs(v) for v in values), default=1.0) or 1.0
    label_w = label_extent(labels, label_size) + 6
    if title:
        cv.text(x, y + 12, title, 12, bold=True)
        y += 20
    for i, (s, v) in enumerate(zip(labels, values)):
        ry = y + i * row_h
        cv.text(x + label_w - 6, ry + row_h * 0.7, s, label_size, anchor="end", bold=(i == highlight))
        w = bar_width * max(0.0, v) / vmax
        cv.rect(x + label_w, ry + 2, max(w, 0.6), row_h - 4, "#e15759" if i == highlight else colour)
        cv.text(x + label_w + w + 4, ry + row_h * 0.7, value_fmt.format(v), 10, "#333333")
    return y + len(labels) * row_h


def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if hi <= lo:
        return [lo]
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    start = math.ceil(lo / step) * step
    ticks, v = [], start
    while v <= hi + 1e-9:
        ticks.append(round(v, 10))
        v += step
    return ticks


def line_plot(cv: Canvas, x: float, y: float, w: float, h: float, series: Sequence[tuple[str, np.ndarray,
              np.ndarray, str]], *, xlabel: str = "", ylabel: str = "", title: str = "",
              ylim: tuple[float, float] | None = None, legend: bool = True):
    """series: (name, xs, ys, colour). Axes with ticks, the legend above the top right corner.

    Returns the (px, py) functions mapping data to canvas coordinates, for extra marks."""
    xs_all = np.concatenate([s[1] for s in series])
    ys_all = np.concatenate([s[2] for s in series])
    x0, x1 = float(xs_all.min()), float(xs_all.max())
    y0, y1 = ylim if ylim else (float(ys_all.min()), float(ys_all.max()))
    if x1 == x0:
        x1 = x0 + 1
    if y1 == y0:
        y1 = y0 + 1
    px = lambda v: x + (v - x0) / (x1 - x0) * w
    py = lambda v: y + h - (v - y0) / (y1 - y0) * h
    cv.rect(x, y, w, h, "#fbfbfb", stroke="#999999")
    for t in nice_ticks(y0, y1, 4):
        cv.line(x, py(t), x + w, py(t), "#e3e3e3", 0.6)
        cv.text(x - 4, py(t) + 3.5, f"{t:g}", 9, "#555555", anchor="end")
    for t in nice_ticks(x0, x1, 8):
        cv.line(px(t), y + h, px(t), y + h + 3, "#666666", 0.8)
        cv.text(px(t), y + h + 13, f"{t:g}", 9, "#555555", anchor="middle")
    for name, xs, ys, colour in series:
        cv.polyline([(px(float(a)), py(float(b))) for a, b in zip(xs, ys)], colour, 1.4)
    if title:
        cv.text(x, y - 6, title, 11, bold=True)
    if xlabel:
        cv.text(x + w / 2, y + h + 26, xlabel, 10, "#444444", anchor="middle")
    if ylabel:
        cv.text(x - 30, y + h / 2, ylabel, 10, "#444444", anchor="middle", rotate=-90)
    if legend:  # one row above the plot, right-aligned
        lx = x + w
        for name, _, _, colour in reversed(series):
            lx -= text_width(name, 9)
            cv.text(lx, y - 6, name, 9, "#333333")
            cv.line(lx - 18, y - 9, lx - 4, y - 9, colour, 2)
            lx -= 30
    return px, py


def place_labels(points: Sequence[tuple[float, float]], boxes: Sequence[tuple[float, float]],
                 area: tuple[float, float, float, float]) -> list[tuple[float, float, bool]]:
    """Where to put each label (w, h) near its point without overlapping earlier ones.

    Greedy: try spots around the point at growing distances. Returns (x, baseline y,
    moved) per label; `moved` labels are far enough to deserve a leader line."""
    x0, y0, x1, y1 = area
    placed: list[tuple[float, float, float, float]] = []
    out = []
    for (px, py), (w, h) in zip(points, boxes):
        best = None
        for dist in (3, 7, 12, 18, 26, 36):
            for dx, dy in ((dist, -h / 2), (-dist - w, -h / 2), (-w / 2, -dist - h), (-w / 2, dist),
                           (dist, -dist - h), (-dist - w, -dist - h), (dist, dist), (-dist - w, dist)):
                bx, by = px + dx, py + dy  # top-left of the label box
                if bx < x0 or by < y0 or bx + w > x1 or by + h > y1:
                    continue
                if all(bx + w <= qx or qx + qw <= bx or by + h <= qy or qy + qh <= by for qx, qy, qw, qh in placed):
                    best = (bx, by, dist > 7)
                    break
            if best:
                break
        if best is None:
            best = (min(max(px + 3, x0), x1 - w), min(max(py - h / 2, y0), y1 - h), False)
        bx, by, moved = best
        placed.append((bx, by, w, h))
        out.append((bx, by + h * 0.82, moved))
    return out
