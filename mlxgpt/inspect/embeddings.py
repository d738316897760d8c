"""The learned token embedding: which tokens the model puts near each other.

Rows of `wte.weight` (n_vocab, d_model) are the token vectors. Similarity is
cosine similarity (the angle between vectors, ignoring their length).
`--map` projects all of them onto their two principal components (PCA via SVD).
"""

from __future__ import annotations

import re

import numpy as np

from mlxgpt.errors import MlxgptError
from mlxgpt.model import GPT
from mlxgpt.tokenizers import Tokenizer


def embedding_matrix(model: GPT) -> np.ndarray:
    """(n_vocab, d_model) token vectors, float64 so that cos(x, x) is 1 to the last digit we print."""
    import mlx.core as mx

    return np.array(model.wte.weight.astype(mx.float32)).astype(np.float64)


def unit_rows(E: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(E, axis=1, keepdims=True)
    return E / np.where(norms == 0, 1.0, norms)


def cosine_to(E: np.ndarray, vector: np.ndarray) -> np.ndarray:
    v = vector / (np.linalg.norm(vector) or 1.0)
    return unit_rows(E) @ v


def nearest(E: np.ndarray, token: int, k: int = 10) -> list[tuple[int, float]]:
    """The k tokens most similar to `token` (itself first, at similarity 1)."""
    sims = cosine_to(E, E[token])
    sims[token] = 1.0  # exact: rounding must not let a twin overtake the token itself
    order = sorted(range(len(sims)), key=lambda i: (-sims[i], i != token))
    return [(i, float(sims[i])) for i in order[:k]]


def analogy(E: np.ndarray, a: int, b: int, c: int, k: int = 10) -> list[tuple[int, float]]:
    """Tokens nearest to a − b + c, leaving out a, b and c themselves (as word2vec does)."""
    sims = cosine_to(E, E[a] - E[b] + E[c])
    order = [i for i in np.argsort(-sims, kind="stable") if i not in (a, b, c)]
    return [(int(i), float(sims[i])) for i in order[:k]]


def pca_2d(E: np.ndarray) -> tuple[np.ndarray, tuple[float, float]]:
    """Coordinates of every token on the two principal axes, and the share of variance each explains."""
    centred = E - E.mean(axis=0, keepdims=True)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    coords = centred @ vt[:2].T
    var = s ** 2
    share = var / var.sum() if var.sum() else np.zeros_like(var)
    # a deterministic sign, so the picture does not flip between runs
    for d in range(2):
        if coords[np.argmax(np.abs(coords[:, d])), d] < 0:
            coords[:, d] *= -1
    return coords, (float(share[0]), float(share[1]) if len(share) > 1 else 0.0)


_ESCAPES = {"\\n": "\n", "\\t": "\t", "\\r": "\r", "space": " ", "newline": "\n"}
_FROM_VISIBLE = {"⏎": "\n", "␣": " ", "⇥": "\t", "␍": "\r"}


def resolve_token(tokenizer: Tokenizer, text: str) -> int:
    """The id of one token, given as its text, its visible label (␣ ⏎), or an escape (\\n, space)."""
    if text == "":
        raise MlxgptError("the token is empty: pass one token, e.g. --token e (use \\n or space for whitespace)")
    for i in range(tokenizer.vocab_size):
        if tokenizer.token_label(i) == text:
            return i
    raw = _ESCAPES.get(text, text)
    for shown, char in _FROM_VISIBLE.items():  # '␣the' means ' the'
        raw = raw.replace(shown, char)
    ids = tokenizer.encode(raw)  # unknown characters raise a one-line error
    if len(ids) == 1:
        return ids[0]
    labels = " ".join(tokenizer.token_label(i) for i in ids)
    raise MlxgptError(f"{text!r} is {len(ids)} tokens ({labels}), not one: pass a single token")


# ---------------------------------------------------------------- categories (for colours)

CATEGORY_ORDER = ["vowel", "consonant", "Vowel (capital)", "Consonant (capital)", "digit", "punctuation",
                  "whitespace", "word start", "word piece", "Capitalised", "other"]
# dark enough to read as text on white, distinct enough to tell apart on a dark terminal
CATEGORY_COLOURS = dict(zip(CATEGORY_ORDER, ["#1f77b4", "#e8710a", "#d62728", "#17becf", "#2ca02c", "#9467bd",
                                             "#8c564b", "#393b79", "#637939", "#843c39", "#7f7f7f"]))
_BYTE_PIECE = re.compile(r"<0x[0-9A-Fa-f]{2}>")


def map_tokens(tokenizer: Tokenizer) -> tuple[list[int], int]:
    """The tokens worth a place on the map, and how many byte-fallback pieces (<0xC3>) were left out:
    a SentencePiece model's 256 byte pieces are rarely used, so their vectors stay near their random
    start and would swamp the picture and its principal axes."""
    keep = [i for i in range(tokenizer.vocab_size) if not _BYTE_PIECE.fullmatch(tokenizer.token_label(i))]
    return keep, tokenizer.vocab_size - len(keep)


def category(label: str) -> str:
    """A coarse class of a token's visible label, for colouring the map."""
    if label in ("␣", "⏎", "⇥", "␍") or label.isspace():
        return "whitespace"
    if len(label) == 1:
        if label.isdigit():
            return "digit"
        if label.isalpha():
            vowel = label.lower() in "aeiou"
            if label.isupper():
                return "Vowel (capital)" if vowel else "Consonant (capital)"
            return "vowel" if vowel else "consonant"
        return "punctuation" if not label.isalnum() else "other"
    if label[0] in "␣▁":
        return "word start"
    if label[0].isupper():
        return "Capitalised"
    if label.isalpha():
        return "word piece"
    return "other"


# ---------------------------------------------------------------- terminal


def render_neighbours(rows: list[tuple[int, float]], tokenizer: Tokenizer, title: str, query: int | None = None,
                      caption: str = ""):
    from rich.table import Table
    from rich.text import Text

    from mlxgpt.ui.format import bar

    table = Table(title=title, title_justify="left", title_style="bold", caption=caption or None,
                  caption_justify="left", header_style="bold")
    table.add_column("#", justify="right", style="dim")
    table.add_column("token")
    table.add_column("id", justify="right", style="dim")
    table.add_column("cosine", justify="right")
    table.add_column("", min_width=20)
    for rank, (i, sim) in enumerate(rows, start=1):
        style = "bold yellow" if i == query else ""
        table.add_row(str(rank), Text(tokenizer.token_label(i), style=style), str(i), f"{sim:+.3f}",
                      Text(bar(sim, 20), style="cyan" if sim >= 0 else "red"))
    return table


def render_map(coords: np.ndarray, share: tuple[float, float], labels: list[str], title: str, note: str = "",
               width: int = 96, height: int = 30):
    """A character-grid scatter plot: each token's label at its place, coloured by category."""
    from rich.console import Group
    from rich.text import Text

    from mlxgpt.inspect.term import console

    con = console()
    width = max(30, min(width, con.width - 2))
    cats = [category(s) for s in labels]
    grid: list[list[tuple[str, str] | None]] = [[None] * width for _ in range(height)]
    lo, hi = coords.min(axis=0), coords.max(axis=0)
    span = np.where(hi - lo == 0, 1.0, hi - lo)
    # place tokens nearest the centre last, so outliers keep their exact spots
    order = np.argsort(-np.linalg.norm(coords - coords.mean(axis=0), axis=1))
    for i in order:
        text = labels[i][:6]
        col = int((coords[i, 0] - lo[0]) / span[0] * (width - len(text)))
        row = int((hi[1] - coords[i, 1]) / span[1] * (height - 1))
        spot = _free_spot(grid, row, col, len(text))
        if spot is None:
            continue
        r, c = spot
        for k, ch in enumerate(text):
            grid[r][c + k] = (ch, CATEGORY_COLOURS[cats[i]])
    out = Text()
    for r in range(height):
        for cell in grid[r]:
            out.append(" ") if cell is None else out.append(cell[0], style=cell[1])
        out.append("\n")
    legend = Text("colours: ")
    for c in CATEGORY_ORDER:
        if c in cats:
            legend.append(f"■ {c}  ", style=CATEGORY_COLOURS[c])
    axes = Text(f"horizontal: 1st principal component ({100 * share[0]:.1f}% of the variance), "
                f"vertical: 2nd ({100 * share[1]:.1f}%)", style="dim")
    return Group(Text(title, style="bold"), axes, *([Text(note, style="dim")] if note else []), out, legend)


def _free_spot(grid, row: int, col: int, length: int) -> tuple[int, int] | None:
    height, width = len(grid), len(grid[0])
    for radius in range(0, 6):
        for dr in range(-radius, radius + 1):
            for dc in range(-2 * radius, 2 * radius + 1):
                if max(abs(dr), (abs(dc) + 1) // 2) != radius:
                    continue
                r, c = row + dr, col + dc
                if 0 <= r < height and 0 <= c and c + length <= width and \
                        all(grid[r][c + k] is None for k in range(-1 if c else 0, length + (1 if c + length < width else 0))):
                    return r, c
    return None


# ---------------------------------------------------------------- pictures (drawn by mlxgpt/plots.py)


def neighbours_picture(rows: list[tuple[int, float]], tokenizer: Tokenizer, title: str, subtitle: str = "",
                       highlight: int | None = None):
    from mlxgpt import plots

    return plots.similarity_bars([tokenizer.token_label(i) for i, _ in rows], [s for _, s in rows], title,
                                 subtitle, highlight)


def map_picture(coords: np.ndarray, share: tuple[float, float], labels: list[str], title: str, note: str = ""):
    from mlxgpt import plots

    return plots.token_map(coords, share, labels, [category(s) for s in labels], CATEGORY_COLOURS, title, note)
