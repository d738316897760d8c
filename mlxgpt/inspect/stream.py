"""The residual stream, block by block, and the logit lens.

Each position carries one vector of n_embd numbers through the model, the
residual stream: the embedding writes it, every block adds to it
(x = x + attn(ln(x)), then x + mlp(ln(x))), and at the end the final norm and
the unembedding turn it into next-token logits. `residual_stream` records that
vector after the embedding and after each block, with the real modules.

The logit lens (nostalgebraist, "interpreting GPT: the logit lens", 2020) reads
an intermediate stream as if it were the last one: ln_f, then the unembedding,
then a softmax. Row by row it shows when the model's prediction takes shape.
The last row is the model's own output, exactly. With --post-ln every block ends
in a norm and ln_f is nn.Identity: the lens is then the unembedding alone, and a
block's "contribution" is the difference it makes, norm included.
"""

from __future__ import annotations

from dataclasses import dataclass

import mlx.core as mx
import numpy as np

from mlxgpt.errors import MlxgptError
from mlxgpt.inspect.attention import check_prompt
from mlxgpt.model import GPT
from mlxgpt.tokenizers import Tokenizer

POSITIONS = 12  # positions shown by default: the last ones of the prompt

CAPTION = ("Logit lens: each row applies the model's final norm and unembedding to the residual stream as it is "
           "after that block, as if the model stopped there; the last row is the model's own prediction. "
           "Each cell is the top next token at that position and its probability.")


def residual_stream(model: GPT, ids: list[int]) -> np.ndarray:
    """(n_layer + 1, T, C): the stream after the embedding (row 0) and after each block (row l + 1)."""
    check_prompt(model, ids)
    x = model.embed(mx.array(ids, dtype=mx.int32)[None])  # (1, T, C); dropout is off in eval mode
    states = [x[0]]
    for block in model.h:
        x = block(x)  # the real block, as GPT.__call__ runs it
        states.append(x[0])
    stream = mx.stack(states).astype(mx.float32)
    mx.eval(stream)
    return np.array(stream)


def block_contributions(stream: np.ndarray, relative: bool = False) -> np.ndarray:
    """(n_layer, T): the length (L2 norm) of what block l added at position t, stream[l+1] - stream[l];
    relative=True divides it by the length of the stream before the block."""
    added = np.linalg.norm(np.diff(stream.astype(np.float64), axis=0), axis=-1)
    if not relative:
        return added
    before = np.linalg.norm(stream[:-1].astype(np.float64), axis=-1)
    return added / np.where(before == 0, 1.0, before)


def _lens(model: GPT, stream: np.ndarray) -> mx.array:
    return model.unembed(model.ln_f(mx.array(stream))).astype(mx.float32)  # each row as if it were the last


def lens_logits(model: GPT, stream: np.ndarray) -> np.ndarray:
    """(layers, T, vocab) float32: ln_f and the unembedding applied to every row of a stream (or a slice of one)."""
    logits = _lens(model, stream)
    mx.eval(logits)
    return np.array(logits)


def logit_lens(model: GPT, stream: np.ndarray) -> np.ndarray:
    """(layers, T, vocab): the next-token probabilities each row of the stream would give (softmax in float32)."""
    probs = mx.softmax(_lens(model, stream), axis=-1)
    mx.eval(probs)
    return np.array(probs)


