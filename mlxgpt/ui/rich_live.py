"""The training dashboard: one Rich `Live` layout fed by the training loop's events.

    ┌ header: run directory, what Ctrl-C does ────────────────────────────┐
    │ progress: iter / total, bar, elapsed, ETA                           │
    ├ loss chart (plotext) ─────────────────┬ now: losses, lr, speed, ... ┤
    │                                       ├ configuration ──────────────┤
    ├ latest sample ────────────────────────┴─────────────────────────────┤

It observes events and owns nothing: the loop never waits for it except for the
time spent inside `__call__`, which is kept small by redrawing at a bounded,
self-adjusting rate (never more than `max_refresh_per_s`, and never more often
than keeps drawing under `budget` of the elapsed time). No background thread:
`Live(auto_refresh=False)` + `live.update(..., refresh=True)`, so every cost is
counted in `ui_seconds` and shown on screen.

The dashboard takes the terminal's alternate screen (like `top`), so the
terminal is left exactly as it was when the run ends, is interrupted, or
crashes (`close()` is called from a `finally`); then a summary is printed.
"""

from __future__ import annotations

import math
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import plotext  # noqa: F401 (imported now: its ~0.4 s import must not land inside a training step)
from rich import box
from rich.console import Console, ConsoleOptions, Group, RenderableType, RenderResult
from rich.layout import Layout
from rich.live import Live
from rich.panel import Panel
from rich.progress_bar import ProgressBar
from rich.segment import Segment
from rich.table import Table
from rich.text import Text

from mlxgpt.events import (CheckpointSaved, Event, EvalDone, RunFinished, RunStarted, SampleGenerated,
                           StepLogged)
from mlxgpt.ui.picture import LossHistory, nice_ticks
from mlxgpt.ui.plain import format_count

# 256-colour codes for plotext and the matching Rich names for legends
TRAIN_COLOR, VAL_COLOR = 39, 208
TRAIN_STYLE, VAL_STYLE, BPC_STYLE = "color(39)", "color(208)", "color(34)"


# ---------------------------------------------------------------- state


@dataclass
class DashboardState:
    """What the events said so far: plain data, no rendering."""

    started: RunStarted | None = None
    step: StepLogged | None = None
    eval: EvalDone | None = None
    best: EvalDone | None = None
    sample: SampleGenerated | None = None
    sample_val: float | None = None  # val loss when the sample was drawn
    earlier: tuple[SampleGenerated, float | None] | None = None  # the one before, to see the progress
    saved: dict[str, int] = field(default_factory=dict)  # which -> iter
    finished: RunFinished | None = None
    history: LossHistory = field(default_factory=LossHistory)
    version: int = 0  # bumped when the curves change (the chart's cache key)
    started_at: float = 0.0  # perf_counter() at RunStarted

    def update(self, event: Event) -> None:
        if isinstance(event, RunStarted):
            self.started, self.started_at = event, time.perf_counter()
            if event.start_iter:  # resuming: show the whole run's past, as metrics.jsonl recorded it
                self.history = LossHistory.from_metrics(Path(event.out_dir) / "metrics.jsonl")
                self.history.truncate(event.start_iter)
                past = [e for e in self.history.evals]
                if past:
                    self.best = _eval_from(min(past, key=lambda e: e[2]))
                    self.eval = _eval_from(past[-1])
            self.version += 1
        elif isinstance(event, StepLogged):
            self.step = event
            self.history.add_step(event.iter, event.train_loss)
            self.version += 1
        elif isinstance(event, EvalDone):
            self.eval = event
            if event.is_best or self.best is None or event.val_loss < self.best.val_loss:
                self.best = event
            self.history.add_eval(event.iter, event.train_loss, event.val_loss, event.val_bpc)
            self.version += 1
        elif isinstance(event, SampleGenerated):
            if self.sample is not None and self.sample.iter != event.iter:
                self.earlier = (self.sample, self.sample_val)
            self.sample = event
            self.sample_val = self.eval.val_loss if self.eval and self.eval.iter == event.iter else None
        elif isinstance(event, CheckpointSaved):
            self.saved[event.which] = event.iter
        elif isinstance(event, RunFinished):
            self.finished = event

    @property
    def iteration(self) -> int:
        if self.finished:
            return self.finished.iter
        if self.step:
            return self.step.iter
        return self.started.start_iter if self.started else 0

    @property
    def max_iters(self) -> int:
        if self.step:
            return self.step.max_iters
        return int(self.started.train_args.get("max_iters", 0)) if self.started else 0

    def elapsed(self) -> float:
        return time.perf_counter() - self.started_at if self.started else 0.0

    def eta(self) -> float | None:
        """Seconds left, from the pace of this process so far (evals included)."""
        if not self.started or not self.step:
            return None
        done = self.step.iter - self.started.start_iter
        if done <= 0:
            return None
        return self.step.elapsed_s / done * max(0, self.max_iters - self.step.iter)

    @property
    def samples_on(self) -> bool:
        """Whether training draws a sample at each evaluation (--sample-tokens > 0)."""
        return bool(self.started and self.started.train_args.get("sample_tokens", 0) > 0)

    @property
    def time_budget(self) -> float | None:
        """--time-budget, in seconds (None: train until max_iters)."""
        budget = self.started.train_args.get("time_budget") if self.started else None
        return float(budget) if budget else None


