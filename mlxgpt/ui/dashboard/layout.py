"""The dashboard's screen: named Rich `Layout` regions filled with panels drawn from
the state (header, progress, the loss chart, the numbers of the moment, the
configuration, the latest sample), and the summary left on the terminal at the end.

    ┌ header: run directory, what Ctrl-C does ────────────────────────────┐
    │ progress: iter / total, bar, elapsed, ETA                           │
    ├ loss chart (plotext) ─────────────────┬ now: losses, lr, speed, ... ┤
    │                                       ├ configuration ──────────────┤
    ├ latest sample ────────────────────────┴─────────────────────────────┤
"""

from __future__ import annotations

import math
from typing import Callable

from rich import box
from rich.console import Console, ConsoleOptions, Group, RenderableType, RenderResult
from rich.layout import Layout
from rich.panel import Panel
from rich.progress_bar import ProgressBar
from rich.segment import Segment
from rich.table import Table
from rich.text import Text

from mlxgpt.ui.dashboard.chart import BPC_STYLE, TRAIN_STYLE, VAL_STYLE, ChartCache, chart_panel
from mlxgpt.ui.dashboard.state import DashboardState
from mlxgpt.config import switch_flags
from mlxgpt.ui.format import COMPILING_NOTE, format_count

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


# ---------------------------------------------------------------- the regions


def header(state: DashboardState) -> Table:
    grid = Table.grid(expand=True)
    grid.add_column(ratio=1, no_wrap=True, overflow="ellipsis")
    grid.add_column(justify="right", no_wrap=True)
    where = f" training · {state.started.out_dir}" if state.started else " starting…"
    if state.started and state.started.compiling_kernels and state.step is None:
        where += f" · {COMPILING_NOTE}"  # the first eval and step wait for the compiler: say so
    hint = "finished" if state.finished else "Ctrl-C: stop & save"
    grid.add_row(Text.assemble(("mlxgpt", "bold magenta"), where), Text(hint, style="dim"))
    return grid


def progress_line(state: DashboardState) -> Table:
    it, done = state.iteration, state.progress()
    grid = Table.grid(expand=True, padding=(0, 1))
    grid.add_column(no_wrap=True)
    grid.add_column(ratio=1)
    grid.add_column(no_wrap=True, justify="right")
    grid.add_row(Text(f"iter {it:,}/{state.max_iters:,}", style="bold"),
                 ProgressBar(total=1.0, completed=done, complete_style="green", finished_style="green"),
                 Text(f"{done:4.0%}  elapsed {duration(state.elapsed())}  ETA {duration(state.eta())}"
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
        rows.append(("device", f"{st.device} · BLAS {_short_blas(st.blas)}" if st.blas else st.device))
        parallelism = getattr(st, "parallelism", "")
        if parallelism:
            rows.append(("compute", parallelism))
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
    if switch_flags(m):
        rows.insert(5, ("switches", " ".join(switch_flags(m))))
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
    translating = state.started is not None and state.started.preset == "translate"  # mlxgpt translate train
    how = "greedy, a held-out pair" if translating else "temperature 0.8, fixed seed"
    return f"sample at iter {sample.iter:,}{val_note} ({how})"


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
    layout["header"].update(Cached(store, "header", (state.started is not None, state.finished is not None,
                                                     state.step is None), lambda: header(state)))
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
