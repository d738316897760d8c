"""The loss picture: train/val loss and val bits-per-character against iterations,
as a self-contained SVG (no plotting dependency) written into the run directory.

Also home of `LossHistory`, the curves rebuilt from metrics.jsonl, which the
Rich dashboard uses too when a resumed run should show its whole past.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable
from xml.sax.saxutils import escape

from mlxgpt.events import RunFinished
from mlxgpt.ui.metrics import read_metrics

PICTURE_NAME = "loss.svg"


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
        if not self.evals:
            return None
        it, _, val, _ = min(self.evals, key=lambda e: e[2])
        return it, val


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def _num(value) -> float:
    return float(value) if _finite(value) else math.nan


def nice_ticks(lo: float, hi: float, count: int = 6) -> list[float]:
    """About `count` round tick values (1, 2, 2.5, 5 x 10^n steps) covering [lo, hi]."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return []
    if hi <= lo:
        return [lo]
    raw = (hi - lo) / max(1, count - 1)
    magnitude = 10 ** math.floor(math.log10(raw))
    step = min((m * magnitude for m in (1, 2, 2.5, 5, 10)), key=lambda step: abs(math.log(step / raw)))
    first = math.ceil(lo / step - 1e-9) * step
    ticks, value = [], first
    while value <= hi + step * 1e-9:
        ticks.append(round(value, 10))
        value += step
    return ticks


def _label(value: float) -> str:
    if value == int(value) and abs(value) >= 1:
        return f"{int(value):,}"
    return f"{value:.4g}"


def _padded_range(values: list[float]) -> tuple[float, float]:
    lo, hi = min(values), max(values)
    if hi - lo < 1e-9:
        return lo - 0.5, hi + 0.5
    pad = 0.05 * (hi - lo)
    return lo - pad, hi + pad


