"""Cross-attention maps of an encoder-decoder: for one (source, target) pair, how much each target
position reads each source character. This is the alignment figure of Bahdanau et al. (2014).

The weights are the model's own (EncoderDecoder.cross_attention_weights: each decoder layer's
softmax(q·kᵀ/√d_head), with queries from the target and keys from the encoded source). They come
from one forward pass. The decoder reads bos + the target (tgt_in), and at each position it predicts
the next token (tgt_out = the target + eos). A row of a map is labelled by the token PREDICTED
there: row "q" is the position that writes "q", and its weights show which source characters it
read to write it. The last row, <eos>, is where the model decides to stop.

The target is either the model's own greedy translation or, with --target, a reference the
decoder reads (teacher forcing). The first shows what the model writes. The second shows how
it reads the source while it follows the right answer.
"""

from __future__ import annotations

from dataclasses import dataclass

import mlx.core as mx
import numpy as np

from mlxgpt.errors import MlxgptError
from mlxgpt.seq2seq.data import PairVocabulary
from mlxgpt.seq2seq.model import EncoderDecoder, greedy
from mlxgpt.tokenizers.base import UnknownCharactersError

ROWS = "row = target position, labelled by the token it predicts (t1 … <eos>)"
COLUMNS = "column = source character"


@dataclass
class AlignedPair:
    """One source and one target, as the decoder sees them."""

    source: str
    target: str  # the target as shown: its tokens' labels (without the final eos), e.g. "quatre-vingt-dix-sept"
    src_ids: list[int]  # the source characters (no padding)
    tgt_in: list[int]  # bos + target: what the decoder reads
    tgt_out: list[int]  # target + eos: what each position predicts (a row of the map each)
    source_labels: list[str]  # the columns' labels
    target_labels: list[str]  # the rows' labels: the tokens of tgt_out
    greedy: bool  # True: the model's own translation; False: --target, teacher-forced
    ended: bool  # tgt_out ends with eos (a greedy translation may run out of block before it)


def _encode(vocab: PairVocabulary, text: str, flag: str) -> list[int]:
    try:
        return vocab.encode(text)
    except UnknownCharactersError as exc:
        raise MlxgptError(f"{flag}: {exc}") from None


def source_ids(vocab: PairVocabulary, source: str, block_size: int) -> list[int]:
    """The source's ids: at least one character, at most block_size (the encoder's positions)."""
    ids = _encode(vocab, source, "--source")
    if not ids:
        raise MlxgptError("--source is empty: pass the text to translate (e.g. --source \"ninety-seven\")")
    if len(ids) > block_size:
        raise MlxgptError(f"--source is {len(ids)} characters, more than the model's block_size of {block_size}: "
                          "shorten it")
    return ids


def target_ids(vocab: PairVocabulary, target: str, block_size: int) -> list[int]:
    """A reference target's ids: the decoder reads bos + the target, so at most block_size - 1 characters."""
    ids = _encode(vocab, target, "--target")
    if len(ids) + 1 > block_size:
        raise MlxgptError(f"--target is {len(ids)} characters; the decoder reads <bos> and at most "
                          f"{block_size - 1} of them (block_size {block_size}): shorten it")
    return ids


def make_pair(model: EncoderDecoder, vocab: PairVocabulary, source: str, target: str | None = None) -> AlignedPair:
    """The pair to show. Without a target it is the model's greedy translation of the source, cut
    at block_size tokens if it never writes eos. With one, the target is used as given."""
    block = model.args.block_size
    src = source_ids(vocab, source, block)
    if target is None:
        out = greedy(model, src, vocab.bos_id, vocab.eos_id, max_len=block)
        ended = len(out) < block  # greedy stopped at eos; else it wrote block_size tokens and no eos
        tgt_in = [vocab.bos_id, *(out if ended else out[:-1])]  # without eos the last token is predicted, not read
        tgt_out = [*out, vocab.eos_id] if ended else out
    else:
        tgt, ended = target_ids(vocab, target, block), True
        tgt_in, tgt_out = [vocab.bos_id, *tgt], [*tgt, vocab.eos_id]
    labels = [vocab.token_label(i) for i in tgt_out]  # an untrained model may write specials: "<bos>"
    return AlignedPair(source=source, target="".join(labels[:-1] if ended else labels), src_ids=src, tgt_in=tgt_in,
                       tgt_out=tgt_out, source_labels=[vocab.token_label(i) for i in src], target_labels=labels,
                       greedy=target is None, ended=ended)


