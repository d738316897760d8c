"""The distribution behind each generated token: top candidates, bars, colours.

Used by `generate.py --show-probs` and by the inspect views (next-token tables).
`top_candidates` turns a (V,) log-probability vector into sorted (id, p) pairs;
`probability_table` draws them as a Rich table with bars and the chosen token
marked; `show_probs` streams one table per generated token (Rich in a terminal,
plain text with no escape codes elsewhere) and then the whole text coloured by
the probability the model gave each token it chose.
"""

from __future__ import annotations

import math
import sys
from typing import Iterable, Sequence, TextIO

import mlx.core as mx
import numpy as np
from rich import box
from rich.console import Console, Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from mlxgpt.tokenizers.base import Tokenizer, visible
from mlxgpt.ui.format import bar, format_prob

Candidates = Sequence[tuple[int, float]]

# (lowest probability, style, words) from most to least confident
PROB_STYLES = ((0.8, "bold green", "≥ 80%"), (0.5, "green", "≥ 50%"), (0.2, "yellow", "≥ 20%"),
               (0.05, "dark_orange", "≥ 5%"), (0.0, "bold red", "< 5%"))


def top_candidates(logprobs: mx.array, k: int) -> list[tuple[int, float]]:
    """The k most likely tokens of a (V,) log-probability vector as (token id, probability),
    most likely first. Tokens a filter removed (probability 0) are left out, so after
    --top-k 5 at most 5 remain: the list shows what the sampler could actually draw."""
    values = np.asarray(logprobs.astype(mx.float32)).reshape(-1)
    k = max(0, min(int(k), values.shape[0]))
    if k == 0:
        return []
    top = np.argpartition(-values, k - 1)[:k]
    pairs = [(int(i), float(math.exp(values[i]))) for i in top if np.isfinite(values[i])]
    pairs.sort(key=lambda pair: (-pair[1], pair[0]))
    return [(i, p) for i, p in pairs if p > 0.0]


def probability_of(logprobs: mx.array, token: int) -> float:
    """The probability one token had under a (V,) log-probability vector."""
    return float(math.exp(logprobs.reshape(-1)[token].item()))


def prob_style(p: float) -> str:
    """Colour for a probability: green when the model was sure, red when it was not."""
    for low, style, _ in PROB_STYLES:
        if p >= low:
            return style
    return PROB_STYLES[-1][1]


def prob_legend() -> Text:
    legend = Text("colour = probability of the chosen token:", style="dim")
    for _, style, words in PROB_STYLES:
        legend.append(" ")
        legend.append(words, style=style)
    return legend


def probability_table(candidates: Candidates, tokenizer: Tokenizer, chosen: int | None = None, title: str = "",
                      *, chosen_prob: float | None = None, bar_width: int = 16) -> Table:
    """Candidates (sorted, from top_candidates) as rows: marker, token, probability, bar.

    The chosen token's row is marked with ▶ and bold. If it is not among the
    candidates (a sampled long shot) and chosen_prob is given, it gets a row of its own."""
    table = Table(title=title or None, title_justify="left", title_style="bold", box=box.SIMPLE_HEAD,
                  show_edge=False, pad_edge=False, padding=(0, 1), collapse_padding=True)
    table.add_column("", width=1, no_wrap=True)
    table.add_column("token", no_wrap=True, max_width=14, overflow="ellipsis")
    table.add_column("p", justify="right", no_wrap=True)
    table.add_column("", width=bar_width, no_wrap=True)
    ids = [token for token, _ in candidates]
    rows = list(candidates)
    if chosen is not None and chosen not in ids and chosen_prob is not None:
        rows.append((chosen, chosen_prob))
    for token, p in rows:
        is_chosen = token == chosen
        style = prob_style(p)
        if is_chosen and token not in ids:
            table.add_section()
        table.add_row(Text("▶", style="bold") if is_chosen else "",
                      Text(tokenizer.token_label(token), style="bold reverse" if is_chosen else "bold"),
                      Text(format_prob(p), style=style),
                      Text(bar(p, bar_width), style=style),
                      style="bold" if is_chosen else None)
    return table


def sampling_note(temperature: float, top_k: int | None = None, top_p: float | None = None,
                  min_p: float | None = None) -> str:
    """Which distribution the tables show, in words."""
    if temperature == 0:
        return ("temperature 0 (greedy): the model's own distribution (temperature 1) is shown; "
                "the most likely token is always chosen")
    steps = [f"temperature {temperature:g}"]
    if top_k is not None:
        steps.append(f"top-k {top_k}")
    if top_p is not None and top_p < 1:
        steps.append(f"top-p {top_p:g}")
    if min_p:
        steps.append(f"min-p {min_p:g}")
    return (f"probabilities after {', '.join(steps)}: the distribution each token was drawn from"
            + ("" if len(steps) > 1 else " (add --top-k/--top-p/--min-p to see them narrow it)"))


