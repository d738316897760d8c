"""Which architecture switches help at laptop scale? Each one alone, for the same wall-clock time.

    python -m experiments.ablate --budget 120 --seeds 3            # the table in docs/how-it-works.md
    python -m experiments.ablate --quick                           # a few minutes: does it all run?
    python -m experiments.ablate --only base relu2 --seeds 5       # a closer look at one option

For a base configuration (default: the cpu-speedrun preset's shape with every switch
at nanoGPT's default and AdamW, see BASE) this trains the base, each option alone on
top of it, and the combination of options (--combination), every one with
`python train.py --data DATA ... --time-budget BUDGET` for the same seeds: the same
wall-clock time each, so an option that makes steps slower pays for it in steps, as
it would on the user's laptop. The learning-rate schedule follows the clock (the
cosine ends as the budget does), so every run ends fully decayed.

Every run is scored on the whole validation split (`mlxgpt.evaluate.split_loss`, every
token predicted once), not the run's own 20-batch estimate. The table gives, per
option, the mean and standard deviation over seeds, the training tokens per second,
and the difference to the base with its standard error (runs with the same seed are
paired: same batches, and same initial weights wherever the option leaves the shapes
alone, so the seed's share of the noise cancels). Runs one at a time: two at once
would share the cores and each get a smaller, unequal share of the budget.
"""

from __future__ import annotations

import argparse
import math
import os
import shlex
import statistics
import sys
import time
from pathlib import Path

from experiments.first_minutes import fresh, machine, mlxgpt_run
from experiments.runs import run_timed, write_results
from mlxgpt.config import SWITCH_FLAGS
from mlxgpt.data import read_text, split_text
from mlxgpt.errors import MlxgptError

ROOT = Path(__file__).resolve().parent.parent

# The base: the speed-run's shape and recipe with nanoGPT's architecture and optimizer, every
# switch named at its default, so the base holds whatever the preset turns on.
BASE = ["--preset", "cpu-speedrun", "--optimizer", "adamw", "--pos", "learned", "--tie-embeddings",
        "--norm", "layernorm", "--no-qk-norm", "--mlp", "gelu", "--logit-softcap", "0", "--no-zero-init-proj",
        "--no-post-ln"]

# Each option: the flags it adds to the base. Modern ones first, then the classic switches.
OPTIONS: dict[str, list[str]] = {
    "muon": ["--optimizer", "muon"],
    "rope": ["--pos", "rope"],
    "rmsnorm": ["--norm", "rmsnorm"],
    "qk-norm": ["--qk-norm"],
    "relu2": ["--mlp", "relu2"],
    "swiglu": ["--mlp", "swiglu"],
    "untie-head": ["--untie-head"],
    "softcap-15": ["--logit-softcap", "15"],
    "zero-init-proj": ["--zero-init-proj"],
    "relu": ["--mlp", "relu"],
    "post-ln": ["--post-ln"],
    "no-attn-scale": ["--no-attn-scale"],
    "sinusoidal": ["--pos", "sinusoidal"],
}
CLASSIC = ("relu", "post-ln", "no-attn-scale", "sinusoidal")
DEFAULT_COMBINATION = ["muon", "rope", "rmsnorm", "qk-norm", "relu2", "untie-head", "zero-init-proj"]
# Whatever the budget: the clock ends the run, and the cosine follows the clock to its end (a decay
# by steps, such as a preset's --lr-decay-iters, would end early on a fast option and leave it at
# min_lr for the rest of the budget); evaluation only at the start and the end.
RUN_FLAGS = ["--max-iters", "1000000", "--lr-decay-iters", "1000000", "--eval-interval", "1000000",
             "--sample-tokens", "0"]
QUICK = dict(budget=10.0, seeds=[1337], only=["base", "muon", "relu2", "combination"])


def assert_every_switch_is_reset() -> None:
    """BASE names every architecture switch it could inherit from the preset (see config.SWITCH_FLAGS)."""
    reset = {"pos_embedding": "--pos", "tie_embeddings": "--tie-embeddings", "norm": "--norm", "qk_norm": "--no-qk-norm",
             "mlp": "--mlp", "logit_softcap": "--logit-softcap", "zero_init_proj": "--no-zero-init-proj",
             "post_ln": "--no-post-ln"}
    missing = [name for name in SWITCH_FLAGS if name not in reset and name not in ("causal", "attn_scale")]
    assert not missing and all(flag in BASE for flag in reset.values()), missing


