"""Where the parameters are: a tally by matrix family, as in 3Blue1Brown's chapter on GPT.

The eight families (embedding, query, key, value, output, MLP up, MLP down,
unembedding) are computed from a Shape alone, so the same function gives both
your model's tally and GPT-3's 175,181,291,520. What the families leave out
(biases, LayerNorm, the positional embedding) is listed separately; for a real
model every number is checked against the arrays it actually holds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from mlx.utils import tree_flatten

from mlxgpt.config import ModelArgs


@dataclass(frozen=True)
class Shape:
    """The numbers a parameter count depends on."""

    n_vocab: int
    d_model: int
    n_layer: int
    n_head: int
    d_head: int
    mlp_ratio: int = 4
    n_ctx: int = 2048
    bias: bool = True
    pos_embedding: str = "learned"  # "learned" | "sinusoidal" | "rope" (no parameters)
    tied: bool = False  # unembedding is the embedding matrix transposed
    # architecture switches that change the count (see ModelArgs)
    swiglu: bool = False  # a gate matrix beside the MLP's up-projection, d_mlp = mlp_hidden
    mlp_hidden: int | None = None  # the MLP's width when it is not mlp_ratio × d_model
    rmsnorm: bool = False  # norms with a gain only, even with biases
    qk_norm: bool = False  # a gain per head channel for queries and keys, in every layer
    post_ln: bool = False  # no final norm

    @property
    def d_mlp(self) -> int:
        return self.mlp_hidden or self.mlp_ratio * self.d_model

    @classmethod
    def from_args(cls, args: ModelArgs) -> "Shape":
        return cls(n_vocab=args.vocab_size, d_model=args.n_embd, n_layer=args.n_layer, n_head=args.n_head,
                   d_head=args.head_dim, mlp_ratio=4, n_ctx=args.block_size, bias=args.bias,
                   pos_embedding=args.pos_embedding, tied=args.tie_embeddings, swiglu=args.mlp == "swiglu",
                   mlp_hidden=args.mlp_hidden, rmsnorm=args.norm == "rmsnorm", qk_norm=args.qk_norm,
                   post_ln=args.post_ln)


# GPT-3 175B as published (Brown et al. 2020, table 2.1): 96 layers of 96 heads of 128, d_model 12,288,
# context 2,048, GPT-2's vocabulary of 50,257. Counted, like 3Blue1Brown, with a separate unembedding.
GPT3 = Shape(n_vocab=50257, d_model=12288, n_layer=96, n_head=96, d_head=128, mlp_ratio=4, n_ctx=2048,
             bias=True, pos_embedding="learned", tied=False)

FAMILIES = ("embedding", "query", "key", "value", "output", "mlp_up", "mlp_down", "unembedding")
FAMILY_NAMES = {"embedding": "Embedding", "query": "Query", "key": "Key", "value": "Value", "output": "Output",
                "mlp_up": "MLP up", "mlp_down": "MLP down", "unembedding": "Unembedding"}


@dataclass(frozen=True)
class Row:
    key: str
    name: str
    formula: str  # in symbols
    factors: tuple[int, ...]  # the same formula in numbers
    note: str = ""

    @property
    def count(self) -> int:
        return math.prod(self.factors)

    @property
    def numbers(self) -> str:
        return " × ".join(f"{f:,}" for f in self.factors)


def d_mlp_symbol(s: Shape) -> str:
    return "d_mlp" if s.mlp_hidden else f"{s.mlp_ratio}·d_model"


def mlp_up_row(s: Shape) -> Row:
    if s.swiglu:  # SwiGLU: the up-projection and its gate, both d_model -> d_mlp (8/3 d_model)
        return Row("mlp_up", FAMILY_NAMES["mlp_up"], "n_layer × 2 × d_model × d_mlp", (s.n_layer, 2, s.d_model, s.d_mlp),
                   f"SwiGLU: the up-projection and its gate, d_model → d_mlp = {s.d_mlp}")
    return Row("mlp_up", FAMILY_NAMES["mlp_up"], f"n_layer × d_model × {d_mlp_symbol(s)}",
               (s.n_layer, s.d_model, s.d_mlp), f"the MLP's up-projection, d_model → {d_mlp_symbol(s)}")


def family_rows(s: Shape) -> list[Row]:
    """The eight weight-matrix families, each as a product of the shape's numbers."""
    tied = "the embedding matrix, transposed (tied: stored once)" if s.tied else ""
    per_head = "n_layer × n_head × d_model × d_head"
    return [
        Row("embedding", FAMILY_NAMES["embedding"], "n_vocab × d_model", (s.n_vocab, s.d_model),
            "one column per token"),
        Row("query", FAMILY_NAMES["query"], per_head, (s.n_layer, s.n_head, s.d_model, s.d_head)),
        Row("key", FAMILY_NAMES["key"], per_head, (s.n_layer, s.n_head, s.d_model, s.d_head)),
        Row("value", FAMILY_NAMES["value"], per_head, (s.n_layer, s.n_head, s.d_model, s.d_head),
            "value down-projection, one per head"),
        Row("output", FAMILY_NAMES["output"], "n_layer × n_head × d_head × d_model",
            (s.n_layer, s.n_head, s.d_head, s.d_model), "value up-projection: heads back to d_model"),
        mlp_up_row(s),
        Row("mlp_down", FAMILY_NAMES["mlp_down"], f"n_layer × {d_mlp_symbol(s)} × d_model",
            (s.n_layer, s.d_mlp, s.d_model), "the MLP's down-projection, back to d_model"),
        Row("unembedding", FAMILY_NAMES["unembedding"], "d_model × n_vocab", (s.d_model, s.n_vocab), tied),
    ]


