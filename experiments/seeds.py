"""How much of a val loss is the seed? The same preset trained from several seeds.

    python -m experiments.seeds --data shakespeare
    python -m experiments.seeds --data shakespeare --quick

A single run's val loss is one draw: the seed picks the initial weights and the
order of the training batches, and the printed `val` is itself an estimate from
`eval_iters` random batches. Comparing two single runs (two frameworks, two
settings, a run and a number in a README) compares two draws. This experiment
trains each seed with

- **mlxgpt**: `python -m mlxgpt train --preset P --seed S` (= train.py), and
- **nanoGPT's procedure** (needs PyTorch): `python -m experiments.nanogpt_train
  --preset P --seed S`, nanoGPT's model and train.py loop in PyTorch with PyTorch's
  RNG (`torch.manual_seed(S)`, nanoGPT's init, `torch.randint` batches, and
  `estimate_loss` on fresh random batches at every eval),

and reports for each the val loss at the last step two ways: the estimate each
procedure prints, and the whole validation split (`mlxgpt.evaluate.split_loss`,
every token predicted once). Then the mean, the spread, and how many seeds reach
`--threshold`.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import sys
from pathlib import Path

import numpy as np

from experiments.nanogpt_train import add_setting_arguments, prepare, setting_flags
from experiments.runs import read_events, run_command, write_results
from mlxgpt.config import TrainArgs
from mlxgpt.flags import add_data_argument

DEFAULT_SEEDS = [TrainArgs.seed, 1, 2, 3, 4, 5, 6, 7, 8, 9]  # mlxgpt's and nanoGPT's default seed first
QUICK_SEEDS = DEFAULT_SEEDS[:3]
QUICK_ITERS = 300


def mlxgpt_run(data: str, preset: str, seed: int, flags: list[str], out: Path) -> dict:
    """Train with mlxgpt's own command and read back what it reported."""
    run_command([sys.executable, "-m", "mlxgpt", "train", "--data", data, "--preset", preset, "--seed", str(seed),
                 "--out", str(out), "--overwrite", "--no-ui", "--sample-tokens", "0", *flags], f"mlxgpt, seed {seed}")
    events = read_events(out / "metrics.jsonl")
    finished = events["run_finished"]
    return dict(iter=finished["iter"], val_estimate=events["eval"]["val_loss"],
                train_seconds=finished["train_seconds"], tokens_per_s=finished["tokens_per_s"])


def nanogpt_run(data: str, preset: str, seed: int, flags: list[str], out: Path) -> dict:
    """nanoGPT's procedure in PyTorch, in its own process (nanogpt_train.py says why)."""
    run_command([sys.executable, "-m", "experiments.nanogpt_train", "--data", data, "--preset", preset,
                 "--seed", str(seed), "--out", str(out), *flags], f"nanoGPT's procedure, seed {seed}",
                env={**os.environ, "MLXGPT_BLAS": "reference"})
    result = json.loads((out / "result.json").read_text(encoding="utf-8"))
    return {key: result[key] for key in ("iter", "val_estimate", "train_seconds", "tokens_per_s")}


def load_npz_model(path: Path, model_args):
    """An mlxgpt GPT holding the weights nanogpt_train.py saved (no pickle: plain arrays)."""
    import mlx.core as mx

    from mlxgpt.model import GPT

    model = GPT(model_args)
    with np.load(path, allow_pickle=False) as arrays:
        model.load_weights([(name, mx.array(arrays[name])) for name in arrays.files], strict=True)
    mx.eval(model.parameters())
    return model


def summarize(values: list[float], threshold: float) -> dict:
    array = np.asarray(values, dtype=np.float64)
    return dict(n=len(array), mean=float(array.mean()), sd=float(array.std(ddof=1)) if len(array) > 1 else math.nan,
                min=float(array.min()), max=float(array.max()), at_or_below=int((array <= threshold).sum()))


