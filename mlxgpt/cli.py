"""Command line: `mlxgpt train|generate ...`, `python -m mlxgpt ...`, `python train.py ...`.

Every command's flags are parsed here (the benchmark's and the inspect views'
live with them; the flags several commands share are defined once, in flags.py).
User mistakes become one line on stderr and a non-zero exit status, never a
traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Callable, Sequence

from mlxgpt import bench
from mlxgpt.classify import add_classify_arguments, cmd_classify
from mlxgpt.config import PRESETS, SWITCH_CHOICES, TrainArgs
from mlxgpt.errors import MlxgptError
from mlxgpt.flags import (add_batch_size_argument, add_checkpoint_argument, add_cpu_streams_argument,
                          add_data_argument, add_dtype_argument, add_model_shape_arguments, add_plain_argument, add_preset_argument,
                          add_sampling_arguments, add_seed_argument)
from mlxgpt.inspect.cli import add_inspect_arguments, cmd_inspect
from mlxgpt.samples import add_sample_arguments, cmd_sample, print_examples

EXIT_USAGE = 2


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is a single line that points at --help."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USAGE, f"error: {message} (see {self.prog} --help)\n")


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Adds "(default: X)" to a flag's help, except where there is nothing to say (None, a
    switch that is off) or the help already says it."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if action.default in (None, False) or "default" in text:
            return text
        return super()._get_help_string(action)


def _formatter(prog: str) -> argparse.HelpFormatter:
    return _HelpFormatter(prog, max_help_position=32, width=100)


# ---------------------------------------------------------------- train


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    presets = "; ".join(f"{name}: {preset.description}" for name, preset in PRESETS.items())
    p.description = (f"Train a GPT on a text file. Presets: {presets}. Without --preset: shakespeare-char on "
                     "a GPU, baby on a CPU. Model and training flags override the preset (default None = preset's).")
    g = p.add_argument_group("data and run")
    add_data_argument(g, "UTF-8 text file to train on, - for standard input, or 'shakespeare' for tiny Shakespeare "
                         "(it ships with mlxgpt)")
    add_preset_argument(g, "starting configuration (see above)")
    g.add_argument("--out", help="run directory (default out/<data-name>, a new one if that holds a run)")
    g.add_argument("--resume", action="store_true", help="continue the run in --out from its latest/ checkpoint")
    g.add_argument("--overwrite", action="store_true", help="replace a run already in --out")
    g.add_argument("--init-from", metavar="RUN", help="fine-tune: start from this run's (or checkpoint's) weights and "
                   "tokenizer, with a fresh optimizer and fine-tuning defaults (lr 1e-4, warmup 20, 500 iters, "
                   "eval every 50, --early-stop-evals 4); flags override them")
    g.add_argument("--extend-vocab", action="store_true", help="with --init-from and a char model: add the new "
                   "text's unseen characters as new tokens (new embedding rows), instead of refusing the text")
    g.add_argument("--format", choices=["text", "lines"],
                   help="text: one continuous text (the default); lines: every non-empty line is one example "
                        "(names, peptides, SMILES...), split 90/10 by example and ended by an end token")
    g.add_argument("--tokenizer", choices=["char", "sentencepiece"],
                   help="how text becomes tokens: one per character (the default), or subword pieces learned "
                        "from the training split with SentencePiece")
    g.add_argument("--vocab-size", type=int,
                   help="SentencePiece vocabulary size (default 1024; at least 256 byte pieces + <unk> + "
                        "newline + the text's characters)")
    g.add_argument("--sp-model-type", choices=["bpe", "unigram"], help="SentencePiece algorithm (default bpe)")
    g.add_argument("--no-ui", action="store_true", help="plain log lines even in a terminal")
    add_plain_argument(g)
    add_dtype_argument(g)
    add_cpu_streams_argument(g)

    g = p.add_argument_group("model (override the preset)")
    add_model_shape_arguments(g)
    g.add_argument("--pos-embedding", "--pos", choices=SWITCH_CHOICES["pos_embedding"],
                   help="position encoding: learned (GPT-2, the default), sinusoidal (the original paper's), or "
                        "rope (rotary: queries and keys rotated by position, as in Llama)")
    g.add_argument("--tie-embeddings", action=argparse.BooleanOptionalAction, default=None,
                   help="share the token embedding with the unembedding (default yes)")

    g = p.add_argument_group("architecture switches (off by default: nanoGPT's GPT-2; the cpu-speedrun preset "
                             "turns some on; docs/how-it-works.md, \"Since GPT-2\", measures each)")
    g.add_argument("--untie-head", dest="tie_embeddings", action="store_const", const=False,
                   help="a separate unembedding matrix (= --no-tie-embeddings)")
    g.add_argument("--norm", choices=SWITCH_CHOICES["norm"], help="layernorm (the default) or rmsnorm")
    g.add_argument("--qk-norm", action=argparse.BooleanOptionalAction, default=None, help="RMS-normalise queries and keys per head")
    g.add_argument("--mlp", "--activation", choices=SWITCH_CHOICES["mlp"],
                   help="the MLP's nonlinearity: gelu (the default), relu, relu2 (ReLU squared) or swiglu (gated)")
    g.add_argument("--logit-softcap", type=float, metavar="CAP", help="squash logits smoothly into (-CAP, CAP) "
                   "with CAP * tanh(logit / CAP) (e.g. 15; default 0: off)")
    g.add_argument("--zero-init-proj", action=argparse.BooleanOptionalAction, default=None,
                   help="start every block's output projections at zero (each block starts as the identity)")
    g.add_argument("--no-causal-mask", dest="causal", action="store_false", default=None,
                   help="classic switch: let every position see the later ones too (the loss collapses, "
                        "and the model cannot generate: see why the mask matters)")
    g.add_argument("--post-ln", action=argparse.BooleanOptionalAction, default=None,
                   help="classic switch: the original paper's Add & Norm after each sublayer, instead of before")
    g.add_argument("--no-attn-scale", dest="attn_scale", action="store_false", default=None,
                   help="classic switch: attention scores without the 1/sqrt(head size)")

    g = p.add_argument_group("training (override the preset)")
    g.add_argument("--max-iters", type=int, help="optimizer steps")
    add_batch_size_argument(g)
    g.add_argument("--grad-accum", type=int, help="micro-batches per optimizer step")
    g.add_argument("--lr", type=float, help="peak learning rate")
    g.add_argument("--min-lr", type=float, help="learning rate at the end of the cosine decay")
    g.add_argument("--warmup-iters", type=int, help="linear warmup steps")
    g.add_argument("--lr-decay-iters", type=int, help="step where the cosine reaches --min-lr (default --max-iters)")
    g.add_argument("--weight-decay", type=float, help="AdamW weight decay on matrices")
    g.add_argument("--beta2", type=float, help="AdamW beta2")
    g.add_argument("--optimizer", choices=("adamw", "muon"), help="adamw (nanoGPT's), or muon: the blocks' weight "
                   "matrices on Muon, embeddings and gains on AdamW (modded-nanogpt's split)")
    g.add_argument("--muon-lr", type=float, help="Muon's peak learning rate (default 0.02); it follows lr's schedule")
    g.add_argument("--grad-clip", type=float, help="clip the global gradient norm (0: off)")
    g.add_argument("--eval-interval", type=int, help="steps between evaluations and checkpoints")
    g.add_argument("--eval-iters", type=int, help="batches per split in each evaluation")
    g.add_argument("--log-interval", type=int, help="steps between log lines")
    add_seed_argument(g, f"seed for weights, batches and dropout (default {TrainArgs.seed})")
    g.add_argument("--time-budget", type=float, help="stop after this many seconds of wall-clock training (evaluations "
                   "included; then eval and save; --resume continues the budget). The warmup and cosine decay then "
                   "follow the clock, ending as the budget does (or at --max-iters, if that comes first): the run "
                   "is fully decayed on any machine, but not bit-reproducible")
    g.add_argument("--sample-prompt", help="prompt of the sample shown at each eval (default newline)")
    g.add_argument("--sample-tokens", type=int, help="length of that sample (0: no samples)")
    g.add_argument("--early-stop-evals", type=int, help="stop once the val loss has not improved for this many "
                   "evaluations (best/ keeps the best model)")
    g.add_argument("--freeze-layers", type=int, help="keep the embeddings and the first N blocks as they are "
                   "(fine-tuning with --init-from; default 0)")


# flags that are not ModelArgs/TrainArgs fields (all others are, by the same name)
_NOT_OVERRIDES = {"data", "preset", "out", "resume", "overwrite", "tokenizer", "no_ui", "command", "func", "plain",
                  "format", "init_from", "extend_vocab", "cpu_streams", "vocab_size", "sp_model_type"}


def _tokenizer_options(args: argparse.Namespace) -> dict:
    """--vocab-size/--sp-model-type, as given (SentencePieceTokenizer.train has the defaults)."""
    options = {k: v for k, v in (("vocab_size", args.vocab_size), ("model_type", args.sp_model_type)) if v is not None}
    if options and args.tokenizer != "sentencepiece" and not args.resume:
        raise MlxgptError("--vocab-size and --sp-model-type apply to --tokenizer sentencepiece only "
                          "(a char tokenizer's vocabulary is the text's characters)")
    return options


def make_renderer(no_ui: bool):
    """The Rich dashboard when stdout is a terminal; plain lines (no escape codes) for
    pipes, files, CI, TERM=dumb and --no-ui."""
    if not no_ui and sys.stdout.isatty() and os.environ.get("TERM") != "dumb":
        from mlxgpt.ui.rich_live import RichDashboard

        return RichDashboard()
    from mlxgpt.ui.plain import PlainRenderer

    return PlainRenderer()


def warn_if_slow_blas() -> None:
    from mlxgpt.fast.blas import blas_warning, setup_blas

    warning = blas_warning(setup_blas())
    if warning:
        print(f"warning: {warning}", file=sys.stderr)


def cmd_train(args: argparse.Namespace) -> int:
    from mlxgpt.runner import TrainOptions, run_training

    warn_if_slow_blas()

    overrides = {k: v for k, v in vars(args).items() if k not in _NOT_OVERRIDES and v is not None}
    options = TrainOptions(data=args.data, out=args.out, preset=args.preset, tokenizer=args.tokenizer,
                           tokenizer_options=_tokenizer_options(args), resume=args.resume, overwrite=args.overwrite,
                           overrides=overrides, streams=args.cpu_streams, plain=args.plain,
                           data_format=args.format, init_from=args.init_from, extend_vocab=args.extend_vocab)
    return rendered_training(args.no_ui, lambda renderer: run_training(options, renderer))


def rendered_training(no_ui: bool, train: Callable) -> int:
    """Run `train(renderer)` with the dashboard or plain lines; its exit status (130: interrupted)."""
    renderer = make_renderer(no_ui)
    try:
        finished = train(renderer)
    finally:
        renderer.close()
    if finished.reason == "diverged":
        raise MlxgptError(finished.message)
    return 130 if finished.reason == "interrupted" else 0


# ---------------------------------------------------------------- generate


def add_generate_arguments(p: argparse.ArgumentParser) -> None:
    p.description = ("Stream text from a trained model. A --format lines model writes whole examples instead, one "
                     "per line, each from the start state (the prompt is each example's beginning).")
    add_checkpoint_argument(p)
    prompt = p.add_mutually_exclusive_group()  # both at once: one would be ignored without a word
    prompt.add_argument("--prompt", default="\n", help="text to continue")
    prompt.add_argument("--prompt-file", help="read the prompt from this UTF-8 file instead (- for standard input)")
    p.add_argument("--max-new-tokens", type=int, default=500, help="tokens to generate (a lines model: at most, "
                                                                  "per example)")
    add_sampling_arguments(p, temperature=0.8)
    add_seed_argument(p, "random seed for reproducible samples (sample i uses seed + i; on a lines model, a key "
                         "made from seed and i)")
    p.add_argument("--num-samples", type=int, default=1, help="independent samples to draw")
    p.add_argument("--stop", type=_unescape, help="stop a sample once this text appears (\\n and \\t are understood)")
    p.add_argument("--no-cache", action="store_true", help="recompute the whole context per token (slow; for comparison)")
    add_plain_argument(p)
    add_dtype_argument(p, default="auto")
    p.add_argument("--show-probs", nargs="?", type=int, const=10, metavar="K",
                   help="for each token, show the K most likely candidates (default 10) with bars, the chosen one "
                        "marked, after temperature/top-k/top-p/min-p; then the text coloured by probability")


def _unescape(text: str) -> str:
    """'\\n' typed in a shell is a backslash and an n: read it as the newline the user meant."""
    return text.replace("\\n", "\n").replace("\\t", "\t")


def _read_prompt(args: argparse.Namespace) -> str:
    """--prompt, or the text of --prompt-file (a regular file, or - for standard input)."""
    if not args.prompt_file:
        return args.prompt
    from mlxgpt.data import PROMPT_TEXT, read_text

    return read_text(args.prompt_file, PROMPT_TEXT)


def _check_generate_flags(args: argparse.Namespace) -> None:
    """Every flag that needs no model, checked before loading one: a bad value fails before any output."""
    from mlxgpt.config import check_seed
    from mlxgpt.sampling import check_sampling_args

    check_sampling_args(args.temperature, args.top_k, args.top_p, args.min_p)
    check_seed(args.seed)
    if args.max_new_tokens < 1 or args.num_samples < 1:
        raise MlxgptError("--max-new-tokens and --num-samples must be at least 1")
    if args.seed is not None and args.seed + args.num_samples - 1 >= 2**64:
        raise MlxgptError(f"--seed {args.seed} is too large for --num-samples {args.num_samples}: sample i uses "
                          f"seed + i, and seeds end at 2**64 - 1; pass --seed {2**64 - args.num_samples} or less")
    if args.show_probs is not None and args.show_probs < 1:
        raise MlxgptError(f"--show-probs needs at least 1 candidate, got {args.show_probs}")
    if args.stop == "":
        raise MlxgptError("--stop is empty: pass the text to stop at (e.g. --stop '\\n\\n'), or leave it out")


def _check_prompt_and_stop(tokenizer, prompt: str, stop: str | None) -> None:
    """What needs the model's vocabulary: unknown characters are named, an impossible --stop refused."""
    from mlxgpt.tokenizers import UnknownCharactersError

    if not tokenizer.encode(prompt):  # unknown characters raise their own one-line error here
        raise MlxgptError("the prompt is empty: pass --prompt with at least one character")
    try:
        tokenizer.encode(stop or "")
    except UnknownCharactersError as exc:
        raise MlxgptError(f"--stop {stop!r} can never appear in the output: {exc}") from None



