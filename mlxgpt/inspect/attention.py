"""Attention maps: for a prompt, how much each token (query) looks at each earlier token (key).

The weights are recomputed exactly as the model computes them: the block's
first LayerNorm, `CausalSelfAttention.qkv` for queries and keys, and
`attention_weights` (softmax(q·kᵀ/√d_head) under the causal mask), layer by
layer, with the residual stream advanced by the real blocks.
"""

from __future__ import annotations

import math

import mlx.core as mx
import numpy as np

from mlxgpt.errors import MlxgptError
from mlxgpt.model import GPT, attention_weights
from mlxgpt.tokenizers import Tokenizer


def attention_maps(model: GPT, ids: list[int]) -> np.ndarray:
    """(n_layer, n_head, T, T) attention weights of a prompt; row = query, column = key."""
    if not ids:
        raise MlxgptError("the prompt is empty: pass --prompt with at least one character")
    if len(ids) > model.args.block_size:
        raise MlxgptError(f"the prompt is {len(ids)} tokens, more than the model's context of "
                          f"{model.args.block_size}: shorten it")
    idx = mx.array(ids, dtype=mx.int32)[None]  # (1, T)
    x = model.wte(idx) + model.position_embedding(0, len(ids))  # (1, T, C); dropout is off in eval mode
    maps = []
    for block in model.h:
        q, k, _ = block.attn.qkv(block.ln_1(x))  # (1, nh, T, hs)
        maps.append(attention_weights(q, k, block.attn.scale)[0])  # (nh, T, T)
        x = block(x)  # the real block moves the residual stream on
    weights = mx.stack(maps)
    mx.eval(weights)
    return np.array(weights.astype(mx.float32))


def causal_mask(T: int) -> np.ndarray:
    """True where a query may NOT look: keys after it."""
    return np.triu(np.ones((T, T), dtype=bool), k=1)


def prompt_tokens(tokenizer: Tokenizer, prompt: str, block_size: int) -> tuple[list[int], list[str], bool]:
    """Token ids and visible labels of a prompt, cut to its last block_size tokens."""
    ids = tokenizer.encode(prompt)
    if not ids:
        raise MlxgptError("the prompt is empty: pass --prompt with at least one character")
    cut = len(ids) > block_size
    ids = ids[-block_size:]
    return ids, [tokenizer.token_label(i) for i in ids], cut


def select(maps: np.ndarray, layer: int | None, head: int | None) -> list[tuple[int, int]]:
    n_layer, n_head = maps.shape[:2]
    if layer is not None and not 0 <= layer < n_layer:
        raise MlxgptError(f"--layer {layer} does not exist: this model has layers 0 to {n_layer - 1}")
    if head is not None and not 0 <= head < n_head:
        raise MlxgptError(f"--head {head} does not exist: this model has heads 0 to {n_head - 1}")
    layers = [layer] if layer is not None else range(n_layer)
    heads = [head] if head is not None else range(n_head)
    return [(l, h) for l in layers for h in heads]


def describe_head(weights: np.ndarray, labels: list[str]) -> str:
    """A one-line summary of what a head mostly does (for the terminal)."""
    T = weights.shape[0]
    if T < 2:
        return "one token: it can only look at itself"
    rows = weights[1:]  # row 0 has no choice
    diag = float(np.mean([rows[i, i + 1] for i in range(T - 1)]))
    prev = float(np.mean([rows[i, i] for i in range(T - 1)]))  # key = query - 1
    first = float(np.mean(rows[:, 0]))
    favourite = np.argmax(weights[-1])
    parts = [f"self {diag:.2f}", f"previous {prev:.2f}", f"first {first:.2f}"]
    return f"mean weight on itself/previous/first token: {', '.join(parts)}; last token looks most at " \
           f"#{favourite} '{labels[favourite]}' ({weights[-1, favourite]:.2f})"


# ---------------------------------------------------------------- terminal


