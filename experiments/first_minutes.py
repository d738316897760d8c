"""The first two minutes: how long a newcomer waits, and what the wait buys.

    python -m experiments.first_minutes                  # the whole measurement (~5 min on 2 cores)
    python -m experiments.first_minutes --quick          # the same three, shortened: ~2 min
    python -m experiments.first_minutes --load 2         # the speed-run beside 2 busy processes
    python -m experiments.first_minutes --nanogpt        # also nanoGPT's procedure for baby (PyTorch)

Every number comes from the commands the README gives, run in a subprocess as a
user runs them (with --no-ui, which is what a pipe gets anyway, and a fresh --out):

1. **Time to step 1**, from process start to the log line `iter      1/...`, of
   `python train.py --data shakespeare --max-iters 2` (the README's first command,
   capped so that it ends at once): first with an empty MLX kernel cache
   (MLXGPT_JIT_CACHE pointed at a new directory, see mlxgpt/fast/jit.py), as on
   the first day, then again with the cache that run filled, as on every later
   day. Also when the `compiling kernels for this CPU` note appeared (it must on
   the first run, must not on the second) and when the iter-0 eval line did: the
   first eval, and the sample after it, are the first things that wait for the
   compiler.
2. **The default**: `python train.py --data shakespeare` as it is (the preset it
   picks here, its wall time) and the val loss of its best/ checkpoint on the
   whole validation split (`split_loss`, every token predicted once: the number
   `mlxgpt eval` prints, not the 20-batch estimate). With --nanogpt, nanoGPT's
   procedure for the same baby config right after it (`python -m
   experiments.nanogpt_train --preset baby`), scored the same way.
3. **Time to quality on a slow machine**: `python train.py --data shakespeare
   --preset cpu-speedrun` (a 120 s --time-budget), with --load N busy processes
   running beside it to make the day slower. With a budget the learning-rate
   schedule follows the clock (`clock_learning_rate` in mlxgpt/training.py), so
   a slower machine takes fewer steps but still ends its cosine decay: the val
   loss should hold. Where the default preset is another one, an untimed 3-step
   run first fills the kernel cache for the speed-run's shapes, so compiling does
   not eat the budget.

Measurements 2 and 3 use the kernel cache that measurement 1 filled; the cache
is deleted at the end. --quick shortens 2 (and nanoGPT's run) with --max-iters
and 3 with --time-budget; the table shows the commands as run. The Markdown
table printed at the end is ready for docs/benchmarks.md; OUT/first_minutes.json
holds every number, OUT/runs/ the runs.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from argparse import Namespace
from contextlib import contextmanager
from datetime import datetime
from importlib import metadata
from pathlib import Path
from typing import Iterator

from experiments.runs import read_events, run_timed, write_results
from mlxgpt.ui.format import COMPILING_NOTE

ROOT = Path(__file__).resolve().parent.parent  # train.py and experiments/ live here
QUICK_DEFAULT = ["--max-iters", "300"]  # measurement 2 (and nanoGPT's run) in --quick
QUICK_SPEEDRUN = ["--time-budget", "20"]  # measurement 3 in --quick

# The plain log's lines (mlxgpt/ui/plain.py), each matched at the start of a line.
ITER_1 = re.compile(r"^iter\s+1/\d+:")
EVAL_0 = re.compile(r"^eval\s+0:")
COMPILING = re.compile("^" + re.escape(COMPILING_NOTE))


def first_at(lines: list[tuple[float, str]], pattern: re.Pattern) -> float | None:
    """When the first line matching `pattern` appeared (seconds since process start), or None."""
    return next((seconds for seconds, line in lines if pattern.search(line)), None)


def startup_times(lines: list[tuple[float, str]]) -> dict:
    """The moments of a run's start that a user sees, from its timed output lines."""
    return dict(compiling_note_s=first_at(lines, COMPILING), eval0_s=first_at(lines, EVAL_0),
                iter1_s=first_at(lines, ITER_1))


def train_command(out: Path, *flags: str) -> list[str]:
    """The README's command, with `flags`, --no-ui and a run directory of our own."""
    return [sys.executable, "train.py", "--data", "shakespeare", *flags, "--no-ui", "--out", str(out)]


def shown(command: list[str]) -> str:
    """The command as a user types it, without the run directory (ours, not theirs)."""
    words = ["python", *command[1:]]
    if "--out" in words:
        at = words.index("--out")
        del words[at:at + 2]
    return shlex.join(words)


def fresh(path: Path) -> Path:
    """An empty run directory: each measurement starts a new run, as a newcomer does."""
    shutil.rmtree(path, ignore_errors=True)
    return path.resolve()


@contextmanager
def busy_processes(n: int) -> Iterator[list[subprocess.Popen]]:
    """`n` processes spinning a core each while the block runs; always stopped after it."""
    processes: list[subprocess.Popen] = []
    try:
        for _ in range(n):
            processes.append(subprocess.Popen([sys.executable, "-c", "while True: pass"]))
        yield processes
    finally:
        for process in processes:
            process.kill()
        for process in processes:
            process.wait()