def cmd_generate(args: argparse.Namespace) -> int:
    from mlxgpt.checkpoint import latest_run, load_checkpoint_tokenizer, load_model, read_config, resolve_checkpoint
    from mlxgpt.generate import generate

    _check_generate_flags(args)
    prompt = _read_prompt(args)
    directory = resolve_checkpoint(args.checkpoint or latest_run())
    config = read_config(directory)
    if config.get("data_format") == "lines":  # whole examples, each from the start state: not one stream
        return print_examples(directory, config, prompt, args)
    model, tokenizer = load_model(directory, config), load_checkpoint_tokenizer(directory, config)
    _check_prompt_and_stop(tokenizer, prompt, args.stop)
    from mlxgpt.fast.device import compute_dtype

    model.set_dtype(compute_dtype(args.dtype))  # --dtype: the weights in that precision
    out = sys.stdout
    for i in range(args.num_samples):
        if i:
            out.write("\n---------------\n")
        seed = None if args.seed is None else args.seed + i
        pieces = generate(model, tokenizer, prompt, args.max_new_tokens, temperature=args.temperature,
                          top_k=args.top_k, top_p=args.top_p, min_p=args.min_p, seed=seed, stop=args.stop,
                          use_cache=not args.no_cache, fast=not args.plain)
        if args.show_probs is not None:  # a table per token (plain text when not a terminal)
            from mlxgpt.ui.probs import sampling_note, show_probs

            show_probs(pieces, tokenizer, prompt, args.show_probs,
                       sampling_note(args.temperature, args.top_k, args.top_p, args.min_p), out)
            continue
        out.write(prompt)
        for piece in pieces:
            out.write(piece.text)
            out.flush()
        out.write("\n")
    return 0