def loss_svg(history: LossHistory, title: str = "loss", width: int = 900, height: int = 500) -> str:
    """An SVG line chart: train loss (every logged step), train and val loss at each eval,
    val bits per character on the right axis."""
    left, right, top, bottom = 78, 78, 56, 62
    pw, ph = width - left - right, height - top - bottom
    step_x = [s[0] for s in history.steps]
    eval_x = [e[0] for e in history.evals]
    xs = step_x + eval_x or [0]
    x_lo, x_hi = min(xs), max(xs)
    if x_hi == x_lo:
        x_hi = x_lo + 1
    losses = [s[1] for s in history.steps] + [e[2] for e in history.evals] + \
             [e[1] for e in history.evals if math.isfinite(e[1])]
    y_lo, y_hi = _padded_range(losses or [0.0, 1.0])
    # val bits per character = val loss x (val tokens / val chars / ln 2), a fixed ratio for a run,
    # so the right axis reads the val curve in bits per character rather than adding a copy of it
    ratios = [e[3] / e[2] for e in history.evals if math.isfinite(e[3]) and e[2] > 0]
    ratio = ratios[-1] if ratios else None

    def sx(v: float) -> float:
        return left + (v - x_lo) / (x_hi - x_lo) * pw

    def sy(v: float) -> float:
        return top + (1 - (v - y_lo) / (y_hi - y_lo)) * ph

    def polyline(points: list[tuple[float, float]], color: str, w: float, extra: str = "") -> str:
        if len(points) < 2:
            return ""
        pts = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
        return f'<polyline points="{pts}" fill="none" stroke="{color}" stroke-width="{w}" {extra}/>'

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" font-family="Helvetica, Arial, sans-serif" font-size="12">',
           f'<rect width="{width}" height="{height}" fill="white"/>',
           f'<text x="{width / 2}" y="24" text-anchor="middle" font-size="16" font-weight="bold">{escape(title)}</text>']
    # grid, ticks and tick labels
    for t in nice_ticks(x_lo, x_hi, 8):
        x = sx(t)
        out.append(f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{top + ph}" stroke="#e6e6e6"/>')
        out.append(f'<text x="{x:.1f}" y="{top + ph + 18}" text-anchor="middle">{_label(t)}</text>')
    for t in nice_ticks(y_lo, y_hi, 7):
        y = sy(t)
        out.append(f'<line x1="{left}" y1="{y:.1f}" x2="{left + pw}" y2="{y:.1f}" stroke="#e6e6e6"/>')
        out.append(f'<text x="{left - 8}" y="{y + 4:.1f}" text-anchor="end">{_label(t)}</text>')
    if ratio:
        for t in nice_ticks(y_lo * ratio, y_hi * ratio, 7):
            y = sy(t / ratio)
            out.append(f'<line x1="{left + pw}" y1="{y:.1f}" x2="{left + pw + 5}" y2="{y:.1f}" stroke="#ff7f0e"/>')
            out.append(f'<text x="{left + pw + 8}" y="{y + 4:.1f}" fill="#c85a00">{_label(t)}</text>')
    out.append(f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#333"/>')
    # axis labels
    out.append(f'<text x="{left + pw / 2}" y="{height - 18}" text-anchor="middle">iteration</text>')
    out.append(f'<text transform="translate(20 {top + ph / 2}) rotate(-90)" text-anchor="middle">'
               'loss (nats per token)</text>')
    if ratio:
        out.append(f'<text transform="translate({width - 18} {top + ph / 2}) rotate(90)" text-anchor="middle" '
                   f'fill="#c85a00">val loss in bits per character (nats x {ratio:.4f})</text>')
    # curves
    out.append(polyline([(sx(i), sy(v)) for i, v in history.steps], "#1f77b4", 1.2, 'stroke-opacity="0.8"'))
    out.append(polyline([(sx(e[0]), sy(e[1])) for e in history.evals if math.isfinite(e[1])], "#9467bd", 1.5,
                        'stroke-dasharray="2 3"'))
    out.append(polyline([(sx(e[0]), sy(e[2])) for e in history.evals], "#ff7f0e", 2))
    for e in history.evals:
        out.append(f'<circle cx="{sx(e[0]):.1f}" cy="{sy(e[2]):.1f}" r="3" fill="#ff7f0e"/>')
    best = history.best
    if best:
        bx, by = sx(best[0]), sy(best[1])
        anchor = "end" if bx > left + pw * 0.7 else "start"
        dx = -6 if anchor == "end" else 6
        out.append(f'<circle cx="{bx:.1f}" cy="{by:.1f}" r="5" fill="none" stroke="#d62728" stroke-width="2"/>')
        bpc = f" ({best[1] * ratio:.3f} bpc)" if ratio else ""
        out.append(f'<text x="{bx + dx:.1f}" y="{by - 14:.1f}" text-anchor="{anchor}" fill="#d62728" '
                   'stroke="white" stroke-width="4" paint-order="stroke">'
                   f'best val {best[1]:.4f}{bpc} @ {best[0]:,}</text>')
    # legend
    entries = [("train loss (logged steps)", "#1f77b4", ""), ("train loss (eval)", "#9467bd", "2 3"),
               ("val loss (eval; right axis: bits/char)" if ratio else "val loss (eval)", "#ff7f0e", "")]
    lx, ly = left + pw - 250, top + 10
    out.append(f'<rect x="{lx - 8}" y="{ly - 6}" width="254" height="{len(entries) * 18 + 8}" fill="white" '
               'fill-opacity="0.85" stroke="#ccc"/>')
    for n, (name, color, dash) in enumerate(entries):
        y = ly + 6 + n * 18
        dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
        out.append(f'<line x1="{lx}" y1="{y}" x2="{lx + 24}" y2="{y}" stroke="{color}" stroke-width="2"{dash_attr}/>')
        out.append(f'<text x="{lx + 30}" y="{y + 4}">{escape(name)}</text>')
    if not history.steps and not history.evals:
        out.append(f'<text x="{left + pw / 2}" y="{top + ph / 2}" text-anchor="middle" fill="#888">'
                   'no losses recorded yet</text>')
    out.append("</svg>")
    return "\n".join(part for part in out if part) + "\n"


def write_loss_picture(metrics_path: Path, out_path: Path | None = None, title: str | None = None) -> Path:
    """Draw the curves recorded in metrics.jsonl into an SVG beside it; return its path."""
    metrics_path = Path(metrics_path)
    out_path = Path(out_path) if out_path else metrics_path.parent / PICTURE_NAME
    history = LossHistory.from_metrics(metrics_path)
    svg = loss_svg(history, title or f"mlxgpt loss curves: {metrics_path.parent}")
    tmp = out_path.with_name(out_path.name + ".tmp")
    tmp.write_text(svg, encoding="utf-8")
    tmp.replace(out_path)
    return out_path


def with_loss_picture(event: RunFinished, metrics_path: Path) -> RunFinished:
    """The run is over: write the picture, and return the event with its path (unchanged if it failed)."""
    try:
        path = write_loss_picture(metrics_path)
    except OSError:
        return event
    return dataclasses.replace(event, picture_path=str(path))