def machine() -> dict:
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        cpuinfo = []
    cpu = next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")),
               platform.processor() or platform.machine())
    return dict(cpu=cpu, cores=os.cpu_count(), system=f"{platform.system()} {platform.machine()}",
                python=platform.python_version(), mlx=metadata.version("mlx"),
                date=datetime.now().astimezone().isoformat(timespec="seconds"))


def time_to_first_step(runs: Path, env: dict[str, str]) -> dict:
    """Measurement 1: the same short run with an empty kernel cache, then with the cache it filled."""
    results = {}
    for cache in ("cold", "warm"):
        out = fresh(runs / f"first-step-{cache}")
        command = train_command(out, "--max-iters", "2")
        lines, seconds = run_timed(command, f"first step ({cache} kernel cache)", env, cwd=ROOT)
        row = dict(command=shown(command), **startup_times(lines), exit_s=seconds)
        if row["iter1_s"] is None:
            raise RuntimeError(f"first step ({cache} kernel cache): no 'iter 1/' line in its output")
        started = read_events(out / "metrics.jsonl")["run_started"]
        row.update(preset=started["preset"], blas=started["blas"], device=started["device"])
        results[cache] = row
        note = ("no compiling note" if row["compiling_note_s"] is None
                else f"compiling note at {row['compiling_note_s']:.1f} s")
        print(f"  {cache} kernel cache: {note}, eval 0 at {row['eval0_s']:.1f} s, "
              f"iter 1 at {row['iter1_s']:.1f} s, exit at {seconds:.1f} s", flush=True)
    if results["cold"]["compiling_note_s"] is None or results["warm"]["compiling_note_s"] is not None:
        print("warning: the 'compiling kernels' note should show on the first run only", file=sys.stderr)
    return results


def mlxgpt_run(command: list[str], out: Path, what: str, env: dict[str, str]) -> dict:
    """Run train.py, time the whole process, and read back what the run reported."""
    _, seconds = run_timed(command, what, env, cwd=ROOT)
    events = read_events(out / "metrics.jsonl")
    started, finished = events["run_started"], events["run_finished"]
    row = dict(command=shown(command), preset=started["preset"], preset_note=started["preset_note"],
               device=started["device"], blas=started["blas"], parallelism=started["parallelism"],
               iters=finished["iter"], reason=finished["reason"], train_seconds=finished["train_seconds"],
               tokens_per_s=finished["tokens_per_s"],
               wall_seconds=seconds, val_estimate=finished["final_val_loss"],
               best_val_estimate=finished["best_val_loss"], checkpoint=str(out / "best"))
    print(f"  {what}: preset {row['preset']}, {row['iters']} iters ({row['reason']}), "
          f"{row['train_seconds']:.0f} s training, {seconds:.0f} s wall, val {row['val_estimate']:.4f} "
          f"(its estimate)", flush=True)
    return row


def nanogpt_run(runs: Path, flags: list[str]) -> dict:
    """nanoGPT's procedure for baby, as experiments.seeds runs it (its default seed), timed whole."""
    from experiments import seeds
    from mlxgpt.config import TrainArgs

    out = fresh(runs / "nanogpt-baby")
    started = time.perf_counter()
    row = seeds.nanogpt_run("shakespeare", "baby", TrainArgs.seed, flags, out)
    row.update(wall_seconds=time.perf_counter() - started, preset="baby", weights=str(out / "weights.npz"),
               command=shown([sys.executable, "-m", "experiments.nanogpt_train", "--data", "shakespeare",
                              "--preset", "baby", *flags]))
    print(f"  nanoGPT's procedure: {row['iter']} iters, {row['train_seconds']:.0f} s training, "
          f"{row['wall_seconds']:.0f} s wall, val {row['val_estimate']:.4f} (its estimate)", flush=True)
    return row


def score_whole_split(results: dict) -> None:
    """The val loss on the whole validation split, each model scored as experiments.seeds does."""
    from experiments.nanogpt_train import SETTING_FIELDS, prepare
    from experiments.seeds import load_npz_model
    from experiments.tokenizers import whole_split
    from mlxgpt.data import read_text, split_text
    from mlxgpt.evaluate import split_loss

    _, val_text = split_text(read_text("shakespeare"))
    for key in ("default", "speedrun"):
        results[key]["val_whole"] = whole_split(Path(results[key]["checkpoint"]), val_text).loss
    if "nanogpt" in results:
        model_args, _, _, val_ids, val_chars = prepare(Namespace(data="shakespeare", preset="baby",
                                                                 **dict.fromkeys(SETTING_FIELDS)))
        model = load_npz_model(Path(results["nanogpt"]["weights"]), model_args)
        results["nanogpt"]["val_whole"] = split_loss(model, val_ids, val_chars).loss


def _seconds(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f} s"


