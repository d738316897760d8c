"""Char vs SentencePiece at the same model size and the same wall-clock budget.

    python -m experiments.tokenizers --data shakespeare --budget 120

For each tokenizer (char, then SentencePiece at each --vocab-sizes) it runs
`python -m mlxgpt train` (= train.py) with --time-budget, printing the exact
command, then measures the best checkpoint's bits per character on the *whole*
validation split and prints a Markdown table (also saved as results.md/.json
in --out). Loss per token is not comparable across tokenizers; bits per
character is: total nats over the split / characters / ln 2.

Fairness: the same preset (model size, batch, block in tokens, lr), the same
schedule (warmup, cosine to min_lr over --decay-iters steps, then flat), the same
budget. Before each timed run an untimed 3-step run fills MLX's kernel cache, so
the first-step JIT compile (tens of seconds on CPU) does not eat the budget.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from experiments.runs import read_events, run_command, write_results
from mlxgpt.flags import add_data_argument, add_preset_argument


def train_command(args: argparse.Namespace, out: Path, tokenizer_flags: list[str], warmup: bool) -> list[str]:
    budget = ["--max-iters", "3", "--eval-iters", "1"] if warmup else \
        ["--max-iters", "1000000", "--time-budget", str(args.budget)]
    return [sys.executable, "-m", "mlxgpt", "train", "--data", args.data, "--preset", args.preset,
            "--out", str(out), "--overwrite", "--no-ui", "--sample-tokens", "0",
            "--lr-decay-iters", str(args.decay_iters), *budget, *tokenizer_flags, *args.train_flags]


def whole_split(checkpoint: Path, text: str):
    """The best checkpoint's loss on a whole text, every token predicted once."""
    from mlxgpt.checkpoint import load
    from mlxgpt.evaluate import split_loss

    model, tokenizer = load(checkpoint)
    return split_loss(model, np.asarray(tokenizer.encode(text), dtype=np.int32), len(text))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m experiments.tokenizers", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_argument(p, "UTF-8 text file, or shakespeare", required=True)
    p.add_argument("--budget", type=float, default=120, help="seconds of training per tokenizer")
    p.add_argument("--vocab-sizes", type=int, nargs="+", default=[384, 1024, 4096],
                   help="SentencePiece vocabulary sizes (256 is below the byte-fallback minimum)")
    p.add_argument("--sp-model-type", default="bpe", choices=["bpe", "unigram"])
    add_preset_argument(p, "model size, batch and learning rate of every run", default="baby")
    p.add_argument("--decay-iters", type=int, default=2000, help="cosine decay length in steps (then flat at min_lr)")
    p.add_argument("--out", type=Path, default=Path("out/tokenizers"), help="where the runs go")
    p.add_argument("--no-warmup", action="store_true", help="skip the untimed kernel-cache warm-up runs")
    p.add_argument("train_flags", nargs="*", help="more train.py flags, after --")
    args = p.parse_args(argv)

    from mlxgpt.data import read_text, split_text
    from mlxgpt.errors import MlxgptError

    try:
        text = read_text(args.data)
    except MlxgptError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    train_text, val_text = split_text(text)
    configs = [("char", 0, ["--tokenizer", "char"])] + [
        (f"sentencepiece-{n}", n, ["--tokenizer", "sentencepiece", "--vocab-size", str(n),
                                   "--sp-model-type", args.sp_model_type]) for n in args.vocab_sizes]
    results = []
    for name, _, flags in configs:
        out = args.out / name
        if not args.no_warmup:
            warm = subprocess.run(train_command(args, args.out / f"_warmup-{name}", flags, True),
                                  capture_output=True, text=True)
            shutil.rmtree(args.out / f"_warmup-{name}", ignore_errors=True)
            if warm.returncode != 0:
                print(f"{name}: {warm.stderr.strip()}", file=sys.stderr)
                return 1
        started = time.perf_counter()
        try:
            run_command(train_command(args, out, flags, False), name)
        except RuntimeError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        wall = time.perf_counter() - started
        events = read_events(out / "metrics.jsonl")
        start, end = events["run_started"], events["run_finished"]
        whole = whole_split(out / "best", val_text)
        chars_per_token = len(train_text) / start["train_tokens"]
        row = dict(tokenizer=name, vocab=start["vocab_size"], params=start["n_params_total"], iters=end["iter"],
                   train_seconds=end["train_seconds"], wall_seconds=wall, tokens_per_s=end["tokens_per_s"],
                   chars_per_token=chars_per_token, chars_per_s=end["tokens_per_s"] * chars_per_token,
                   val_loss=end["best_val_loss"], val_bpc_estimate=end["best_val_bpc"],
                   val_loss_full=whole.loss, val_bpc_full=whole.bits_per_char)
        results.append(row)
        print(f"  {name}: {row['iters']} iters, val bpc {row['val_bpc_full']:.4f} (whole split), "
              f"{row['tokens_per_s']:.0f} tok/s, {row['chars_per_s']:.0f} char/s", flush=True)

    header = ("| tokenizer | vocab | params | iters | tokens/s | chars/token | chars/s | val loss/token "
              "| val bpc (eval batches) | **val bpc (whole split)** |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    rows = [f"| {r['tokenizer']} | {r['vocab']} | {r['params'] / 1e6:.2f}M | {r['iters']} | {r['tokens_per_s']:,.0f} "
            f"| {r['chars_per_token']:.2f} | {r['chars_per_s']:,.0f} | {r['val_loss_full']:.4f} "
            f"| {r['val_bpc_estimate']:.4f} | **{r['val_bpc_full']:.4f}** |" for r in results]
    table = "\n".join([header, *rows])
    print("\n" + table)
    args.out.mkdir(parents=True, exist_ok=True)
    write_results(args.out, "results", table, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