def top_tokens(probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(layers, T) ids of the most likely token at each layer and position, and (layers, T) their probabilities."""
    top = np.argmax(probs, axis=-1)
    return top, np.take_along_axis(probs, top[..., None], axis=-1)[..., 0]


def probability_of(probs: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """(layers, T): the probability each layer gives at position t to the token targets[t]."""
    targets = np.asarray(targets, dtype=np.int64)
    index = np.broadcast_to(targets[None, :, None], (probs.shape[0], probs.shape[1], 1))
    return np.take_along_axis(probs, index, axis=-1)[..., 0]


def final_predictions(probs: np.ndarray) -> np.ndarray:
    """(T,) the token the last layer (the model itself) puts first at each position."""
    return np.argmax(probs[-1], axis=-1)


def next_in_prompt(ids: list[int], positions: list[int]) -> list[int | None]:
    """The prompt's own next token after each position (None after the last one)."""
    return [ids[t + 1] if t + 1 < len(ids) else None for t in positions]


@dataclass
class StreamReport:
    """Everything the view shows, for the last `len(positions)` positions of a prompt."""

    ids: list[int]  # the whole prompt
    positions: list[int]  # the positions shown (indices into ids)
    stream: np.ndarray  # (n_layer + 1, T, C), every position
    contributions: np.ndarray  # (n_layer, T): ||stream[l+1] - stream[l]||
    relative: np.ndarray  # (n_layer, T): the same over ||stream[l]||
    top_ids: np.ndarray  # (n_layer + 1, P): the lens's top token at each shown position
    top_p: np.ndarray  # (n_layer + 1, P): its probability
    final_ids: np.ndarray  # (P,): the model's own top token (the last row of top_ids)
    p_final: np.ndarray  # (n_layer + 1, P): probability each layer gives to final_ids
    next_ids: list[int | None]  # (P,): the prompt's next token, None after the last
    p_next: np.ndarray  # (n_layer + 1, P): probability each layer gives to it (NaN where there is none)


def analyse(model: GPT, ids: list[int], positions: int = POSITIONS) -> StreamReport:
    """The stream of a prompt, and the lens read at its last `positions` positions."""
    if positions < 1:
        raise MlxgptError(f"--positions must be at least 1, got {positions}")
    stream = residual_stream(model, ids)
    shown = list(range(max(0, len(ids) - positions), len(ids)))
    probs = logit_lens(model, stream[:, shown])  # only the shown positions: (layers, P, vocab) stays small
    top_ids, top_p = top_tokens(probs)
    final_ids = final_predictions(probs)
    next_ids = next_in_prompt(ids, shown)
    p_next = probability_of(probs, np.array([0 if i is None else i for i in next_ids]))
    p_next[:, [k for k, i in enumerate(next_ids) if i is None]] = np.nan
    return StreamReport(ids=list(ids), positions=shown, stream=stream, contributions=block_contributions(stream),
                        relative=block_contributions(stream, relative=True), top_ids=top_ids, top_p=top_p,
                        final_ids=final_ids, p_final=probability_of(probs, final_ids), next_ids=next_ids,
                        p_next=p_next)


def row_labels(n_layer: int) -> list[str]:
    return ["embedding", *(f"block {l}" for l in range(n_layer))]


# ---------------------------------------------------------------- terminal


def _short_prob(p: float) -> str:
    """A probability in at most four characters: '45%', '100%', '<1%'."""
    return "<1%" if p < 0.005 else f"{round(100 * p)}%"


def _token(label: str, limit: int = 8) -> str:
    return label if len(label) <= limit else label[: limit - 1] + "…"


def _norm(v: float) -> str:
    """A length in about four characters: '0.52', '3.1', '12', '1.2k'."""
    if v >= 999.5:
        return f"{v / 1000:.1f}k"
    return f"{v:.0f}" if v >= 99.5 else f"{v:.1f}" if v >= 9.95 else f"{v:.2f}"


def _tables(report: StreamReport, tokenizer: Tokenizer, columns: list[int], stacked: bool):
    """Two tables with the same columns (the positions `columns` of report.positions), aligned:
    the lens (rows = layers; each cell the top token and its probability, on one line or, when
    `stacked`, token over probability) and the length of what each block adds."""
    from rich import box
    from rich.table import Table
    from rich.text import Text

    from mlxgpt.ui.probs import prob_style

    label = lambda i: _token(tokenizer.token_label(int(i)))
    layers = row_labels(report.top_ids.shape[0] - 1)
    last = len(layers) - 1
    layers[last] += " = model"
    shown = [report.positions[k] for k in columns]
    stream_norm = np.linalg.norm(report.stream[:, shown].astype(np.float64), axis=-1)  # (layers, P)
    added = report.contributions[:, shown]
    largest = np.argmax(added, axis=0)
    lens = [[(label(report.top_ids[r, k]), _short_prob(float(report.top_p[r, k]))) for k in columns]
            for r in range(len(layers))]
    widths = []  # one per column, shared by both tables
    for j, k in enumerate(columns):
        cells = [len(tok) + len(p) + 1 if not stacked else max(len(tok), len(p)) for tok, p in (row[j] for row in lens)]
        nxt = report.next_ids[k]
        widths.append(max(*cells, len(label(report.ids[report.positions[k]])), 1 if nxt is None else len(label(nxt)),
                          len(str(report.positions[k])), 4))
    left = max(len(s) for s in [*layers, "next in prompt", "embedding ‖x‖", "+ block 0", "= end ‖x‖"])

    def table(footer: bool) -> Table:
        t = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, padding=(0, 1), collapse_padding=True,
                  header_style="bold", show_footer=footer, footer_style="dim")
        t.add_column(Text("position\ntoken", style="dim"), no_wrap=True, width=left, footer="next in prompt")
        for j, k in enumerate(columns):
            nxt = report.next_ids[k]
            t.add_column(Text(f"{report.positions[k]}\n", style="dim") + Text(label(report.ids[report.positions[k]])),
                         justify="center" if stacked else "right", no_wrap=True, width=widths[j],
                         footer="?" if nxt is None else label(nxt))
        return t

    lens_table = table(footer=True)
    for r, name in enumerate(layers):
        cells = []
        for (tok, p), k in zip(lens[r], columns):
            style = prob_style(float(report.top_p[r, k])) + (" bold" if r == last else "")
            cells.append(Text(tok, style=style) + Text("\n" if stacked else " ") + Text(p, style=style))
        lens_table.add_row(Text(name, style="bold" if r == last else ""), *cells, end_section=r == last)

    added_table = table(footer=False)
    added_table.add_row(Text("embedding ‖x‖", style="dim"), *(Text(_norm(v), style="dim") for v in stream_norm[0]))
    for l in range(added.shape[0]):
        added_table.add_row(f"+ block {l}", *(Text(_norm(added[l, j]), style="bold yellow" if largest[j] == l else "")
                                             for j in range(len(shown))))
    added_table.add_row(Text("= end ‖x‖", style="dim"), *(Text(_norm(v), style="dim") for v in stream_norm[-1]))
    return lens_table, added_table