def render(maps: np.ndarray, labels: list[str], chosen: list[tuple[int, int]], title: str):
    from rich.columns import Columns
    from rich.console import Group
    from rich.panel import Panel
    from rich.text import Text

    from mlxgpt.inspect.term import colour_scale, console, half_block_text, heatmap_text

    con = console()
    T = len(labels)
    mask = causal_mask(T)
    parts: list = [Text(title, style="bold")]
    if len(chosen) == 1:
        layer, head = chosen[0]
        label_w = max(len(s) for s in labels)
        cell = 2 if label_w + 1 + 2 * T <= con.width else 1  # two characters make square-ish cells
        parts.append(Text(f"layer {layer}, head {head}: row = query (the token looking), "
                          "column = key (the token looked at); · = future, hidden by the causal mask", style="dim"))
        parts.append(heatmap_text(maps[layer, head], con=con, row_labels=labels, col_labels=labels, mask=mask,
                                  cell_width=cell))
        parts.append(colour_scale(con, 0.0, 1.0))
        parts.append(Text(describe_head(maps[layer, head], labels), style="dim"))
        return Group(*parts)
    parts.append(Text("each map: rows = queries, columns = keys, top-left = first token; "
                      "grey = hidden by the causal mask. Tokens: " + " ".join(labels), style="dim"))
    for layer in sorted({l for l, _ in chosen}):
        panels = [Panel(half_block_text(maps[layer, head], con=con, mask=mask), title=f"L{layer} H{head}",
                        expand=False, padding=(0, 0))
                  for l, head in chosen if l == layer]
        parts.append(Columns(panels, padding=(0, 1)))
    parts.append(colour_scale(con, 0.0, 1.0))
    parts.append(Text("pick one with --layer L --head H for labelled rows and columns", style="dim"))
    return Group(*parts)


# ---------------------------------------------------------------- picture


def picture(maps: np.ndarray, labels: list[str], chosen: list[tuple[int, int]], title: str):
    from mlxgpt.inspect.canvas import Canvas, text_width
    from mlxgpt.inspect.pictures import colour_bar, heatmap, label_extent

    T = len(labels)
    mask = causal_mask(T)
    short = all(len(s) <= 2 for s in labels)
    if len(chosen) == 1:
        layer, head = chosen[0]
        cell = max(2.5, min(34.0, 640.0 / T))
        size = min(13.0, max(7.0, cell * 0.6))
        every = math.ceil(size * 1.2 / cell)  # label every n-th token when cells are smaller than letters
        lab = label_extent(labels, size)
        top_room = (size + 8) if short else lab + 10
        left = 60 + lab
        top = 92 + top_room
        width = max(left + T * cell + 90, text_width(title, 14) + 30, 720)
        height = top + T * cell + 50
        cv = Canvas(width, height)
        cv.text(14, 24, title, 14, bold=True)
        cv.text(14, 42, f"layer {layer}, head {head}: attention weights softmax(q·kᵀ/√d_head), rows sum to 1", 10,
                "#555555")
        cv.text(14, 56, "grey = future tokens, hidden by the causal mask", 10, "#555555")
        heatmap(cv, left, top, maps[layer, head], cell, row_labels=labels, col_labels=labels, mask=mask,
                label_size=size, annotate=cell >= 26, label_every=every)
        cv.text(left + T * cell / 2, top - top_room - 6, "key: the token being looked at →", 11, "#444444",
                anchor="middle")
        cv.text(left - lab - 16, top + T * cell / 2, "← query: the token looking", 11, "#444444", anchor="middle",
                rotate=-90)
        colour_bar(cv, left + T * cell + 24, top, min(220.0, T * cell), vmin=0.0, vmax=1.0, label="weight")
        return cv
    layers = sorted({l for l, _ in chosen})
    heads = sorted({h for _, h in chosen})
    cell = max(0.75, min(14.0, 220.0 / T))
    size = min(10.0, cell * 0.85)
    show_labels = cell >= 7
    lab = label_extent(labels, size) if show_labels else 0.0
    gap = 18 + (lab if show_labels else 0)
    map_w = T * cell
    left, top = 70 + lab, 78
    width = left + len(heads) * (map_w + gap) + 70
    height = top + len(layers) * (map_w + gap + (0 if short else lab)) + 30
    cv = Canvas(width, height)
    cv.text(14, 24, title, 14, bold=True)
    cv.text(14, 42, "every head of every layer; in each map rows = queries, columns = keys (first token top-left), "
                    "grey = hidden by the causal mask", 10, "#555555")
    for r, layer in enumerate(layers):
        y = top + r * (map_w + gap + (0 if short else lab))
        cv.text(14, y + map_w / 2 + 4, f"layer {layer}", 11, bold=True)
        for c, head in enumerate(heads):
            if (layer, head) not in chosen:
                continue
            x = left + c * (map_w + gap)
            if r == 0:
                cv.text(x + map_w / 2, top - 10, f"head {head}", 11, anchor="middle", bold=True)
            heatmap(cv, x, y, maps[layer, head], cell,
                    row_labels=labels if show_labels and c == 0 else None,
                    col_labels=labels if show_labels and r == len(layers) - 1 else None,
                    col_labels_below=True, mask=mask, label_size=size)
    colour_bar(cv, width - 50, top, min(160.0, map_w), vmin=0.0, vmax=1.0, label="weight")
    return cv
