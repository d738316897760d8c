"""`mlxgpt inspect VIEW ...`: the arguments of each view and the code that runs it.

Registered in mlxgpt/cli.py's COMMANDS; nothing heavy is imported until a view runs.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from mlxgpt.errors import MlxgptError
from mlxgpt.flags import add_checkpoint_argument

VIEWS = {
    "params": "parameter tally by matrix family (yours, or GPT-3's with --gpt3)",
    "attention": "attention weights of every head for a prompt, as heatmaps",
    "embeddings": "nearest tokens, analogies, and a 2-D map of the token embeddings",
    "positions": "the positional encodings (sinusoidal curves, or learned similarity matrix)",
    "next": "the next-token distribution after a prompt, at temperatures 0.5, 1, 2",
    "stream": "the residual stream block by block, and a logit lens: what each block would predict",
    "cross-attention": "an encoder-decoder's cross-attention for one pair: the source-target alignment map",
}


def _common(p: argparse.ArgumentParser, checkpoint: bool = True) -> None:
    if checkpoint:
        add_checkpoint_argument(p)
    p.add_argument("--save", metavar="FILE", help="also draw the picture (matplotlib) into FILE.png, .svg or .pdf")


def add_inspect_arguments(p: argparse.ArgumentParser) -> None:
    p.description = ("Look inside a trained model: every concept of a GPT (and an encoder-decoder's "
                     "cross-attention), shown on your own checkpoint. "
                     "Each view prints to the terminal and can save a picture (--save FILE.png|svg|pdf).")
    views = p.add_subparsers(dest="view", required=True, metavar="VIEW")
    fmt = p.formatter_class

    v = views.add_parser("params", help=VIEWS["params"], description=VIEWS["params"], formatter_class=fmt)
    which = v.add_mutually_exclusive_group()
    add_checkpoint_argument(which)
    which.add_argument("--gpt3", action="store_true", help="GPT-3 175B's published shape instead of a checkpoint")
    _common(v, checkpoint=False)
    v.set_defaults(view_func=cmd_params)

    v = views.add_parser("attention", help=VIEWS["attention"], description=VIEWS["attention"], formatter_class=fmt)
    _common(v)
    v.add_argument("--prompt", required=True, help="text whose attention to show (at most block_size tokens)")
    v.add_argument("--layer", type=int, help="only this layer (0 = first)")
    v.add_argument("--head", type=int, help="only this head (0 = first)")
    v.set_defaults(view_func=cmd_attention)

    v = views.add_parser("embeddings", help=VIEWS["embeddings"], description=VIEWS["embeddings"],
                         formatter_class=fmt)
    _common(v)
    what = v.add_mutually_exclusive_group(required=True)
    what.add_argument("--token", metavar="T", help="a token (for whitespace: space, \\n, or ␣ ⏎)")
    what.add_argument("--analogy", nargs=3, metavar=("A", "B", "C"), help="tokens nearest to A − B + C")
    what.add_argument("--map", action="store_true", help="all tokens on a 2-D PCA map")
    v.add_argument("--k", type=int, default=10, help="how many neighbours to list")
    v.set_defaults(view_func=cmd_embeddings)

    v = views.add_parser("positions", help=VIEWS["positions"], description=VIEWS["positions"], formatter_class=fmt)
    _common(v)
    v.set_defaults(view_func=cmd_positions)

    v = views.add_parser("next", help=VIEWS["next"], description=VIEWS["next"], formatter_class=fmt)
    _common(v)
    v.add_argument("--prompt", required=True, help="text to continue")
    v.add_argument("--temperature", type=float, default=1.0, help="temperature of the main table "
                                                                  "(0.5, 1 and 2 are always shown side by side)")
    v.add_argument("--top", type=int, default=20, help="how many candidates to list")
    v.set_defaults(view_func=cmd_next)

    v = views.add_parser("stream", help=VIEWS["stream"], description=VIEWS["stream"], formatter_class=fmt)
    _common(v)
    v.add_argument("--prompt", required=True, help="text whose residual stream to show (at most block_size tokens)")
    v.add_argument("--positions", type=int, default=12, metavar="N",
                   help="show the last N positions of the prompt (default 12; the terminal shows as many as fit)")
    v.set_defaults(view_func=cmd_stream)

    v = views.add_parser("cross-attention", help=VIEWS["cross-attention"], description=VIEWS["cross-attention"],
                         formatter_class=fmt)
    _common(v)
    v.add_argument("--source", required=True, metavar="TEXT", help="text to translate (at most block_size characters)")
    v.add_argument("--target", metavar="TEXT", help="a reference translation, read by the decoder (teacher "
                                                   "forcing); default: the model's own greedy translation")
    v.add_argument("--layer", type=int, help="only this decoder layer (0 = first)")
    v.add_argument("--head", type=int, help="only this head (0 = first)")
    v.set_defaults(view_func=cmd_cross_attention)


def cmd_inspect(args: argparse.Namespace) -> int:
    return args.view_func(args)


# ---------------------------------------------------------------- helpers


def _load(args: argparse.Namespace, architecture: str = "gpt"):
    """(model, tokenizer, checkpoint directory) for --checkpoint or the most recent run; a checkpoint
    of another architecture (a GPT, or an encoder-decoder) is refused in one line."""
    from mlxgpt.checkpoint import latest_run, load_checkpoint_tokenizer, load_model, read_config, resolve_checkpoint

    directory = resolve_checkpoint(args.checkpoint or latest_run())
    config = read_config(directory, architecture)
    return load_model(directory, config), load_checkpoint_tokenizer(directory, config), directory


def _describe(model, directory: Path) -> str:
    a = model.args
    return (f"{directory} — {a.n_layer} layers × {a.n_head} heads, d_model {a.n_embd}, vocab {a.vocab_size}, "
            f"context {a.block_size}")


def _check_save(path: str | None) -> None:
    """Fail on a bad --save before doing any work."""
    from mlxgpt.plots import FORMATS

    if path and Path(path).suffix.lower() not in FORMATS:
        raise MlxgptError(f"--save {path}: pictures are .png, .svg or .pdf (e.g. --save attention.png)")


def _output(renderable, picture_fn, save: str | None) -> int:
    """Print the terminal view; with --save, also draw the picture into that file."""
    from mlxgpt import plots
    from mlxgpt.inspect.term import console

    con = console()
    con.print(renderable)
    if save:
        try:
            path = plots.save(picture_fn(), save)
        except OSError as exc:
            raise MlxgptError(f"cannot write {save}: {exc.strerror or exc}") from None
        con.print(f"picture saved to {path}", style="dim", soft_wrap=True)  # a path must stay one piece
    return 0


def _visible_prompt(tokenizer, ids: list[int]) -> str:
    return "".join(tokenizer.token_label(i) for i in ids)


def _short(text: str, limit: int = 60) -> str:
    """A long prompt in a title: its start and its end."""
    return text if len(text) <= limit else text[: limit - 25] + "…" + text[-24:]


# ---------------------------------------------------------------- views


def cmd_params(args: argparse.Namespace) -> int:
    from mlxgpt.inspect import params

    _check_save(args.save)
    if args.gpt3:
        t = params.tally(params.GPT3)
        title = ("GPT-3 175B (published shape: vocab 50,257, d_model 12,288, 96 layers × 96 heads of 128, "
                 "MLP 4×, context 2,048)")
        return _output(params.render(t, title), lambda: params.picture(t, "GPT-3 175B: parameters by family"),
                       args.save)
    model, _, directory = _load(args)
    t = params.tally(params.Shape.from_args(model.args))
    title = f"Parameters of {_describe(model, directory)}"
    status = _output(params.render(t, title, model), lambda: params.picture(t, f"Parameters: {directory}"),
                     args.save)
    return status if params.stored_total(model) == t.total else 1


def cmd_attention(args: argparse.Namespace) -> int:
    from mlxgpt.inspect import attention
    from mlxgpt.inspect.term import console

    _check_save(args.save)
    model, tokenizer, directory = _load(args)
    ids, labels, cut = attention.prompt_tokens(tokenizer, args.prompt, model.args.block_size)
    maps = attention.attention_maps(model, ids)
    chosen = attention.select(maps, args.layer, args.head)  # a bad --layer/--head fails before any output
    if cut:
        console().print(f"the prompt is longer than the context ({model.args.block_size} tokens): "
                        "showing its last tokens", style="yellow")
    shown = _short("".join(labels))
    return _output(attention.render(maps, labels, chosen, f"Attention for '{shown}' — {directory}"),
                   lambda: attention.picture(maps, labels, chosen, f"Attention for '{shown}'"), args.save)


def cmd_embeddings(args: argparse.Namespace) -> int:
    from mlxgpt.inspect import embeddings as emb

    _check_save(args.save)
    if args.k < 1:
        raise MlxgptError(f"--k must be at least 1, got {args.k}")
    model, tokenizer, directory = _load(args)
    E = emb.embedding_matrix(model)
    k = min(args.k, tokenizer.vocab_size)
    if args.map:
        keep, dropped = emb.map_tokens(tokenizer)
        coords, share = emb.pca_2d(E[keep])
        labels = [tokenizer.token_label(i) for i in keep]
        note = f"{dropped} byte-fallback tokens <0x00>…<0xFF> left out" if dropped else ""
        title = f"Token embeddings on a PCA map — {directory}"
        return _output(emb.render_map(coords, share, labels, title, note),
                       lambda: emb.map_picture(coords, share, labels, "Token embeddings, PCA map", note), args.save)
    if args.analogy:
        a, b, c = (emb.resolve_token(tokenizer, s) for s in args.analogy)
        rows = emb.analogy(E, a, b, c, k)
        la, lb, lc = (tokenizer.token_label(i) for i in (a, b, c))
        title = f"Nearest to  {la} − {lb} + {lc}"
        caption = f"cosine similarity to the vector {la} − {lb} + {lc}; {la}, {lb}, {lc} themselves left out; {directory}"
        return _output(emb.render_neighbours(rows, tokenizer, title, caption=caption),
                       lambda: emb.neighbours_picture(rows, tokenizer, f"{la} − {lb} + {lc} ≈ ?",
                                                      "cosine similarity to the vector a − b + c"), args.save)
    token = emb.resolve_token(tokenizer, args.token)
    rows = emb.nearest(E, token, k)
    label = tokenizer.token_label(token)
    title = f"Nearest tokens to '{label}' (id {token})"
    caption = f"cosine similarity of the learned token embeddings; {directory}"
    return _output(emb.render_neighbours(rows, tokenizer, title, token, caption),
                   lambda: emb.neighbours_picture(rows, tokenizer, f"Nearest tokens to '{label}'",
                                                  "cosine similarity of the learned token embeddings (wte)",
                                                  highlight=0), args.save)


def cmd_positions(args: argparse.Namespace) -> int:
    from mlxgpt.inspect import positions

    _check_save(args.save)
    model, _, directory = _load(args)
    title = f"Positional encodings — {_describe(model, directory)}"
    return _output(positions.render(model, title),
                   lambda: positions.picture(model, f"Positional encodings ({model.args.pos_embedding})"), args.save)


def cmd_next(args: argparse.Namespace) -> int:
    from mlxgpt.inspect import next_token
    from mlxgpt.sampling import check_sampling_args

    _check_save(args.save)
    check_sampling_args(args.temperature, None, None, None)
    if args.top < 1:
        raise MlxgptError(f"--top must be at least 1, got {args.top}")
    model, tokenizer, directory = _load(args)
    ids = tokenizer.encode(args.prompt)
    if not ids:
        raise MlxgptError("the prompt is empty: pass --prompt with at least one character")
    logits = next_token.next_logits(model, ids)
    shown = _short(_visible_prompt(tokenizer, ids[-model.args.block_size:]), 80)
    title = f"Next token — {directory}"
    return _output(next_token.render(logits, tokenizer, shown, args.temperature, args.top, title),
                   lambda: next_token.picture(logits, tokenizer, shown, args.temperature, args.top,
                                              "Next-token distribution"), args.save)


def cmd_stream(args: argparse.Namespace) -> int:
    from mlxgpt.inspect import attention, stream
    from mlxgpt.inspect.term import console

    _check_save(args.save)
    if args.positions < 1:
        raise MlxgptError(f"--positions must be at least 1, got {args.positions}")
    model, tokenizer, directory = _load(args)
    ids, labels, cut = attention.prompt_tokens(tokenizer, args.prompt, model.args.block_size)
    report = stream.analyse(model, ids, args.positions)
    if cut:
        console().print(f"the prompt is longer than the context ({model.args.block_size} tokens): "
                        "showing its last tokens", style="yellow")
    shown = _short("".join(labels))
    title = f"Residual stream and logit lens — {_describe(model, directory)}"
    return _output(stream.render(report, tokenizer, title),
                   lambda: stream.picture(report, tokenizer, f"Logit lens for '{shown}'"), args.save)


def cmd_cross_attention(args: argparse.Namespace) -> int:
    from mlxgpt.inspect import cross_attention as xa

    _check_save(args.save)
    model, vocab, directory = _load(args, architecture="encoder-decoder")
    chosen = xa.select(model, args.layer, args.head)  # a bad --layer/--head fails before any work
    pair = xa.make_pair(model, vocab, args.source, args.target)
    maps = xa.cross_attention_maps(model, pair)
    a = model.args
    title = (f"Cross-attention — {directory} — {a.n_encoder_layers} encoder + {a.n_decoder_layers} decoder layers "
             f"× {a.n_head} heads, context {a.block_size}")
    shown = f"'{_short(pair.source, 40)}' → '{_short(pair.target, 40)}'"
    return _output(xa.render(maps, pair, chosen, title),
                   lambda: xa.picture(maps, pair, chosen, f"Cross-attention for {shown}"), args.save)