def _context(text: str, width: int = 14) -> str:
    tail = visible(text[-width:]) if text else ""
    return ("…" if len(text) > width else "") + tail


class ProbsView:
    """Receives one generated token at a time and shows its distribution.

    Rich (a terminal): tables side by side, as many as fit the width, printed
    row by row; then the text coloured by probability. Plain: the same as text."""

    def __init__(self, tokenizer: Tokenizer, k: int = 10, *, console: Console | None = None,
                 stream: TextIO | None = None, rich: bool | None = None, bar_width: int = 16) -> None:
        self.tokenizer, self.k, self.bar_width = tokenizer, k, bar_width
        self.stream = stream or sys.stdout
        self.rich = (self.stream.isatty() if rich is None else rich) or console is not None
        self.console = console or (Console(file=self.stream, highlight=False) if self.rich else None)
        self.pending: list[Table] = []
        self.text = ""  # prompt + generated
        self.chosen: list[tuple[str, float]] = []  # (piece, probability of its token)
        self.count = 0

    # -- plain text ----------------------------------------------------------
    def _write(self, line: str = "") -> None:
        print(line, file=self.stream, flush=True)

    def start(self, prompt: str, note: str) -> None:
        self.text = prompt
        if self.rich:
            self.console.print(Text(f"--show-probs: top {self.k} candidates per token; {note}", style="dim"))
            self.console.print(Text("prompt: ", style="dim") + Text(visible(prompt)), highlight=False)
        else:
            self._write(f"--show-probs: top {self.k} candidates per token; {note}")
            self._write(f"prompt: {visible(prompt)}")

    def add(self, token: int, piece: str, logprobs: mx.array) -> None:
        self.count += 1
        candidates = top_candidates(logprobs, self.k)
        p_chosen = probability_of(logprobs, token)
        context = _context(self.text)
        self.chosen.append((piece, p_chosen))
        if self.rich:
            title = f"#{self.count} {context}▸"
            self.pending.append(probability_table(candidates, self.tokenizer, token, title,
                                                  chosen_prob=p_chosen, bar_width=self.bar_width))
            if len(self.pending) >= self._per_row():
                self._flush_row()
        else:
            label = self.tokenizer.token_label(token)
            self._write(f"token {self.count} after '{context}': chose {label} (p={p_chosen:.4f})")
            ids = [t for t, _ in candidates]
            rows = candidates if token in ids else [*candidates, (token, p_chosen)]
            for t, p in rows:
                mark = ">" if t == token else " "
                self._write(f"  {mark} {self.tokenizer.token_label(t):<8} {p:7.4f} {bar(p, 20, ascii=True)}".rstrip())
        self.text += piece

    def _per_row(self) -> int:
        table_width = self.bar_width + 24
        return max(1, self.console.width // table_width)

    def _flush_row(self) -> None:
        if not self.pending:
            return
        grid = Table.grid(padding=(0, 3))
        for _ in self.pending:
            grid.add_column(vertical="top")
        grid.add_row(*self.pending)
        self.console.print(grid)
        self.pending = []

    def finish(self, prompt: str) -> None:
        """Show the whole text, each piece coloured by the probability of its token."""
        if self.rich:
            self._flush_row()
            coloured = Text(prompt, style="dim")
            for piece, p in self.chosen:
                coloured.append(piece, style=prob_style(p))
            mean = _mean_prob(self.chosen)
            self.console.print(Panel(Group(coloured, Text(""), prob_legend()),
                                     title=f"generated text ({self.count} tokens, mean p of chosen {mean:.2f})",
                                     title_align="left", border_style="dim"))
        else:
            self._write("text:")
            self._write(prompt + "".join(piece for piece, _ in self.chosen))
            self._write(f"({self.count} tokens, mean probability of the chosen token {_mean_prob(self.chosen):.4f})")


def _mean_prob(chosen: list[tuple[str, float]]) -> float:
    return sum(p for _, p in chosen) / len(chosen) if chosen else float("nan")


def show_probs(pieces: Iterable, tokenizer: Tokenizer, prompt: str, k: int, note: str,
               stream: TextIO | None = None, *, console: Console | None = None, rich: bool | None = None) -> str:
    """Stream `generate()`'s pieces with their distributions; return the generated text."""
    view = ProbsView(tokenizer, k, console=console, stream=stream, rich=rich)
    view.start(prompt, note)
    for piece in pieces:
        view.add(piece.token, piece.text, piece.logprobs)
    view.finish(prompt)
    return "".join(piece for piece, _ in view.chosen)