def other_rows(s: Shape) -> list[Row]:
    """Parameters outside the eight families."""
    h = s.n_head * s.d_head  # width of all heads side by side (= d_model in GPT-2/3)
    if s.bias:
        # per layer: q, k, v biases (3h), attention output (d_model), MLP up (d_mlp, and the gate's) and down
        up = "2·d_mlp" if s.swiglu else "d_mlp"
        biases = Row("biases", "Biases of the linear layers", f"n_layer × (3·n_head·d_head + 2·d_model + {up})",
                     (s.n_layer, 3 * h + 2 * s.d_model + (2 if s.swiglu else 1) * s.d_mlp))
    else:
        biases = Row("biases", "Biases of the linear layers", "none (bias=False)", (0,))
    with_bias = s.bias and not s.rmsnorm  # RMSNorm has a gain only
    kind = "RMSNorm" if s.rmsnorm else "LayerNorm"
    norms, which = (2 * s.n_layer, "two per block, no final one (post-LN)") if s.post_ln else \
        (2 * s.n_layer + 1, "two per block + the final one")
    norm_formula = f"({'2·n_layer' if s.post_ln else '2·n_layer + 1'}) × {'2·' if with_bias else ''}d_model"
    norm = Row("layernorm", f"{kind} gains" + (" and biases" if with_bias else ""), norm_formula,
               (norms, (2 if with_bias else 1) * s.d_model), which)
    if s.pos_embedding == "learned":
        pos = Row("position", "Positional embedding (learned)", "n_ctx × d_model", (s.n_ctx, s.d_model))
    else:
        pos = Row("position", f"Positional encoding ({'rotary' if s.pos_embedding == 'rope' else 'sinusoidal'})",
                  "none: a fixed formula", (0,))
    rows = [biases, norm, pos]
    if s.qk_norm:
        rows.append(Row("qk_norm", "QK-norm gains", "n_layer × 2 × d_head", (s.n_layer, 2, s.d_head),
                        "queries' and keys' RMSNorm, shared by the heads"))
    return rows


@dataclass(frozen=True)
class Tally:
    shape: Shape
    families: list[Row]
    others: list[Row]

    @property
    def families_total(self) -> int:
        return sum(r.count for r in self.families)

    @property
    def shared(self) -> int:
        """Counted twice in the tally but stored once: the tied unembedding."""
        return self.shape.d_model * self.shape.n_vocab if self.shape.tied else 0

    @property
    def total(self) -> int:
        """Parameters actually stored: families + the rest, the tied matrix once."""
        return self.families_total + sum(r.count for r in self.others) - self.shared

    def counts(self) -> dict[str, int]:
        return {r.key: r.count for r in self.families + self.others}


def tally(shape: Shape) -> Tally:
    return Tally(shape, family_rows(shape), other_rows(shape))


def model_counts(model) -> dict[str, int]:
    """The same families, counted from the arrays a GPT really holds (path by path).

    A tied model has no unembedding array: it is reported as the embedding's
    size under "unembedding" and under "shared", so that families + others -
    shared equals the sum of all arrays."""
    counts = {k: 0 for k in FAMILIES + ("biases", "layernorm", "qk_norm", "position", "shared", "unknown")}
    for path, w in tree_flatten(model.parameters()):
        parts = path.split(".")
        if path == "wte.weight":
            counts["embedding"] += w.size
        elif path == "wpe.weight":
            counts["position"] += w.size
        elif path == "lm_head.weight":
            counts["unembedding"] += w.size
        elif parts[-2].startswith("ln_"):
            counts["layernorm"] += w.size
        elif parts[-2] in ("q_norm", "k_norm"):
            counts["qk_norm"] += w.size
        elif parts[-1] == "bias":
            counts["biases"] += w.size
        elif path.endswith("attn.c_attn.weight"):  # (3·C, C): query, key, value rows stacked
            for key in ("query", "key", "value"):
                counts[key] += w.size // 3
        elif path.endswith("attn.c_proj.weight"):
            counts["output"] += w.size
        elif path.endswith(("mlp.c_fc.weight", "mlp.c_gate.weight")):
            counts["mlp_up"] += w.size
        elif path.endswith("mlp.c_proj.weight"):
            counts["mlp_down"] += w.size
        else:
            counts["unknown"] += w.size
    if model.args.tie_embeddings:
        counts["unembedding"] = counts["shared"] = model.wte.weight.size
    return counts


