"""How numbers and bars look in text: one helper of each kind, shared by every
terminal view (the plain log lines, the Rich dashboard, --show-probs, `mlxgpt inspect`).

The saved pictures (mlxgpt/plots.py) leave ticks and number formats to matplotlib.
"""

from __future__ import annotations

import math

EIGHTHS = " ▏▎▍▌▋▊▉"  # a block 0/8 .. 7/8 of a character wide


# shown while MLX's CPU backend compiles the kernels of a first run (fast/jit.first_compile)
COMPILING_NOTE = "compiling kernels for this CPU (first run only: later runs start at once)"


def format_count(n: float) -> str:
    """A large count at a glance: 804096 -> '804.10k', 175181291520 -> '175.18B'."""
    for unit, size in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.2f}{unit}"
    return f"{n:.0f}"


def format_prob(p: float) -> str:
    """A probability as a percentage, or in e-notation below 0.1%: '57.0%', '8e-04'."""
    return f"{p:.1%}" if p >= 0.001 else f"{p:.0e}"


def bar(fraction: float, width: int, *, ascii: bool = False) -> str:
    """A horizontal bar `fraction` of `width` characters long: in eighths of a
    character with block characters, or in whole '#' characters for plain text."""
    fraction = min(1.0, max(0.0, fraction)) if math.isfinite(fraction) else 0.0
    if ascii:
        return "#" * int(round(fraction * width))
    full, rest = divmod(int(round(fraction * width * 8)), 8)
    return "█" * full + (EIGHTHS[rest] if rest else "")


def nice_ticks(lo: float, hi: float, count: int = 6) -> list[float]:
    """About `count` round tick values (steps of 1, 2, 2.5 or 5 x 10^n) covering [lo, hi]."""
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


def tick_label(value: float) -> str:
    """A tick's text, short enough for a terminal axis: 500, 2.5, 25k."""
    if abs(value) >= 10_000:
        return f"{value / 1000:g}k"
    return f"{int(value)}" if value == int(value) else f"{value:g}"
