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


def compare(logits: mx.array, chosen: float, top: int) -> tuple[list[int], list[tuple[float, np.ndarray, float]]]:
    """The `top` candidates at temperature 1 (in that order at every temperature), and for each
    temperature in temperatures(chosen): (T, their probabilities, entropy of the whole distribution)."""
    ids = [i for i, _ in top_candidates(distribution(logits, 1.0), top)]
    panels = []
    for t in temperatures(chosen):
        logprobs = distribution(logits, t)
        probs = np.exp(np.asarray(logprobs.astype(mx.float32), dtype=np.float64))
        panels.append((t, probs[ids], entropy_bits(logprobs)))
    return ids, panels


# ---------------------------------------------------------------- terminal


def render(logits: mx.array, tokenizer, prompt_labels: str, temperature: float, top: int, title: str):
    from rich import box
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    from mlxgpt.ui.format import bar, format_prob
    from mlxgpt.ui.probs import prob_style

    main = distribution(logits, temperature)
    greedy = " (0 = greedy: shown at temperature 1; the top token is always picked)" if temperature == 0 else ""
    parts: list = [Text(title, style="bold"), Text(f"after: {prompt_labels}", style="dim"), Text(""),
                   Text(f"top {top} next tokens at temperature {temperature:g}{greedy}, "
                        f"entropy {entropy_bits(main):.2f} bits", style="bold"),
                   probability_table(top_candidates(main, top), tokenizer)]

    # the same candidates at each temperature, side by side (temperature never changes their order)
    ids, panels = compare(logits, temperature, top)
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, header_style="bold", padding=(0, 1),
                  show_footer=True, footer_style="dim")
    table.add_column("token", no_wrap=True, footer="entropy")
    for t, _, entropy in panels:
        table.add_column(f"T={t:g}", justify="right", no_wrap=True, min_width=6, footer=f"{entropy:.2f}")
        table.add_column("", no_wrap=True, width=5, footer="bits")
    for row, i in enumerate(ids):
        cells = [Text(tokenizer.token_label(i), style="bold")]
        for _, probs, _ in panels:
            p = float(probs[row])
            cells += [Text(format_prob(p), style=prob_style(p)), Text(bar(p, 5), style=prob_style(p))]
        table.add_row(*cells)
    parts += [Text(""), Text("softmax with temperature, p_i = exp(z_i / T) / Σ_j exp(z_j / T): the same candidates "
                             "in the same order, sharper below 1, flatter above", style="bold"), table]
    return Group(*parts)


# ---------------------------------------------------------------- picture


def picture(logits: mx.array, tokenizer, prompt_labels: str, temperature: float, top: int, title: str):
    """The candidates' probabilities at each temperature, side by side (drawn by mlxgpt/plots.py)."""
    from mlxgpt import plots

    ids, panels = compare(logits, temperature, top)
    return plots.next_token_bars([tokenizer.token_label(i) for i in ids], panels, title, f"after: {prompt_labels}",
                                 "softmax with temperature T: p = exp(z/T) / Σ exp(z/T); same tokens in every panel, "
                                 "sharper for T < 1, flatter for T > 1")