def _eval_from(record: tuple[int, float, float, float]) -> EvalDone:
    it, train, val, bpc = record
    return EvalDone(it, train, val, bpc, math.nan, math.nan, val, True)


# ---------------------------------------------------------------- formatting


def duration(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "--:--"
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def _loss(value: float | None) -> str:
    return f"{value:.4f}" if value is not None and math.isfinite(value) else "—"


def _megabytes(mb: float) -> str:
    return f"{mb / 1024:.2f} GB" if mb >= 1024 else f"{mb:.0f} MB"


def _sci(value: float) -> str:
    short = f"{value:.0e}"
    return short if float(short) == value else f"{value:.2e}"


def _short_blas(blas: str) -> str:
    return blas.split(" (")[0]


# ---------------------------------------------------------------- the chart


def _plot_ansi(series: list[tuple[list[float], list[float], int, str, str]], width: int, height: int,
               x_ticks: list[float], x_labels: list[str], y_lim: tuple[float, float],
               right_lim: tuple[float, float] | None) -> str:
    """Lines drawn by plotext, as a string with ANSI colours. series: (xs, ys, colour, marker, yside)."""
    import plotext as plt

    if hasattr(plt, "figure") and hasattr(plt.figure, "signal"):  # plotext >= 6: the figure API
        plt.terminal.limit(False, False)  # the size is the panel's, not the terminal's
        fig = plt.figure
        fig.clear()
        fig.theme("simple")
        fig.plot_size(width, height)
        for xs, ys, color, marker, yside in series:
            curve = fig.signal(xs, ys, marker=plt.marker(marker, color), yside=yside)
            curve.lines()
            fig.draw(curve)
        fig.ruler("x").ticks(x_ticks, x_labels)
        fig.ruler("y", "left").lim(*y_lim)
        if right_lim:
            fig.ruler("y", "right").lim(*right_lim)
        return str(fig.build())
    plt.clear_figure()  # plotext 5: module-level functions
    plt.limitsize(False, False)
    plt.theme("clear")
    plt.plotsize(width, height)
    for xs, ys, color, marker, yside in series:
        plt.plot(xs, ys, marker=marker, color=color, yside=yside)
    plt.xticks(x_ticks, x_labels)
    plt.ylim(*y_lim, yside="left")
    if right_lim:
        plt.ylim(*right_lim, yside="right")
    return plt.build()


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


def _tick_label(value: float) -> str:
    if abs(value) >= 10_000:
        return f"{value / 1000:g}k"
    return f"{int(value)}" if value == int(value) else f"{value:g}"


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


def loss_chart_text(history: LossHistory, width: int, height: int) -> Text:
    """Train loss (every logged step) and val loss (each eval) against iterations.

    Val bits per character is a fixed multiple of val loss (total nats / chars / ln 2),
    so instead of a third curve the right axis reads the same picture in bits per char."""
    if width < 24 or height < 5:
        return Text("(enlarge the terminal to see the chart)", style="dim")
    if not history.steps and not history.evals:
        return Text("waiting for the first step (MLX compiles the training step on first use)…", style="dim")
    steps = _thin(history.steps, 2 * width)
    series = []
    if steps:
        series.append(([s[0] for s in steps], [s[1] for s in steps], TRAIN_COLOR, "braille", "left"))
    ratios = [e[3] / e[2] for e in history.evals if math.isfinite(e[3]) and e[2] > 0]
    ratio = ratios[-1] if ratios else None
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
        ansi = _plot_ansi(series, width, height, ticks, [_tick_label(t) for t in ticks], y_lim, right_lim)
    except Exception as exc:  # a plotting library quirk must never stop training
        return Text(f"(chart unavailable: {type(exc).__name__}: {exc})", style="dim")
    text = Text.from_ansi(ansi.rstrip("\n"))
    text.no_wrap = True
    return text


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
    if any(math.isfinite(e[3]) for e in state.history.evals):
        legend.append("  right axis: bits/char", style="dim")
    return legend


def chart_panel(state: DashboardState, cache: ChartCache, height: int | None = None,
                version: int | None = None) -> Panel:
    return Panel(LossChart(state, cache, height, version), title="loss (nats/token)", title_align="left",
                 subtitle=chart_legend(state), subtitle_align="left", border_style="blue", padding=(0, 0),
                 height=height + 2 if height else None)


# ---------------------------------------------------------------- the other regions


def header(state: DashboardState) -> Table:
    grid = Table.grid(expand=True)
    grid.add_column(ratio=1, no_wrap=True, overflow="ellipsis")
    grid.add_column(justify="right", no_wrap=True)
    where = f" training · {state.started.out_dir}" if state.started else " starting…"
    hint = "finished" if state.finished else "Ctrl-C: stop & save"
    grid.add_row(Text.assemble(("mlxgpt", "bold magenta"), where), Text(hint, style="dim"))
    return grid


def progress_line(state: DashboardState) -> Table:
    it, total = state.iteration, max(1, state.max_iters)
    grid = Table.grid(expand=True, padding=(0, 1))
    grid.add_column(no_wrap=True)
    grid.add_column(ratio=1)
    grid.add_column(no_wrap=True, justify="right")
    grid.add_row(Text(f"iter {it:,}/{state.max_iters:,}", style="bold"),
                 ProgressBar(total=total, completed=min(it, total), complete_style="green", finished_style="green"),
                 Text(f"{it / total:4.0%}  elapsed {duration(state.elapsed())}  ETA {duration(state.eta())}"
                      + (f"  budget {duration(state.time_budget)}" if state.time_budget else "")))
    return grid


def key_values(rows: list[tuple[str, str | Text]], key_width: int = 11) -> Text:
    """Aligned `key  value` lines; long values end in … instead of wrapping."""
    text = Text(no_wrap=True, overflow="ellipsis")
    for n, (key, value) in enumerate(rows):
        if n:
            text.append("\n")
        text.append(f"{key:<{key_width}} ", style="dim")
        text.append(value if isinstance(value, Text) else Text(str(value)))
    return text


def stats_rows(state: DashboardState, ui_fraction: float | None = None,
               peak_flops: float | None = None) -> list[tuple[str, str | Text]]:
    """The numbers of the moment."""
    step, ev, best, st = state.step, state.eval, state.best, state.started
    rows: list[tuple[str, str | Text]] = [("train loss", Text(_loss(step.train_loss if step else None), style=TRAIN_STYLE))]
    val = Text(_loss(ev.val_loss if ev else None), style=VAL_STYLE)
    if ev and math.isfinite(ev.val_bpc):
        val.append(f" · {ev.val_bpc:.4f} bits/char", style=BPC_STYLE)
    rows.append(("val loss", val))
    rows.append(("best val", f"{best.val_loss:.4f} @ iter {best.iter:,}" if best else "—"))
    rows.append(("lr", f"{step.lr:.2e}" if step else "—"))
    rows.append(("grad norm", f"{step.grad_norm:.3f}" if step else "—"))
    if step:
        ms = f"{step.ms_per_iter:.0f}" if step.ms_per_iter >= 100 else f"{step.ms_per_iter:.1f}"
        rows.append(("speed", f"{format_count(step.tokens_per_s)} tok/s · {ms} ms/iter"))
    else:
        rows.append(("speed", "—"))
    if step and st:
        flops = st.flops_per_token * step.tokens_per_s
        rows.append(("model FLOPs", f"{flops / 1e9:.2f} GFLOP/s"))
        rows.append(("MFU", f"{flops / peak_flops:.1%}" if peak_flops else "n/a (peak FLOP/s not measured)"))
        rows.append(("memory", f"{_megabytes(step.active_memory_mb)} · peak {_megabytes(step.peak_memory_mb)}"))
    else:
        rows += [("model FLOPs", "—"), ("MFU", "—"), ("memory", "—")]
    if st:
        rows.append(("device", f"{st.device} · BLAS {_short_blas(st.blas)}"))
        parallelism = getattr(st, "parallelism", "")
        if parallelism:
            rows.append(("threads", parallelism))
        rows.append(("params", f"{format_count(st.n_params)} · {format_count(st.n_params_total)} with embeddings"))
    if state.saved:
        rows.append(("saved", " · ".join(f"{which} @{it:,}" for which, it in sorted(state.saved.items()))))
    if ui_fraction is not None:
        rows.append(("UI cost", f"{ui_fraction:.2%} of elapsed time"))
    return rows


def config_rows(state: DashboardState) -> list[tuple[str, str | Text]]:
    st = state.started
    if not st:
        return []
    m, t = st.model_args, st.train_args
    decay = t.get("lr_decay_iters") or t.get("max_iters")
    rows = [("preset", f"{st.preset} ({st.preset_note})"),
            ("data", f"{format_count(st.train_tokens)} train / {format_count(st.val_tokens)} val tokens"),
            ("tokenizer", f"{st.tokenizer}, vocab {st.vocab_size:,}"),
            ("model", f"{m['n_layer']} layers · {m['n_head']} heads · {m['n_embd']} embd"),
            ("context", f"block {m['block_size']} · dropout {m['dropout']:g} · {m.get('pos_embedding', '')} pos"),
            ("batch", f"{t['batch_size']} × {t['grad_accum']} accum = {st.tokens_per_iter:,} tok/iter"),
            ("lr", f"{_sci(t['lr'])} → {_sci(t['min_lr'])} · warmup {t['warmup_iters']} · decay {decay}"),
            ("AdamW", f"β2 {t['beta2']:g} · wd {t['weight_decay']:g} · clip {t['grad_clip']:g}"),
            ("eval", f"every {t['eval_interval']} · {t['eval_iters']} batches"),
            ("seed", str(t["seed"]))]
    if st.start_iter:
        rows.append(("resumed", f"at iter {st.start_iter:,}"))
    return rows


def sample_text(state: DashboardState, earlier: bool = False) -> Text:
    sample = state.earlier[0] if earlier and state.earlier else state.sample
    if not sample:
        samples_off = state.started and not state.samples_on
        return Text("no samples during training (--sample-tokens 0); try generate.py afterwards" if samples_off
                    else "a sample appears at each evaluation", style="dim")
    text = Text(sample.prompt if sample.prompt.strip() else "", style="dim")
    text.append(sample.text.replace("\r", ""))
    return text


def sample_title(state: DashboardState, earlier: bool = False) -> str:
    sample, val = state.earlier if earlier and state.earlier else (state.sample, state.sample_val)
    if not sample:
        return "latest sample"
    val_note = f", val loss {val:.4f}" if val is not None else ""
    return f"sample at iter {sample.iter:,}{val_note} (temperature 0.8, fixed seed)"


def sample_panel(state: DashboardState, earlier: bool = False) -> Panel:
    return Panel(sample_text(state, earlier), title=sample_title(state, earlier), title_align="left",
                 border_style="dim" if earlier else "magenta")


class Cached:
    """Draws `make()` once per key and size, then replays the lines: the parts of
    the screen that rarely change (chart, sample, configuration) cost nothing
    on the redraws in between."""

    def __init__(self, store: dict, name: str, key: object, make: Callable[[], RenderableType]) -> None:
        self.store, self.name, self.key, self.make = store, name, key, make

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        full_key = (self.key, options.max_width, options.height)
        entry = self.store.get(self.name)
        if entry is None or entry[0] != full_key:
            entry = (full_key, console.render_lines(self.make(), options, pad=True))
            self.store[self.name] = entry
        for line in entry[1]:
            yield from line
            yield Segment.line()


def build_layout(state: DashboardState, cache: ChartCache, width: int, height: int,
                 ui_fraction: float | None = None, peak_flops: float | None = None,
                 store: dict | None = None, chart_version: int | None = None) -> Layout:
    """The whole screen, arranged for a width x height terminal. The chart shows the
    curves as of `chart_version` (default: now), so a caller may redraw it less often."""
    store = {} if store is None else store
    chart_version = state.version if chart_version is None else chart_version
    compact = height < 30
    sample_rows = max(4, min(12, height // 5))
    layout = Layout(name="root")
    layout.split_column(Layout(name="header", size=1), Layout(name="progress", size=1 if compact else 3),
                        Layout(name="main", ratio=1), Layout(name="sample", size=sample_rows))
    layout["header"].update(Cached(store, "header", (state.started is not None, state.finished is not None),
                                   lambda: header(state)))
    layout["progress"].update(progress_line(state) if compact
                              else Panel(progress_line(state), border_style="green", padding=(0, 1)))
    rows = stats_rows(state, ui_fraction, peak_flops)
    stats = Panel(key_values(rows), title="now", title_align="left", border_style="cyan")
    config = Cached(store, "config", state.started is not None,
                    lambda: Panel(key_values(config_rows(state)), title="configuration", title_align="left",
                                  border_style="dim"))
    chart = Cached(store, "chart", chart_version, lambda: chart_panel(state, cache, version=chart_version))
    main_rows = height - 1 - (1 if compact else 3) - sample_rows
    if width >= 150:
        layout["main"].split_row(Layout(chart, name="chart", ratio=1), Layout(stats, name="stats", size=50),
                                 Layout(config, name="config", size=54))
    else:
        side = Layout(name="side", size=max(36, min(50, width * 2 // 5)))
        layout["main"].split_row(Layout(chart, name="chart", ratio=1), side)
        if main_rows >= len(rows) + 2 + 8:
            side.split_column(Layout(stats, name="stats", size=len(rows) + 2), Layout(config, name="config"))
        else:
            side.update(stats)
    sample_key = (state.sample.iter if state.sample else None, state.sample_val)
    latest = Cached(store, "sample", sample_key, lambda: sample_panel(state))
    if width >= 150 and state.earlier:  # wide: the previous sample beside the latest, to see the progress
        layout["sample"].split_row(Layout(Cached(store, "earlier", state.earlier[0].iter,
                                                 lambda: sample_panel(state, earlier=True))), Layout(latest))
    else:
        layout["sample"].update(latest)
    return layout


def summary_table(state: DashboardState, ui_note: str | None = None) -> Table:
    fin = state.finished
    table = Table(box=box.ROUNDED, show_header=False, title="run summary", title_style="bold", title_justify="left")
    table.add_column(style="dim", no_wrap=True)
    table.add_column()
    if fin is None:
        return table
    status = {"completed": "[green]completed[/]", "interrupted": "[yellow]interrupted (Ctrl-C)[/]",
              "diverged": "[bold red]diverged[/]: the loss or gradient norm became NaN or infinite, so the "
                          "weights after the last checkpoint were not saved"}
    table.add_row("status", status.get(fin.reason, fin.reason))
    table.add_row("iterations", f"{fin.iter:,} / {state.max_iters:,}")
    best_at = f" at iter {state.best.iter:,}" if state.best else ""
    table.add_row("best val loss", f"[bold]{_loss(fin.best_val_loss)}[/] (bpc {_loss(fin.best_val_bpc)}){best_at}")
    table.add_row("final val loss", _loss(fin.final_val_loss))
    table.add_row("time", f"{duration(fin.train_seconds)} training, {duration(fin.wall_seconds)} wall")
    table.add_row("tokens/s", format_count(fin.tokens_per_s))
    table.add_row("checkpoints", f"{fin.out_dir}/best, {fin.out_dir}/latest")
    table.add_row("metrics", f"{fin.out_dir}/metrics.jsonl")
    picture = getattr(fin, "picture_path", None)
    if picture:
        table.add_row("loss picture", f"[bold]{picture}[/]")
    if ui_note:
        table.add_row("dashboard cost", ui_note)
    return table


def summary(state: DashboardState, cache: ChartCache, ui_note: str | None = None) -> Group:
    """What stays on the terminal after the run: the curves, the last sample, the numbers."""
    parts: list[RenderableType] = [chart_panel(state, cache, height=14)]
    if state.sample:
        parts.append(sample_panel(state))
    parts.append(summary_table(state, ui_note))
    return Group(*parts)


def resume_hint(state: DashboardState) -> Text | None:
    """After Ctrl-C: the exact command to continue, on a line of its own with no
    border, so that it can be copied (printed with soft_wrap: never broken up)."""
    fin = state.finished
    if not fin or not fin.resume_command:
        return None
    return Text.assemble(("interrupted", "bold yellow"), ": checkpoint saved in ", (f"{fin.out_dir}/latest", "bold"),
                         "; continue exactly where it stopped with:\n  ", (fin.resume_command, "bold cyan"))


# ---------------------------------------------------------------- the renderer


class RichDashboard:
    """An event handler (`__call__`) with `close()`, like PlainRenderer."""

    def __init__(self, console: Console | None = None, *, max_refresh_per_s: float = 2.0, budget: float = 0.01,
                 chart_every_s: float = 2.0,
                 screen: bool = True, live: bool = True, peak_flops: float | None = None,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        self.console = console or Console()
        self.min_interval = 1.0 / max_refresh_per_s
        self.budget = budget  # at most this fraction of the time goes to redrawing
        self.chart_every = chart_every_s  # the chart (the costly part) is redrawn at most this often...
        self.chart_version, self.chart_time, self.chart_evals = 0, -math.inf, 0  # ...or after an eval
        self.screen, self.use_live, self.peak_flops = screen, live, peak_flops
        self.clock = clock
        self.state = DashboardState()
        self.cache = ChartCache()
        self.store: dict = {}  # lines of the regions drawn last time (see Cached)
        self.live: Live | None = None
        self.previous_winch: object = None  # the SIGWINCH handler to put back (None: we installed none)
        self.next_refresh = 0.0
        self.ui_seconds = 0.0  # all time spent inside __call__
        self.render_seconds = 0.0  # of which redrawing the screen
        self.renders = 0
        self.events = 0

    # -- measurements -------------------------------------------------------
    def ui_fraction(self) -> float | None:
        elapsed = self.state.elapsed()
        return self.ui_seconds / elapsed if elapsed > 1.0 else None

    def ui_note(self) -> str:
        fraction = self.ui_fraction()
        share = f"{fraction:.2%} of elapsed time" if fraction is not None else f"{self.ui_seconds * 1000:.0f} ms"
        mean = self.render_seconds / self.renders * 1000 if self.renders else 0.0
        return f"{share} ({self.renders} redraws, {mean:.1f} ms each, {self.events} events)"

    # -- rendering ----------------------------------------------------------
    def renderable(self, width: int | None = None, height: int | None = None) -> Layout:
        return build_layout(self.state, self.cache, width or self.console.width, height or self.console.height,
                            self.ui_fraction(), self.peak_flops, self.store,
                            self.chart_version if self.live else None)

    def __call__(self, event: Event) -> None:
        t0 = self.clock()
        try:
            self.events += 1
            self.state.update(event)
            if isinstance(event, RunStarted):
                self._start()
                self._refresh(force=True)
            elif isinstance(event, RunFinished):
                self._finish()
            else:
                self._refresh(force=isinstance(event, SampleGenerated)
                              or (isinstance(event, EvalDone) and not self.state.samples_on))
        finally:
            self.ui_seconds += self.clock() - t0

    def _start(self) -> None:
        if self.use_live and self.live is None:
            self.live = Live(console=self.console, screen=self.screen, auto_refresh=False, transient=False,
                             redirect_stdout=False, redirect_stderr=False)
            self.live.start()
            try:  # a resized terminal is redrawn at the next event rather than after the usual pause
                previous = signal.signal(signal.SIGWINCH, self._on_resize)
                self.previous_winch = signal.SIG_DFL if previous is None else previous
            except (AttributeError, ValueError):  # no SIGWINCH (Windows), or not the main thread
                self.previous_winch = None

    def _on_resize(self, signum, frame) -> None:
        self.next_refresh = 0.0  # only a flag: drawing inside a signal handler is not safe

    def _refresh(self, force: bool = False) -> None:
        if self.live is None:
            return
        now = self.clock()
        if not force and now < self.next_refresh:
            return
        evals = len(self.state.history.evals)
        if evals != self.chart_evals or now - self.chart_time >= self.chart_every:
            self.chart_version, self.chart_time, self.chart_evals = self.state.version, now, evals
        self.live.update(self.renderable(), refresh=True)
        cost = self.clock() - now
        self.renders += 1
        self.render_seconds += cost
        self.next_refresh = now + max(self.min_interval, cost / self.budget)

    def _finish(self) -> None:
        self.close()
        self.console.print(summary(self.state, self.cache, self.ui_note()))
        hint = resume_hint(self.state)
        if hint is not None:
            self.console.print(hint, soft_wrap=True)

    def close(self) -> None:
        """Leave the alternate screen and show the cursor again; safe to call twice."""
        if self.live is not None:
            live, self.live = self.live, None
            live.stop()
            if self.previous_winch is not None:
                signal.signal(signal.SIGWINCH, self.previous_winch)
                self.previous_winch = None