# ---------------------------------------------------------------- eval


def add_eval_arguments(p: argparse.ArgumentParser) -> None:
    p.description = ("The loss of a trained model on its whole validation (or training) split: every token "
                     "predicted once, instead of training's estimate from --eval-iters random batches.")
    add_checkpoint_argument(p)
    add_data_argument(p, "text to split 90/10 like training did, - for standard input, or a dataset name such as "
                         "shakespeare (default: the text the model was trained on)")
    p.add_argument("--split", choices=["val", "train"], default="val", help="which part of that text")
    p.add_argument("--stride", type=int, help="tokens between window starts (default block_size: windows end to "
                                              "end, as in training's estimate; smaller gives each token more context)")
    add_batch_size_argument(p, "windows per forward pass", default=32)
    p.add_argument("--draws", type=int, default=0,
                   help="also draw training's estimate (the run's --eval-iters random batches) this many times "
                        "and show its spread: how far the val loss printed while training moves by luck")


def cmd_eval(args: argparse.Namespace) -> int:
    from mlxgpt.evaluate import evaluate_checkpoint

    evaluate_checkpoint(args.checkpoint, args.data, args.split, args.stride, args.batch_size, args.draws)
    return 0


# ---------------------------------------------------------------- launch


def add_launch_arguments(p: argparse.ArgumentParser) -> None:
    p.description = ("Data-parallel training: run train.py on several processes or machines with mlx.launch, "
                     "averaging gradients with mx.distributed; fails if any rank fails. "
                     "Example: mlxgpt launch -n 2 -- --data shakespeare --preset baby")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("-n", "--ranks", type=int, help="processes on this machine")
    where.add_argument("--hostfile", help="mlx.launch JSON host list (IP addresses) for several machines")
    p.add_argument("--backend", help="mx.distributed backend: ring, mpi, nccl, ... (default: mlx.launch's own "
                                     "choice, e.g. ring on CPUs and Macs, NCCL on CUDA GPUs, or the hostfile's)")
    p.add_argument("--port", type=int, help="first TCP port of the ring backend (one per rank); default mlx.launch's")
    p.add_argument("train_args", nargs=argparse.REMAINDER, help="-- then the arguments of train.py")