def _fitting(report: StreamReport, tokenizer: Tokenizer, width: int):
    """The tables for as many of the positions as fit `width` columns: one line per cell if all
    fit, else token over probability, else only the last positions."""
    from rich.console import Console
    from rich.measure import Measurement

    con = Console(width=10_000)
    n = len(report.positions)
    tries = [(n, False), *((count, True) for count in range(n, 0, -1))]
    for count, stacked in tries:
        columns = list(range(n - count, n))
        tables = _tables(report, tokenizer, columns, stacked)
        if Measurement.get(con, con.options, tables[0]).maximum <= width:
            break
    return tables, columns


def render(report: StreamReport, tokenizer: Tokenizer, title: str, width: int | None = None):
    from rich.console import Group
    from rich.text import Text

    from mlxgpt.inspect.term import console
    from mlxgpt.ui.probs import PROB_STYLES

    width = width or console().width
    n = len(report.positions)
    (lens, added), columns = _fitting(report, tokenizer, width)
    prompt = "".join(tokenizer.token_label(i) for i in report.ids)
    parts: list = [Text(title, style="bold"), Text(f"prompt ({len(report.ids)} tokens): {prompt}", style="dim"),
                   Text("")]
    if len(columns) < n:
        parts.append(Text(f"the last {len(columns)} of the {n} positions asked for fit in {width} columns "
                          "(--save draws them all)", style="yellow"))
    legend = Text("colour = probability of the top token:", style="dim")
    for _, style, words in PROB_STYLES:
        legend.append(" ")
        legend.append(words, style=style)
    earlier = report.top_ids[:-1][:, columns]
    agree = int(np.sum(earlier == report.final_ids[None, columns]))
    parts += [Text("Logit lens: the top next token and its probability, read after each block", style="bold"), lens,
              Text(CAPTION, style="dim"), legend,
              Text(f"{agree} of {earlier.size} cells above the last row already name the model's final prediction",
                   style="dim")]
    itself = np.mean(report.top_ids[0] == np.array(report.ids)[report.positions])
    if itself >= 0.5:
        parts.append(Text("the embedding row mostly names the token at the position itself: before any block "
                          "has run, the stream is mostly that token's own vector, which the unembedding (the same "
                          "matrix, when tied) scores highest", style="dim"))
    parts += [Text(""),
              Text("Residual stream: the length (L2 norm) of what each block adds at each position", style="bold"),
              added,
              Text("the stream at the end is the embedding plus every block's addition (vectors, so the lengths "
                   "do not add up); yellow: the block that adds the most at that position", style="dim")]
    return Group(*parts)


# ---------------------------------------------------------------- picture


def picture(report: StreamReport, tokenizer: Tokenizer, title: str):
    """The lens as a heatmap layers × positions and the blocks' additions (drawn by mlxgpt/plots.py)."""
    from mlxgpt import plots

    label = tokenizer.token_label
    rows = row_labels(len(report.top_ids) - 1)
    rows[-1] += " = model"
    return plots.logit_lens_picture(
        report.p_final, [[label(int(i)) for i in row] for row in report.top_ids],
        report.contributions[:, report.positions], rows, [label(report.ids[t]) for t in report.positions],
        ["?" if i is None else label(i) for i in report.next_ids], title,
        "colour: the probability each layer's lens gives to the model's final prediction; text: that layer's top token",
        "lens = final norm + unembedding applied to the residual stream after each block (nostalgebraist 2020)")