def cross_attention_maps(model: EncoderDecoder, pair: AlignedPair) -> np.ndarray:
    """(n_decoder_layers, n_head, Tt, Ts): the model's cross-attention weights for the pair;
    row = target position (predicting tgt_out[t]), column = source character. Each row sums to 1."""
    maps = model.cross_attention_weights(mx.array([pair.src_ids], dtype=mx.int32),
                                         mx.array([pair.tgt_in], dtype=mx.int32))  # per layer (1, nh, Tt, Ts)
    weights = mx.stack([m[0] for m in maps]).astype(mx.float32)
    mx.eval(weights)
    return np.array(weights)


def select(model: EncoderDecoder, layer: int | None, head: int | None) -> list[tuple[int, int]]:
    """The (decoder layer, head) maps that --layer and --head pick (all of them by default)."""
    n_layer, n_head = model.args.n_decoder_layers, model.args.n_head
    if layer is not None and not 0 <= layer < n_layer:
        raise MlxgptError(f"--layer {layer} does not exist: this model's decoder has layers 0 to {n_layer - 1}")
    if head is not None and not 0 <= head < n_head:
        raise MlxgptError(f"--head {head} does not exist: this model has heads 0 to {n_head - 1}")
    layers = [layer] if layer is not None else range(n_layer)
    heads = [head] if head is not None else range(n_head)
    return [(l, h) for l in layers for h in heads]


def mean_map(maps: np.ndarray, chosen: list[tuple[int, int]]) -> np.ndarray:
    """(Tt, Ts): the mean of the chosen maps. The mean of maps whose rows sum to 1 has rows that sum to 1."""
    return np.mean([maps[l, h] for l, h in chosen], axis=0)


def describe_choice(maps: np.ndarray, chosen: list[tuple[int, int]]) -> str:
    """What the main map is, in words."""
    n_layer, n_head = maps.shape[:2]
    layers, heads = sorted({l for l, _ in chosen}), sorted({h for _, h in chosen})
    if len(chosen) == 1:
        return f"layer {layers[0]}, head {heads[0]}"
    if len(layers) == 1:
        return f"layer {layers[0]}, mean of its {n_head} heads"
    if len(heads) == 1:
        return f"head {heads[0]}, mean over the {n_layer} layers"
    return f"mean of all {n_layer} layers × {n_head} heads"


def strongest(weights: np.ndarray) -> np.ndarray:
    """For each row (target position), the column (source character) it reads most."""
    return np.argmax(weights, axis=-1)


def _words(text: list[str]) -> list[tuple[int, int]]:
    """(start, end) of each run of letters and digits in a list of labels, end excluded (a special
    such as "<bos>", or a space shown as "␣", is not a letter: it ends a word)."""
    spans, start = [], None
    for i, c in enumerate([*text, " "]):
        if c.isalnum() and start is None:
            start = i
        elif not c.isalnum() and start is not None:
            spans.append((start, i))
            start = None
    return spans


def word_alignment(pair: AlignedPair, weights: np.ndarray) -> list[tuple[str, str]]:
    """(target word, source span) for each word of the target, then for <eos>: the source
    characters its characters read most (argmax of each row of `weights`), from the first to the
    last of them, widened to whole source words, without separators at its ends. E.g.
    ("quatre", "ninety")."""
    source = list(pair.source)
    best = strongest(weights)

    def span(start: int, end: int) -> str:  # rows start..end-1
        lo, hi = int(best[start:end].min()), int(best[start:end].max())
        while lo > 0 and source[lo - 1].isalnum() and source[lo].isalnum():  # widen to whole words
            lo -= 1
        while hi + 1 < len(source) and source[hi + 1].isalnum() and source[hi].isalnum():
            hi += 1
        read = "".join(source[lo:hi + 1])
        trimmed = read.strip("".join(c for c in read if not c.isalnum()))  # "ninety-" -> "ninety"
        return trimmed or read  # only a separator: "-"

    written = pair.target_labels[:-1] if pair.ended else pair.target_labels  # one row each, then <eos>
    pairs = [("".join(written[a:b]), span(a, b)) for a, b in _words(written)]
    if pair.ended:
        pairs.append(("<eos>", span(len(written), len(written) + 1)))
    return pairs


