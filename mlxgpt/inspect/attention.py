"""Attention maps: for a prompt, how much each token (query) looks at each earlier token (key).

The weights are recomputed exactly as the model computes them: the block's
first LayerNorm (none with --post-ln), `CausalSelfAttention.qkv` for queries and keys
(with QK-norm and rotary positions if the model has them), and
`attention_weights` (softmax(q·kᵀ/√d_head) under the causal mask), layer by
layer, with the residual stream advanced by the real blocks.
"""

from __future__ import annotations

import mlx.core as mx
import numpy as np

from mlxgpt.errors import MlxgptError
from mlxgpt.model import GPT, attention_weights
from mlxgpt.tokenizers import Tokenizer


def check_prompt(model: GPT, ids: list[int]) -> None:
    """A prompt the views can run: at least one token, at most the model's context."""
    if not ids:
        raise MlxgptError("the prompt is empty: pass --prompt with at least one character")
    if len(ids) > model.args.block_size:
        raise MlxgptError(f"the prompt is {len(ids)} tokens, more than the model's context of "
                          f"{model.args.block_size}: shorten it")


def attention_maps(model: GPT, ids: list[int]) -> np.ndarray:
    """(n_layer, n_head, T, T) attention weights of a prompt; row = query, column = key."""
    check_prompt(model, ids)
    idx = mx.array(ids, dtype=mx.int32)[None]  # (1, T)
    x = model.embed(idx)  # (1, T, C): token + position; dropout is off in eval mode
    maps = []
    for block in model.h:
        q, k, _ = block.attn.qkv(x if block.post_ln else block.ln_1(x))  # (1, nh, T, hs)
        maps.append(attention_weights(q, k, block.attn.scale, causal=block.attn.causal)[0])  # (nh, T, T)
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
    """The chosen heads as heatmaps (a matplotlib Figure, drawn by mlxgpt/plots.py)."""
    from mlxgpt import plots

    return plots.attention_heads(maps, labels, chosen, title)