def cmd_launch(args: argparse.Namespace) -> int:
    from mlxgpt.distributed import launch

    train_args = args.train_args[1:] if args.train_args[:1] == ["--"] else args.train_args
    return launch(args.ranks, args.hostfile, train_args, args.backend, args.port)


# ---------------------------------------------------------------- translate (the encoder-decoder)


def add_translate_arguments(p: argparse.ArgumentParser) -> None:
    p.description = ("The original Transformer (Vaswani et al. 2017): an encoder reads the whole source, a masked "
                     "decoder writes the target and reads the source through cross-attention. Train it on pairs "
                     "(numbers written out in two languages, or your own TSV), translate, score held-out pairs.")
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    fmt = p.formatter_class
    t = actions.add_parser("train", help="train on --pairs; then score the held-out pairs", formatter_class=fmt,
                           description="Train an encoder-decoder through mlxgpt's training loop (dashboard, "
                                       "checkpoints, --resume, --time-budget); at the end, exact match and "
                                       "character error rate on the held-out pairs.")
    t.add_argument("--pairs", help="numbers:SRC-TGT (numbers 1-9,999 written out by num2words, e.g. numbers:en-fr, "
                                   "the default; needs pip install -e '.[translate]') or a UTF-8 file of "
                                   "source<TAB>target lines; 10%% held out")
    t.add_argument("--out", help="run directory (required)")
    t.add_argument("--resume", action="store_true", help="continue the run in --out")
    t.add_argument("--overwrite", action="store_true", help="replace a run already in --out")
    t.add_argument("--no-ui", action="store_true", help="plain log lines instead of the dashboard")
    g = t.add_argument_group("model (default: 2 + 2 layers, 4 heads, 128 channels, sinusoidal positions)")
    g.add_argument("--encoder-layers", dest="n_encoder_layers", type=int, help="encoder blocks")
    g.add_argument("--decoder-layers", dest="n_decoder_layers", type=int, help="decoder blocks")
    g.add_argument("--n-head", type=int, help="attention heads per block")
    g.add_argument("--n-embd", type=int, help="embedding width (divisible by --n-head)")
    g.add_argument("--dropout", type=float, help="dropout probability during training")
    g.add_argument("--pos", dest="pos_embedding", choices=("sinusoidal", "learned"), help="position encodings")
    g.add_argument("--block-size", type=int, help="longest source and target (default: the longest pair's)")
    g = t.add_argument_group("training (default: batch 32, lr 2e-3, 3000 steps)")
    add_batch_size_argument(g, "pairs per step")
    g.add_argument("--max-iters", type=int, help="optimizer steps")
    g.add_argument("--time-budget", type=float, metavar="SECONDS", help="stop after this much training time")
    g.add_argument("--lr", type=float, help="peak learning rate")
    g.add_argument("--min-lr", type=float, help="learning rate at the end of the cosine")
    g.add_argument("--warmup-iters", type=int, help="linear warmup steps")
    g.add_argument("--eval-interval", type=int, help="steps between evaluations (and samples, checkpoints)")
    g.add_argument("--eval-iters", type=int, help="batches per evaluation")
    g.add_argument("--log-interval", type=int, help="steps between log lines")
    add_seed_argument(g, "seed of the initial weights and the batches")
    t.set_defaults(action_func=cmd_translate_train)

    r = actions.add_parser("run", help="translate texts", formatter_class=fmt,
                           description="Translate each TEXT with a trained encoder-decoder.")
    add_checkpoint_argument(r)
    r.add_argument("texts", nargs="+", metavar="TEXT", help="sources to translate")
    r.add_argument("--beam", type=int, default=1, help="beam width (1: greedy)")
    r.set_defaults(action_func=cmd_translate_run)

    e = actions.add_parser("eval", help="exact match and character error rate on the held-out pairs",
                           formatter_class=fmt, description="Score a trained encoder-decoder on the pairs its run "
                                                            "held out.")
    add_checkpoint_argument(e)
    e.add_argument("--beam", type=int, default=1, help="beam width (1: greedy)")
    e.add_argument("--limit", type=int, help="score only the first N held-out pairs")
    e.add_argument("--json", metavar="FILE", help="also write the numbers to this JSON file")
    e.set_defaults(action_func=cmd_translate_eval)