def alignment_line(pair: AlignedPair, weights: np.ndarray) -> str:
    """The word alignment in one line: 'quatre → ninety · vingt → ninety · … · <eos> → seven'."""
    return " · ".join(f"{word} → {span}" for word, span in word_alignment(pair, weights)) or \
        "none: the target has no words and no <eos>"


def pair_line(pair: AlignedPair) -> str:
    """The pair in words: the source, the target, and where the target comes from."""
    how = "the model's greedy translation" if pair.greedy else "given with --target, teacher-forced"
    cut = "" if pair.ended else " (no <eos> within block_size: cut there)"
    return f"source '{pair.source}' → target '{pair.target}' ({how}){cut}"


# ---------------------------------------------------------------- terminal


def _with_row_notes(heat, notes: list[str]):
    """The heat map's rows, each followed by its note (the heat map's last len(notes) lines are its rows)."""
    from rich.text import Text

    lines = heat.split("\n")
    first = len(lines) - len(notes)
    for line, note in zip(lines[first:], notes):
        line.append(note, style="dim")
    return Text("\n").join(lines)


def render(maps: np.ndarray, pair: AlignedPair, chosen: list[tuple[int, int]], title: str, width: int | None = None):
    """The chosen map (or their mean) large and labelled: source characters across, target tokens
    down, and beside each row the source character it reads most. With several maps chosen, each of
    them is also drawn small, with each layer's mean. Then the word alignment in one line."""
    from rich.columns import Columns
    from rich.console import Group
    from rich.panel import Panel
    from rich.text import Text

    from mlxgpt.inspect.term import colour_scale, console, half_block_text, heatmap_text

    con = console()
    width = width or con.width
    main = mean_map(maps, chosen)
    best = strongest(main)
    Ts = len(pair.source_labels)
    notes = [f" → {pair.source_labels[j]} {main[i, j]:.2f}" for i, j in enumerate(best)]
    label_w = max(len(s) for s in pair.target_labels)
    note_w = max(len(s) for s in notes)
    cell = 2 if label_w + 1 + 2 * Ts + note_w <= width else 1  # two characters make square-ish cells
    heat = heatmap_text(main, con=con, row_labels=pair.target_labels, col_labels=pair.source_labels, cell_width=cell)
    if label_w + 1 + cell * Ts + note_w <= width:  # the row notes when they fit
        heat = _with_row_notes(heat, notes)
    parts: list = [Text(title, style="bold"), Text(pair_line(pair), style="dim"),
                   Text(f"{describe_choice(maps, chosen)}: {ROWS}; {COLUMNS}; each row sums to 1; "
                        "→ the source character that row reads most", style="dim"),
                   heat, colour_scale(con, 0.0, 1.0)]
    if len(chosen) > 1:
        parts.append(Text("each map on its own (L = decoder layer, H = head; rows and columns as above):", style="dim"))
        heads_of = {l: [h for l2, h in chosen if l2 == l] for l in sorted({l for l, _ in chosen})}
        for layer, heads in heads_of.items():
            panels = [Panel(half_block_text(maps[layer, h], con=con), title=f"L{layer} H{h}", expand=False,
                            padding=(0, 0)) for h in heads]
            if len(heads) > 1:
                panels.append(Panel(half_block_text(maps[layer, heads].mean(axis=0), con=con),
                                    title=f"L{layer} mean", expand=False, padding=(0, 0)))
            parts.append(Columns(panels, padding=(0, 1)))
    parts.append(Text("Alignment (each target word → the source it reads most): ", style="bold")
                 + Text(alignment_line(pair, main)))
    if len(chosen) > 1:
        parts.append(Text("pick one map with --layer L --head H", style="dim"))
    return Group(*parts)


# ---------------------------------------------------------------- picture


def picture(maps: np.ndarray, pair: AlignedPair, chosen: list[tuple[int, int]], title: str):
    """The chosen maps as heatmaps, source across and target down (drawn by mlxgpt/plots.py)."""
    from mlxgpt import plots

    return plots.cross_attention(maps, pair.source_labels, pair.target_labels, chosen, title,
                                 describe_choice(maps, chosen), pair_line(pair))