def configurations(only: list[str] | None, combination: list[str]) -> dict[str, list[str]]:
    """name -> flags added to BASE, in table order: base, each option, the combination."""
    every = {"base": [], **OPTIONS, "combination": [f for name in combination for f in OPTIONS[name]]}
    return {name: flags for name, flags in every.items() if only is None or name in only}


def train_command(data: str, flags: list[str], out: Path, *extra: str) -> list[str]:
    return [sys.executable, "train.py", "--data", data, *BASE, *flags, *RUN_FLAGS, *extra, "--no-ui", "--out", str(out)]


def warm_up(data: str, configs: dict[str, list[str]], runs: Path) -> None:
    """A 3-step run of each configuration, untimed: MLX compiles each new graph's CPU kernels on
    first use (seconds each; mlxgpt/fast/jit.py), and that must not come out of one run's budget."""
    for name, flags in configs.items():
        out = fresh(runs / f"warm-up-{name}")
        run_timed(train_command(data, flags, out, "--max-iters", "3"), f"warm-up of {name}", cwd=ROOT)


def one_run(data: str, val_text: str, name: str, flags: list[str], seed: int, budget: float, runs: Path) -> dict:
    """train.py for one configuration and seed; its whole-split val loss (on `val_text`)."""
    from experiments.tokenizers import whole_split

    out = fresh(runs / f"{name}-seed{seed}")
    command = train_command(data, flags, out, "--time-budget", f"{budget:g}", "--seed", str(seed))
    row = mlxgpt_run(command, out, f"{name}, seed {seed}", dict(os.environ))
    row.update(name=name, seed=seed, val_whole=whole_split(out / "latest", val_text).loss)
    print(f"    whole split {row['val_whole']:.4f}", flush=True)
    return row


def kept_runs(out: Path, budget: float) -> dict[tuple[str, int], dict]:
    """(name, seed) -> row, from --out's ablate.json: the runs of the same budget whose directory is still there."""
    import json

    try:
        earlier = json.loads((out / "ablate.json").read_text())
    except FileNotFoundError:
        return {}
    if earlier["budget"] != budget or earlier.get("run_flags") != RUN_FLAGS or earlier.get("base") != BASE:
        return {}  # another protocol: nothing to keep
    return {(row["name"], row["seed"]): row for row in earlier["runs"]
            if (out / "runs" / f"{row['name']}-seed{row['seed']}").is_dir()}