_TRANSLATE_NOT_OVERRIDES = {"pairs", "out", "resume", "overwrite", "no_ui", "command", "func", "action",
                            "action_func"}


def cmd_translate(args: argparse.Namespace) -> int:
    return args.action_func(args)


def cmd_translate_train(args: argparse.Namespace) -> int:
    from mlxgpt.seq2seq.runner import TranslateOptions, train_translation

    warn_if_slow_blas()
    overrides = {k: v for k, v in vars(args).items() if k not in _TRANSLATE_NOT_OVERRIDES and v is not None}
    options = TranslateOptions(pairs=args.pairs, out=args.out, resume=args.resume, overwrite=args.overwrite,
                               overrides=overrides)
    return rendered_training(args.no_ui, lambda renderer: train_translation(options, renderer))


def _check_beam(beam: int) -> None:
    if beam < 1:
        raise MlxgptError(f"--beam must be at least 1, got {beam}")


def cmd_translate_run(args: argparse.Namespace) -> int:
    from mlxgpt.seq2seq.runner import load_translator, translate

    _check_beam(args.beam)
    model, vocab = load_translator(args.checkpoint)
    for source, target in zip(args.texts, translate(model, vocab, args.texts, args.beam)):
        print(f"{source} → {target}")
    return 0


def cmd_translate_eval(args: argparse.Namespace) -> int:
    import json

    from mlxgpt.checkpoint import latest_run, read_config, resolve_checkpoint
    from mlxgpt.files import write_atomic
    from mlxgpt.seq2seq.runner import held_out_scores, load_pairs, load_translator

    _check_beam(args.beam)
    if args.limit is not None and args.limit < 1:
        raise MlxgptError(f"--limit must be at least 1, got {args.limit}")
    directory = resolve_checkpoint(args.checkpoint or latest_run())
    model, vocab = load_translator(directory)
    pairs = load_pairs(read_config(directory, "encoder-decoder")["data"])
    numbers, report = held_out_scores(model, vocab, pairs.val, args.beam, args.limit)
    print(f"checkpoint  {directory}\n{report}")
    if args.json:
        write_atomic(args.json, json.dumps({"checkpoint": str(directory), "pairs": pairs.spec, **numbers}, indent=2))
    return 0


