"""The loss curves of a run as plain lists: fed event by event (the dashboard) or
rebuilt from metrics.jsonl (a resumed run's dashboard, the loss picture)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from mlxgpt.ui.metrics import read_metrics


@dataclass
class LossHistory:
    steps: list[tuple[int, float]] = field(default_factory=list)  # (iter, train loss of that step)
    evals: list[tuple[int, float, float, float]] = field(default_factory=list)  # (iter, train, val, val bpc)

    def truncate(self, last_iter: int) -> None:
        """Forget what happened after last_iter (a resume went back to that checkpoint)."""
        self.steps = [s for s in self.steps if s[0] <= last_iter]
        self.evals = [e for e in self.evals if e[0] <= last_iter]

    def add_step(self, it: int, loss) -> None:
        if _finite(loss):
            self.steps.append((it, float(loss)))

    def add_eval(self, it: int, train, val, bpc) -> None:
        if _finite(val):
            self.evals.append((it, _num(train), float(val), _num(bpc)))

    @classmethod
    def from_records(cls, records: Iterable[dict]) -> "LossHistory":
        history = cls()
        for r in records:
            kind = r.get("event")
            if kind == "run_started":
                history.truncate(int(r.get("start_iter") or 0))
            elif kind == "step":
                history.add_step(r["iter"], r.get("train_loss"))
            elif kind == "eval":
                history.add_eval(r["iter"], r.get("train_loss"), r.get("val_loss"), r.get("val_bpc"))
        return history

    @classmethod
    def from_metrics(cls, path: Path) -> "LossHistory":
        return cls.from_records(read_metrics(path)) if path.exists() else cls()

    @property
    def best(self) -> tuple[int, float] | None:
        """(iter, val loss) of the lowest val loss so far."""
        if not self.evals:
            return None
        it, _, val, _ = min(self.evals, key=lambda e: e[2])
        return it, val

    @property
    def bits_per_nat(self) -> float | None:
        """Val bits per character / val loss: a fixed ratio for a run (val tokens / val chars / ln 2),
        so one curve can be read in both units (nats per token on the left, bits per char on the right)."""
        ratios = [e[3] / e[2] for e in self.evals if math.isfinite(e[3]) and e[2] > 0]
        return ratios[-1] if ratios else None


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def _num(value) -> float:
    return float(value) if _finite(value) else math.nan