def mean_sd(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (NaN for one value)."""
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else float("nan")


def summarise(rows: list[dict]) -> dict[str, dict]:
    """Per configuration: mean ± sd of the whole-split loss, steps, tokens/s, and the paired
    difference to the base (same seeds) with its standard error sd / sqrt(n)."""
    by_name: dict[str, dict[int, dict]] = {}
    for row in rows:
        by_name.setdefault(row["name"], {})[row["seed"]] = row
    base = by_name.get("base", {})
    summary = {}
    for name, seeds in by_name.items():
        losses = [r["val_whole"] for r in seeds.values()]
        mean, sd = mean_sd(losses)
        entry = dict(n=len(losses), mean=mean, sd=sd, losses=losses,
                     iters=sum(r["iters"] for r in seeds.values()) / len(seeds),
                     tokens_per_s=sum(r["tokens_per_s"] for r in seeds.values()) / len(seeds))
        paired = [seeds[s]["val_whole"] - base[s]["val_whole"] for s in seeds if s in base]
        if name != "base" and paired:
            diff, diff_sd = mean_sd(paired)
            entry.update(diff=diff, diff_se=diff_sd / math.sqrt(len(paired)) if len(paired) > 1 else float("nan"))
        summary[name] = entry
    return summary


def verdict(entry: dict) -> str:
    """'helps' / 'hurts' when the difference is more than two standard errors from 0, else 'within noise'."""
    if "diff" not in entry:
        return ""
    if math.isnan(entry["diff_se"]):
        return "one seed: no verdict"
    if abs(entry["diff"]) <= 2 * entry["diff_se"]:
        return "within noise"
    return "helps" if entry["diff"] < 0 else "hurts"


def markdown(results: dict) -> str:
    m, s = results["machine"], results["summary"]
    seeds = ", ".join(map(str, results["seeds"]))
    if results["classic_seeds"] < len(results["seeds"]):
        seeds += f" (classic switches: the first {results['classic_seeds']})"
    lines = [f"{m['date'][:10]}: {m['cpu']}, {m['cores']} cores, {m['system']}; MLX {m['mlx']}, BLAS {results['blas']}; "
             f"`{results['command']}`: {results['budget']:g} s of training per run, seeds {seeds}"
             + ("; **--quick**" if results["quick"] else ""),
             "",
             f"Base: `{shlex.join(BASE)}`.",
             "",
             "| configuration | flags | val (whole split), mean ± sd | Δ vs base ± se | verdict | steps | tokens/s |",
             "|---|---|---:|---:|---|---:|---:|"]
    for name, entry in s.items():
        flags = "—" if name == "base" else " ".join(results["configurations"][name])
        diff = f"{entry['diff']:+.4f} ± {entry['diff_se']:.4f}" if "diff" in entry else "—"
        sd = "" if math.isnan(entry["sd"]) else f" ± {entry['sd']:.4f}"
        label = f"{name} (classic)" if name in CLASSIC else name
        lines.append(f"| {label} | `{flags}` | {entry['mean']:.4f}{sd} | {diff} | {verdict(entry)} "
                     f"| {entry['iters']:.0f} | {entry['tokens_per_s'] / 1000:.1f}k |")
    lines += ["", "Δ: the mean over seeds of (option − base) for the same seed; se: its standard deviation / √seeds. "
              "'helps'/'hurts': more than two standard errors from zero. Steps and tokens/s: what the budget bought."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m experiments.ablate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="shakespeare", help="UTF-8 text file, or shakespeare (the default)")
    p.add_argument("--budget", type=float, default=120.0, help="seconds of training per run (default 120)")
    p.add_argument("--seeds", type=int, default=3, help="seeds per configuration (default 3: 1337, 1, 2)")
    p.add_argument("--classic-seeds", type=int, default=1, help=f"seeds for the classic switches ({', '.join(CLASSIC)}"
                   "; default 1: they are there to see what breaks, not to be tuned)")
    p.add_argument("--only", nargs="+", metavar="NAME", choices=["base", *OPTIONS, "combination"],
                   help="only these configurations (base, an option's name, combination)")
    p.add_argument("--combination", nargs="+", metavar="OPTION", choices=list(OPTIONS), default=DEFAULT_COMBINATION,
                   help=f"the options trained together (default: {' '.join(DEFAULT_COMBINATION)})")
    p.add_argument("--quick", action="store_true", help=f"{QUICK['budget']:g} s runs, one seed, "
                   f"{', '.join(QUICK['only'])} only: a few minutes")
    p.add_argument("--keep", action="store_true", help="reuse the runs of an earlier ablation in --out (its "
                   "ablate.json) whose run directories are still there; train only the others (to finish a "
                   "stopped ablation, or to redo a run disturbed by other work: delete its directory)")
    p.add_argument("--out", type=Path, default=Path("out/experiments/ablate"), help="where ablate.json/.md and the "
                                                                                     "runs go")
    args = p.parse_args(argv)
    if args.budget <= 0 or args.seeds < 1:
        p.error("--budget must be positive and --seeds at least 1")
    assert_every_switch_is_reset()
    seeds = QUICK["seeds"] if args.quick else [1337, 1, 2, 3, 4, 5, 6, 7, 8, 9][:args.seeds]
    budget = QUICK["budget"] if args.quick else args.budget
    configs = configurations(QUICK["only"] if args.quick and not args.only else args.only, args.combination)
    command = "python -m experiments.ablate " + " ".join(argv if argv is not None else sys.argv[1:])

    began = time.perf_counter()
    rows: list[dict] = []
    results = dict(machine=machine(), command=command.strip(), quick=args.quick, budget=budget, seeds=seeds,
                   classic_seeds=args.classic_seeds, blas="", configurations=configs, base=BASE,
                   run_flags=RUN_FLAGS, runs=rows)
    kept = kept_runs(args.out, budget) if args.keep else {}
    try:
        _, val_text = split_text(read_text(args.data))  # every run is scored on the same split
    except MlxgptError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    planned = [(seed, name) for i, seed in enumerate(seeds) for name in configs  # seed-major: a slow hour of
               if not (name in CLASSIC and i >= args.classic_seeds)]         # the machine hits every configuration
    try:
        print("warming up the kernel cache (untimed)", flush=True)
        warm_up(args.data, {name: configs[name] for seed, name in planned if (name, seed) not in kept},
                args.out / "runs")
        for seed, name in planned:
            if (name, seed) in kept:
                print(f"  {name}, seed {seed}: kept from the earlier ablation", flush=True)
                rows.append(kept[name, seed])
            else:
                rows.append(one_run(args.data, val_text, name, configs[name], seed, budget, args.out / "runs"))
                results.update(blas=rows[-1]["blas"] or "none (GPU)", summary=summarise(rows),
                               seconds=time.perf_counter() - began)
                write_results(args.out, "ablate", markdown(results), results)  # so far: a stopped run keeps its rows
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print("\n" + markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