# ---------------------------------------------------------------- export, import-nanogpt


def add_export_arguments(p: argparse.ArgumentParser) -> None:
    p.description = ("Write a trained model as a standard model directory that other tools load as their own: "
                     "--to mlx-lm for mlx_lm.load / generate / server / LoRA / quantisation, --to hf for Hugging "
                     "Face transformers (GPT2LMHeadModel, PyTorch). Needs `pip install -e '.[interop]'`.")
    p.add_argument("--to", required=True, choices=("mlx-lm", "hf"), help="the format to write")
    p.add_argument("run", metavar="RUN", help="run directory (its best checkpoint) or checkpoint directory")
    p.add_argument("out", metavar="OUT_DIR", help="new or empty directory to write the model into")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier export in OUT_DIR")


def cmd_export(args: argparse.Namespace) -> int:
    from mlxgpt.interop.export import export_run

    export_run(args.run, args.out, args.to, overwrite=args.overwrite)
    return 0


def add_import_nanogpt_arguments(p: argparse.ArgumentParser) -> None:
    p.description = ("Turn a nanoGPT checkpoint (ckpt.pt, and the meta.pkl of its character-level dataset) into an "
                     "mlxgpt run directory that generate, eval and inspect use. The files are read without running "
                     "any code in them (torch.load(weights_only=True), and an unpickler that admits only dicts, "
                     "strings and numbers). Needs PyTorch: `pip install -e '.[interop]'`.")
    p.add_argument("paths", nargs="+", metavar="PATH", help="CKPT.pt [META.pkl] OUT_RUN (without META.pkl: the "
                                                            "meta.pkl beside CKPT.pt)")
    add_data_argument(p, "the text the model was trained on (e.g. shakespeare), recorded so that `mlxgpt eval` "
                         "can score it without --data")
    p.add_argument("--overwrite", action="store_true", help="replace a run already in OUT_RUN")


