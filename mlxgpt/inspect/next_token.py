"""The next-token distribution after a prompt, and what temperature does to it.

logits -> `sampling.make_transform(T)` (softmax of logits / T) -> probabilities.
T < 1 sharpens (the favourite gains), T > 1 flattens (long shots gain); the
order of the candidates never changes. The tables are the same ones
`generate.py --show-probs` prints (mlxgpt/ui/probs.py).
"""

from __future__ import annotations

import math

import mlx.core as mx
import numpy as np

from mlxgpt.model import GPT
from mlxgpt.sampling import make_transform
from mlxgpt.ui.probs import probability_table, top_candidates

COMPARE = (0.5, 1.0, 2.0)


def next_logits(model: GPT, ids: list[int]) -> mx.array:
    """(V,) logits for the token after `ids` (its last block_size tokens)."""
    ids = ids[-model.args.block_size:]
    return model(mx.array(ids, dtype=mx.int32)[None])[0, -1]


def distribution(logits: mx.array, temperature: float) -> mx.array:
    """(V,) log-probabilities at a temperature, as the sampler sees them (0 = greedy: shown at T=1)."""
    logprobs = make_transform(temperature)(logits)
    mx.eval(logprobs)
    return logprobs


def entropy_bits(logprobs: mx.array) -> float:
    lp = np.asarray(logprobs.astype(mx.float32), dtype=np.float64)
    p = np.exp(lp)
    return float(-np.sum(np.where(p > 0, p * lp, 0.0)) / math.log(2))


def temperatures(chosen: float) -> list[float]:
    ts = list(COMPARE)
    if chosen not in ts and chosen > 0:
        ts.append(chosen)
    return sorted(ts)


# ---------------------------------------------------------------- terminal


def render(logits: mx.array, tokenizer, prompt_labels: str, temperature: float, top: int, title: str):
    from rich import box
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    from mlxgpt.ui.probs import bar, format_prob, prob_style

    main = distribution(logits, temperature)
    greedy = " (0 = greedy: shown at temperature 1; the top token is always picked)" if temperature == 0 else ""
    parts: list = [Text(title, style="bold"), Text(f"after: {prompt_labels}", style="dim"), Text(""),
                   Text(f"top {top} next tokens at temperature {temperature:g}{greedy}, "
                        f"entropy {entropy_bits(main):.2f} bits", style="bold"),
                   probability_table(top_candidates(main, top), tokenizer)]

    # the same candidates at each temperature, side by side (temperature never changes their order)
    ts = temperatures(temperature)
    ids = [i for i, _ in top_candidates(distribution(logits, 1.0), top)]
    probs = {t: np.exp(np.asarray(distribution(logits, t).astype(mx.float32), dtype=np.float64)) for t in ts}
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, header_style="bold", padding=(0, 1),
                  show_footer=True, footer_style="dim")
    table.add_column("token", no_wrap=True, footer="entropy")
    for t in ts:
        table.add_column(f"T={t:g}", justify="right", no_wrap=True, min_width=6,
                         footer=f"{entropy_bits(mx.log(mx.array(probs[t]))):.2f}")
        table.add_column("", no_wrap=True, width=5, footer="bits")
    for i in ids:
        cells = [Text(tokenizer.token_label(i), style="bold")]
        for t in ts:
            p = float(probs[t][i])
            cells += [Text(format_prob(p), style=prob_style(p)), Text(bar(p, 5), style=prob_style(p))]
        table.add_row(*cells)
    parts += [Text(""), Text("softmax with temperature, p_i = exp(z_i / T) / Σ_j exp(z_j / T): the same candidates "
                             "in the same order, sharper below 1, flatter above", style="bold"), table]
    return Group(*parts)


# ---------------------------------------------------------------- picture


def picture(logits: mx.array, tokenizer, prompt_labels: str, temperature: float, top: int, title: str):
    from mlxgpt.inspect.canvas import CATEGORICAL, Canvas
    from mlxgpt.inspect.pictures import hbar_chart, label_extent

    ts = temperatures(temperature)
    base = top_candidates(distribution(logits, 1.0), top)  # same order at every temperature
    ids = [i for i, _ in base]
    labels = [tokenizer.token_label(i) for i in ids]
    lab = label_extent(labels, 13) + 6
    bar_w, row_h, gap = 150.0, 20.0, 40.0
    panel_w = lab + bar_w + 56
    width = 20 + len(ts) * (panel_w + gap)
    height = 110 + len(ids) * row_h + 16
    cv = Canvas(width, height)
    cv.text(14, 24, title, 14, bold=True)
    cv.text(14, 42, f"after: {prompt_labels}", 11, "#555555")
    cv.text(14, 60, "softmax with temperature T: p = exp(z/T) / sum exp(z/T); same tokens in every panel, "
                    "sharper for T < 1, flatter for T > 1", 10, "#555555")
    for k, t in enumerate(ts):
        lp = distribution(logits, t)
        probs = np.exp(np.asarray(lp.astype(mx.float32), dtype=np.float64))
        values = [float(probs[i]) for i in ids]
        x = 20 + k * (panel_w + gap)
        hbar_chart(cv, x, 72, labels, values, bar_width=bar_w, row_h=row_h, vmax=1.0,
                   colour=CATEGORICAL[k % len(CATEGORICAL)], value_fmt="{:.1%}", label_size=13,
                   title=f"T = {t:g}   (entropy {entropy_bits(lp):.2f} bits)")
    return cv