def markdown(results: dict, threshold: float) -> str:
    procedures = list(results["runs"])
    header = "| seed | " + " | ".join(f"{p} estimate | {p} whole split" for p in procedures) + " |"
    lines = [header, "|---:|" + "---:|---:|" * len(procedures)]
    for seed in results["seeds"]:
        cells = []
        for p in procedures:
            row = results["runs"][p][str(seed)]
            cells += [f"{row['val_estimate']:.4f}", f"{row['val_whole']:.4f}"]
        lines.append(f"| {seed} | " + " | ".join(cells) + " |")
    for label, key in (("mean", "mean"), ("sd", "sd"), ("min", "min"), ("max", "max"),
                       (f"seeds ≤ {threshold}", "at_or_below")):
        cells = []
        for p in procedures:
            for what in ("val_estimate", "val_whole"):
                value = results["summary"][p][what][key]
                cells.append(f"{value}/{results['summary'][p][what]['n']}" if key == "at_or_below" else f"{value:.4f}")
        lines.append(f"| **{label}** | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m experiments.seeds", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_argument(p, "UTF-8 text file, or shakespeare", required=True)
    p.add_argument("--seeds", type=int, nargs="+", default=None, help=f"default: {' '.join(map(str, DEFAULT_SEEDS))}")
    p.add_argument("--procedures", nargs="+", default=["mlxgpt", "nanogpt"], choices=["mlxgpt", "nanogpt"])
    p.add_argument("--threshold", type=float, default=1.89, help="count the seeds whose val loss is at or below this")
    p.add_argument("--quick", action="store_true",
                   help=f"seeds {' '.join(map(str, QUICK_SEEDS))}, {QUICK_ITERS} steps: checks the set-up in minutes")
    p.add_argument("--out", type=Path, default=Path("out/seeds"), help="where the runs and results.md/json go")
    add_setting_arguments(p)
    args = p.parse_args(argv)
    seeds = args.seeds or (QUICK_SEEDS if args.quick else DEFAULT_SEEDS)
    if args.quick and args.max_iters is None:
        args.max_iters = QUICK_ITERS
    flags = setting_flags(args)

    from mlxgpt.checkpoint import load
    from mlxgpt.errors import MlxgptError
    from mlxgpt.evaluate import split_loss

    procedures = list(args.procedures)
    if "nanogpt" in procedures:
        if importlib.util.find_spec("torch") is None:
            print("PyTorch is not installed: running mlxgpt only (pip install -r requirements-bench.txt)",
                  file=sys.stderr)
            procedures.remove("nanogpt")

    try:
        model_args, train_args, _, val_ids, val_chars = prepare(args)
    except MlxgptError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    results: dict = dict(data=args.data, preset=args.preset, model=vars(model_args), max_iters=train_args.max_iters,
                         batch_size=train_args.batch_size, seeds=seeds,
                         threshold=args.threshold, runs={p: {} for p in procedures})
    for seed in seeds:
        for procedure in procedures:
            out = args.out / f"{procedure}-seed{seed}"
            try:
                if procedure == "mlxgpt":
                    row = mlxgpt_run(args.data, args.preset, seed, flags, out)
                    model, _ = load(out / "latest")
                else:
                    row = nanogpt_run(args.data, args.preset, seed, flags, out)
                    model = load_npz_model(out / "weights.npz", model_args)
            except RuntimeError as exc:
                print(f"error: {exc}", file=sys.stderr)
                return 1
            row["val_whole"] = split_loss(model, val_ids, val_chars).loss
            results["runs"][procedure][str(seed)] = row
            print(f"  {procedure} seed {seed}: val {row['val_estimate']:.4f} (its estimate), "
                  f"{row['val_whole']:.4f} (whole split), {row['train_seconds']:.0f} s, "
                  f"{row['tokens_per_s']:,.0f} tok/s", flush=True)

    results["summary"] = {p: {what: summarize([r[what] for r in results["runs"][p].values()], args.threshold)
                              for what in ("val_estimate", "val_whole")} for p in procedures}
    if len(procedures) == 2 and len(seeds) > 1:
        a, b = (results["summary"][p]["val_whole"] for p in procedures)
        results["whole_split_difference"] = dict(mean=a["mean"] - b["mean"],
                                                 standard_error=math.sqrt(a["sd"] ** 2 / a["n"] + b["sd"] ** 2 / b["n"]))
    table = markdown(results, args.threshold)
    print("\n" + table)
    if "whole_split_difference" in results:
        d = results["whole_split_difference"]
        print(f"\nwhole split, mean {procedures[0]} - mean {procedures[1]}: {d['mean']:+.4f} "
              f"± {d['standard_error']:.4f} (standard error)")
    write_results(args.out, "results", table, results)
    print(f"\nresults: {args.out / 'results.md'}, {args.out / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