def markdown(results: dict) -> str:
    """The results as Markdown: a line on the machine, then a table for step 1 and one for the runs."""
    m = results["machine"]
    quick = "; **--quick**: shortened runs (see the commands)" if results["quick"] else ""
    lines = [f"{m['date'][:10]}: {m['cpu']}, {m['cores']} cores, {m['system']}; MLX {m['mlx']}, "
             f"BLAS {results['blas'] or 'none (GPU)'}; {results['load']} busy processes beside the speed-run{quick}",
             ""]
    first = results["first_step"]
    lines += [f"| `{first['cold']['command']}`, from process start | \"compiling kernels\" line | eval 0 line "
              "| **iter 1 line** | exit |",
              "|---|---:|---:|---:|---:|"]
    for cache, label in (("cold", "first run ever (empty kernel cache)"), ("warm", "second run (warm kernel cache)")):
        row = first[cache]
        lines.append(f"| {label} | {_seconds(row['compiling_note_s'])} | {_seconds(row['eval0_s'])} "
                     f"| **{_seconds(row['iter1_s'])}** | {_seconds(row['exit_s'])} |")
    lines += ["", "| run | command | preset | iters | training | wall | val, its estimate | **val, whole split** |",
              "|---|---|---|---:|---:|---:|---:|---:|"]
    runs = [("the default", results["default"])]
    if "nanogpt" in results:
        runs.append(("nanoGPT's procedure", results["nanogpt"]))
    runs.append((f"CPU speed-run, {results['load']} busy processes", results["speedrun"]))
    for label, row in runs:
        iters = row.get("iters", row.get("iter"))
        stopped = " (time budget)" if row.get("reason") == "time budget" else ""
        whole = f"**{row['val_whole']:.4f}**" if "val_whole" in row else "—"
        lines.append(f"| {label} | `{row['command']}` | {row['preset']} | {iters}{stopped} "
                     f"| {row['train_seconds']:.0f} s | {row['wall_seconds']:.0f} s | {row['val_estimate']:.4f} "
                     f"| {whole} |")
    scored = "mlxgpt's best/ checkpoint" + (" and nanoGPT's final weights" if "nanogpt" in results else "")
    lines += ["", "Whole split: every token of the validation split predicted once (`mlxgpt.evaluate.split_loss`), "
              f"by {scored}. Its estimate: the run's last eval (its eval_iters random batches). "
              "Wall: process start to exit."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m experiments.first_minutes", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help=f"shortened runs ({' '.join(QUICK_DEFAULT)} for the default, {' '.join(QUICK_SPEEDRUN)} "
                        "for the speed-run; no nanoGPT unless --nanogpt): a few minutes")
    p.add_argument("--out", type=Path, default=Path("out/experiments/first_minutes"),
                   help="where first_minutes.json/.md and the runs go")
    p.add_argument("--load", type=int, default=0, metavar="N",
                   help="busy processes (one core each) running beside the speed-run: a slower day")
    p.add_argument("--nanogpt", action="store_true", help="also nanoGPT's procedure for baby (needs PyTorch)")
    args = p.parse_args(argv)
    if args.load < 0:
        p.error(f"--load must be 0 or more, got {args.load}")
    if args.nanogpt and importlib.util.find_spec("torch") is None:
        print("error: --nanogpt needs PyTorch (pip install -r requirements-bench.txt)", file=sys.stderr)
        return 2

    began = time.perf_counter()
    runs = args.out / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    cache = tempfile.mkdtemp(prefix="mlxgpt-jit-first-minutes-")  # an empty kernel cache, for measurement 1
    env = {**os.environ, "MLXGPT_JIT_CACHE": cache}
    results: dict = dict(machine=machine(), quick=args.quick, load=args.load)
    try:
        print("1. time to step 1, with an empty kernel cache and then a warm one", flush=True)
        results["first_step"] = time_to_first_step(runs, env)
        results["blas"] = results["first_step"]["cold"]["blas"]

        print("2. the default", flush=True)
        out = fresh(runs / "default")
        results["default"] = mlxgpt_run(train_command(out, *(QUICK_DEFAULT if args.quick else [])), out,
                                        "the default", env)
        if args.nanogpt:
            results["nanogpt"] = nanogpt_run(runs, QUICK_DEFAULT if args.quick else [])

        print(f"3. the CPU speed-run, {args.load} busy processes beside it", flush=True)
        if results["default"]["preset"] != "cpu-speedrun":  # else its kernels are in the cache already
            warmup = fresh(runs / "speedrun-warmup")
            run_timed(train_command(warmup, "--preset", "cpu-speedrun", "--max-iters", "3"),
                      "speed-run warm-up (untimed: fills the kernel cache)", env, cwd=ROOT)
        out = fresh(runs / "speedrun")
        command = train_command(out, "--preset", "cpu-speedrun", *(QUICK_SPEEDRUN if args.quick else []))
        with busy_processes(args.load):
            results["speedrun"] = mlxgpt_run(command, out, "the speed-run", env)
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(cache, ignore_errors=True)

    print("scoring on the whole validation split", flush=True)
    score_whole_split(results)
    results["seconds"] = time.perf_counter() - began
    table = markdown(results)
    print("\n" + table)
    write_results(args.out, "first_minutes", table, results)
    print(f"\n{results['seconds']:.0f} s in all; results: {args.out / 'first_minutes.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
