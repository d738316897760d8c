"""The dashboard as an event handler: one Rich `Live` screen, redrawn from the state.

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
from typing import Callable

from rich.console import Console
from rich.layout import Layout
from rich.live import Live

from mlxgpt.events import Event, EvalDone, RunFinished, RunStarted, SampleGenerated
from mlxgpt.ui.dashboard.chart import ChartCache
from mlxgpt.ui.dashboard.layout import build_layout, resume_hint, summary
from mlxgpt.ui.dashboard.state import DashboardState


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