def cmd_import_nanogpt(args: argparse.Namespace) -> int:
    from mlxgpt.interop.nanogpt import import_nanogpt

    if len(args.paths) not in (2, 3):
        raise MlxgptError(f"import-nanogpt takes CKPT.pt [META.pkl] OUT_RUN, got {len(args.paths)} path(s): "
                          "e.g. mlxgpt import-nanogpt out-shakespeare-char/ckpt.pt data/shakespeare_char/meta.pkl "
                          "out/nano")
    checkpoint, *meta, out = args.paths
    import_nanogpt(checkpoint, meta[0] if meta else None, out, data=args.data, overwrite=args.overwrite)
    return 0


# ---------------------------------------------------------------- main

COMMANDS: dict[str, tuple[Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int], str]] = {
    "train": (add_train_arguments, cmd_train, "train a model on a text file"),
    "generate": (add_generate_arguments, cmd_generate, "stream text from a trained model"),
    "sample": (add_sample_arguments, cmd_sample, "whole examples from a --format lines model, with a report"),
    "eval": (add_eval_arguments, cmd_eval, "loss on the whole validation split (every token, not an estimate)"),
    "inspect": (add_inspect_arguments, cmd_inspect,
                "look inside a trained model: params, attention, embeddings, positions, next"),
    "launch": (add_launch_arguments, cmd_launch, "data-parallel training over processes/machines"),
    "bench": (bench.add_bench_arguments, bench.cmd_bench, "MLX vs PyTorch: speed, MFU, memory, cold start, parity"),
    "classify": (add_classify_arguments, cmd_classify, "GPT-1 classification: fine-tune on labelled texts, predict"),
    "translate": (add_translate_arguments, cmd_translate,
                  "the original Transformer, an encoder-decoder: train on pairs, translate, score"),
    "export": (add_export_arguments, cmd_export, "write a model for mlx-lm or Hugging Face transformers"),
    "import-nanogpt": (add_import_nanogpt_arguments, cmd_import_nanogpt, "a nanoGPT ckpt.pt as an mlxgpt run"),
}


