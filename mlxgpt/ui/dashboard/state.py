"""What the dashboard knows: plain numbers, updated from the training loop's events.

No Rich and no drawing here: layout.py and chart.py read this state to draw it.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

from mlxgpt.events import (CheckpointSaved, Event, EvalDone, RunFinished, RunStarted, SampleGenerated,
                           StepLogged)
from mlxgpt.ui.history import LossHistory


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
                past = self.history.evals
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
        by_steps = self.step.elapsed_s / done * max(0, self.max_iters - self.step.iter)
        if self.time_budget:  # the clock may end the run first (sooner still if a resumed run spent some)
            return min(by_steps, max(0.0, self.time_budget - self.step.elapsed_s))
        return by_steps

    def progress(self) -> float:
        """The share of the run done: of max_iters, or of --time-budget when the clock is further along."""
        by_steps = self.iteration / max(1, self.max_iters)
        if self.finished:
            return 1.0
        if self.time_budget and self.step:
            return min(1.0, max(by_steps, self.step.elapsed_s / self.time_budget))
        return min(1.0, by_steps)

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
    return EvalDone(iter=it, train_loss=train, val_loss=val, val_bpc=bpc, lr=math.nan, tokens_per_s=math.nan,
                    best_val_loss=val, is_best=True)
