"""The dashboard's loss chart: train and val loss against iterations, drawn in
text by plotext (6.x) and redrawn only when the curves or the panel's size change."""

from __future__ import annotations

import plotext as plt  # imported now: its ~0.4 s import must not land inside a training step
from rich.console import Console, ConsoleOptions, RenderResult
from rich.panel import Panel
from rich.text import Text

from mlxgpt.ui.dashboard.state import DashboardState
from mlxgpt.ui.format import nice_ticks, tick_label
from mlxgpt.ui.history import LossHistory

# 256-colour codes for plotext and the matching Rich names for legends
TRAIN_COLOR, VAL_COLOR = 39, 208
TRAIN_STYLE, VAL_STYLE, BPC_STYLE = "color(39)", "color(208)", "color(34)"

Series = tuple[list[float], list[float], int, str, str]  # xs, ys, colour, marker, which y axis ("left"/"right")


def _plot_ansi(series: list[Series], width: int, height: int, x_ticks: list[float], y_lim: tuple[float, float],
               right_lim: tuple[float, float] | None) -> str:
    """Lines drawn by plotext's figure API, as a string with ANSI colours."""
    plt.terminal.limit(False, False)  # the size is the panel's, not the terminal's
    fig = plt.figure
    fig.clear()
    fig.theme("simple")
    fig.plot_size(width, height)
    for xs, ys, color, marker, yside in series:
        curve = fig.signal(xs, ys, marker=plt.marker(marker, color), yside=yside)
        curve.lines()
        fig.draw(curve)
    fig.ruler("x").ticks(x_ticks, [tick_label(t) for t in x_ticks])
    fig.ruler("y", "left").lim(*y_lim)
    if right_lim:
        fig.ruler("y", "right").lim(*right_lim)
    return str(fig.build())


def _thin(points: list[tuple[int, float]], most: int) -> list[tuple[int, float]]:
    """At most `most` points, each the mean of a run of neighbours: the chart has
    only so many columns, and plotext's time grows with the points it is given."""
    if len(points) <= most:
        return points
    size = len(points) / most
    out = []
    for n in range(most):
        chunk = points[int(n * size):max(int((n + 1) * size), int(n * size) + 1)]
        out.append((chunk[-1][0], sum(p[1] for p in chunk) / len(chunk)))
    return out


def loss_chart_text(history: LossHistory, width: int, height: int) -> Text:
    """Train loss (every logged step) and val loss (each eval) against iterations.

    Val bits per character is a fixed multiple of val loss (total nats / chars / ln 2),
    so instead of a third curve the right axis reads the same picture in bits per char."""
    if width < 24 or height < 5:
        return Text("(enlarge the terminal to see the chart)", style="dim")
    if not history.steps and not history.evals:
        return Text("waiting for the first step (MLX compiles the training step on first use)…", style="dim")
    steps = _thin(history.steps, 2 * width)
    series: list[Series] = []
    if steps:
        series.append(([s[0] for s in steps], [s[1] for s in steps], TRAIN_COLOR, "braille", "left"))
    ratio = history.bits_per_nat
    if history.evals:
        xs, ys = [e[0] for e in history.evals], [e[2] for e in history.evals]
        if ratio:  # drawn under the val curve: it only makes plotext draw the right axis
            series.append((xs, [y * ratio for y in ys], VAL_COLOR, "hd", "right"))
        series.append((xs, ys, VAL_COLOR, "hd", "left"))
    all_x = [x for s in series for x in s[0]]
    all_y = [y for s in series if s[4] == "left" for y in s[1]]
    lo, hi = min(all_x), max(all_x)
    ticks = nice_ticks(lo, hi, max(2, min(8, width // 12))) if hi > lo else [lo]
    y_lo, y_hi = min(all_y), max(all_y)
    pad = max(0.02, 0.04 * (y_hi - y_lo))
    y_lim = (y_lo - pad, y_hi + pad)
    right_lim = (y_lim[0] * ratio, y_lim[1] * ratio) if ratio else None
    try:
        ansi = _plot_ansi(series, width, height, ticks, y_lim, right_lim)
    except Exception as exc:  # a plotting library quirk must never stop training
        return Text(f"(chart unavailable: {type(exc).__name__}: {exc})", style="dim")
    text = Text.from_ansi(ansi.rstrip("\n"))
    text.no_wrap = True
    return text


class ChartCache:
    """The last chart drawn: redrawn only when the curves or the size change."""

    def __init__(self) -> None:
        self.key: tuple | None = None
        self.text: Text = Text()
        self.builds = 0

    def chart(self, state: DashboardState, width: int, height: int, version: int | None = None) -> Text:
        key = (state.version if version is None else version, width, height)
        if key != self.key:
            self.text = loss_chart_text(state.history, width, height)
            self.key = key
            self.builds += 1
        return self.text


class LossChart:
    """A renderable that draws the chart at whatever size its region has."""

    def __init__(self, state: DashboardState, cache: ChartCache, height: int | None = None,
                 version: int | None = None) -> None:
        self.state, self.cache, self.height, self.version = state, cache, height, version

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        height = self.height or options.height or 12
        yield self.cache.chart(self.state, options.max_width, height, self.version)


def chart_legend(state: DashboardState) -> Text:
    legend = Text.assemble(("⣿ train", TRAIN_STYLE), "  ", ("▞ val", VAL_STYLE))
    if state.history.bits_per_nat:
        legend.append("  right axis: bits/char", style="dim")
    return legend


def chart_panel(state: DashboardState, cache: ChartCache, height: int | None = None,
                version: int | None = None) -> Panel:
    return Panel(LossChart(state, cache, height, version), title="loss (nats/token)", title_align="left",
                 subtitle=chart_legend(state), subtitle_align="left", border_style="blue", padding=(0, 0),
                 height=height + 2 if height else None)