def build_parser(prog: str = "mlxgpt") -> argparse.ArgumentParser:
    parser = OneLineParser(prog=prog, description="A from-scratch GPT in MLX.", formatter_class=_formatter)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)
    for name, (add_arguments, func, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, formatter_class=_formatter)
        add_arguments(p)
        p.set_defaults(func=func)
    return parser


def single_command_parser(command: str, prog: str) -> argparse.ArgumentParser:
    """The parser of one subcommand on its own, for train.py and generate.py."""
    add_arguments, func, _ = COMMANDS[command]
    p = OneLineParser(prog=prog, formatter_class=_formatter)
    add_arguments(p)
    p.set_defaults(func=func)
    return p


def run(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> int:
    args = parser.parse_args(argv)
    from mlxgpt.fast.jit import setup_jit_flags

    setup_jit_flags()  # mlxgpt's commands (not `import mlxgpt`) tune MLX's CPU kernel compiler
    code, message = 1, "crashed"
    try:
        code, message = args.func(args), ""
        return code
    except MlxgptError as exc:
        print(f"error: {exc}", file=sys.stderr)
        code, message = 1, str(exc)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        code, message = 130, "interrupted"
        return 130
    except BrokenPipeError:  # e.g. `python generate.py | head`
        sys.stderr.close()
        code = 0
        return 0
    finally:
        from mlxgpt.distributed import record_exit_status

        record_exit_status(code, message)  # a rank of `mlxgpt launch` tells the launcher how it ended


def main(argv: Sequence[str] | None = None) -> int:
    return run(build_parser(), argv)


def train_main(argv: Sequence[str] | None = None) -> int:
    return run(single_command_parser("train", "train.py"), argv)


def generate_main(argv: Sequence[str] | None = None) -> int:
    return run(single_command_parser("generate", "generate.py"), argv)