def stored_total(model) -> int:
    """Every number in every array of the model: the honest parameter count."""
    return sum(w.size for _, w in tree_flatten(model.parameters()))


# ---------------------------------------------------------------- terminal and picture (mlxgpt/plots.py)


def render(t: Tally, title: str, model=None):
    """A Rich renderable: the family table, the rest, and the check against the model."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    from mlxgpt.ui.format import bar, format_count

    real = model_counts(model) if model is not None else None

    def shape_cell(r: Row) -> Text:
        return Text.assemble(r.formula, "\n", (f"= {r.numbers}" if r.count else "", "dim"))

    def count_cell(r: Row, sign: str = "") -> str:
        check = ""
        if real is not None and r.key in real:
            check = " ✓" if real[r.key] == r.count else f" ✗ (model: {real[r.key]:,})"
        return f"{sign}{r.count:,}{check}"

    width = len(f"{t.families_total:,}") + (2 if model is not None else 0)
    table = Table(title=title, title_justify="left", show_footer=True, header_style="bold", footer_style="bold")
    table.add_column("family", no_wrap=True, footer="Eight families")
    table.add_column("shape formula")
    table.add_column("parameters", justify="right", no_wrap=True, min_width=width, footer=f"{t.families_total:,}")
    table.add_column("share", justify="right", no_wrap=True, footer="100%")
    table.add_column("", width=10, no_wrap=True)
    total = t.families_total or 1
    for r in t.families:
        share = r.count / total
        table.add_row(r.name, shape_cell(r), count_cell(r), f"{100 * share:.1f}%", Text(bar(share, 10), style="cyan"))
    notes = [f"{r.name}: {r.note}" for r in t.families if r.note]

    rest = Table(title="Not in the eight families", title_justify="left", header_style="bold")
    rest.add_column("what", no_wrap=True)
    rest.add_column("shape formula")
    rest.add_column("parameters", justify="right", no_wrap=True, min_width=width)
    for r in t.others:
        rest.add_row(r.name, shape_cell(r), count_cell(r))
    if t.shared:
        shared = Row("shared", "Tied unembedding, counted twice", "stored once: − n_vocab × d_model",
                     (t.shape.n_vocab, t.shape.d_model))
        rest.add_row(shared.name, shape_cell(shared), f"−{t.shared:,}")

    lines = [Text("\n".join(notes), style="dim"), Text(""), rest, Text(""),
             Text.assemble(("Total parameters: ", "bold"), (f"{t.total:,}", "bold"), f"  ({format_count(t.total)})")]
    if t.shape.tied:
        lines.append(Text("The unembedding is tied: the model turns vectors back into token scores with the "
                          "embedding matrix itself (transposed). The eight-family tally counts it, as 3Blue1Brown "
                          "does for GPT-3; the model stores it once, so the total subtracts it.", style="dim"))
    if model is not None:
        stored = stored_total(model)
        ok = stored == t.total and real["unknown"] == 0 and real["shared"] == t.shared
        verdict = "✓ equals" if ok else "✗ differs from"
        lines.append(Text(f"{verdict} the loaded model's real count: {stored:,} numbers in its arrays. "
                          f"(nanoGPT's num_params() leaves out the positional embedding: {model.num_params():,}.)",
                          style="green" if ok else "bold red"))
    else:
        lines.append(Text("GPT-3 itself is not loaded: every number is computed from its published shape; "
                          "3Blue1Brown's running tally is the eight families.", style="dim"))
    return Group(table, *lines)


def picture(t: Tally, title: str):
    """A bar per family (longest = largest family), with count, share and formula; the rest below."""
    from mlxgpt import plots

    others = [f"{r.name}: {r.count:,}" for r in t.others]
    if t.shared:
        others.append(f"tied unembedding, stored once: −{t.shared:,}")
    return plots.parameter_families([r.name for r in t.families], [r.count for r in t.families],
                                    [r.numbers for r in t.families], others, t.total, title)
