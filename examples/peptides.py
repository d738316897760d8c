"""The peptide lab: a character GPT learns antimicrobial peptides, end to end, in one command.

    python examples/peptides.py                  # the whole study: 6.5 minutes on our 2-core machine
    python examples/peptides.py --quick          # the same steps, tiny: a check in under a minute
    python examples/peptides.py --out DIR --seed 1

Needs modlAMP and scikit-learn (`pip install -e '.[peptides]'`). The data are modlAMP's
bundled set of 2,600 APD3 antimicrobial peptides (AMPs) and 2,600 UniProt peptides
(`modlamp.datasets.load_AMPvsUniProt`; the UniProt half is 10-50 residues long, the AMPs
7-174, so the lab keeps 10-50 for both, else length alone would tell them apart). The lab
drives mlxgpt through the commands a user would type (each one printed before it runs,
its output kept in DIR/logs/):

1. data: peptides of 10-50 standard residues, de-duplicated (a sequence labelled both
   ways is dropped), split by sequence into train/val/test (80/10/10 per class, seeded),
   written as text and CSV files into DIR/data/ for every step below.
2. pre-train a small char GPT on every training peptide (labels ignored), then fine-tune
   it on the training AMPs (`train.py --init-from`); train the same model on the
   training AMPs from scratch with the same recipe; score all of them on one held-out
   AMP file (the val split's AMPs) with `mlxgpt eval`.
3. generate candidates from the fine-tuned model (`mlxgpt sample`): valid, unique, novel,
   and their physico-chemical profile with modlAMP's descriptors against held-out AMPs,
   the same AMPs shuffled, random sequences and the UniProt peptides.
4. GPT-1 classifiers AMP vs non-AMP (`mlxgpt classify train`), fine-tuned from the
   pre-trained model and from a random one of the same shape, against a descriptor
   baseline (modlAMP descriptors into scikit-learn), all scored on the test split.

It writes DIR/results.json, DIR/results.md (the tables) and DIR/*.png (the pictures);
DIR is out/peptides (out/peptides-quick with --quick). docs/peptides.md shows a full run.
`--fake-data N` swaps modlAMP's peptides for N made-up sequences per class (the tests use
it); everything else stays the same.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import re
import shlex
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # mlxgpt from this checkout, installed or not
    sys.path.insert(0, str(REPO))

AMINO = "ACDEFGHIKLMNPQRSTVWY"  # the 20 standard residues
MIN_LEN, MAX_LEN = 10, 50
SPLIT = {"train": 0.8, "val": 0.1, "test": 0.1}  # per class, by distinct sequence
INSTALL = "pip install -e '.[peptides]'  (or: pip install modlamp scikit-learn)"
MARKER = ".peptide-lab"  # marks a directory this lab writes into (it refuses others that hold files)
MODEL_FLAGS = ["--n-layer", "4", "--n-head", "4", "--n-embd", "128", "--block-size", "64", "--dropout", "0.1"]
DESCRIPTORS = {"length": "length", "charge": "net charge at pH 7.4", "hydrophobicity": "Eisenberg hydrophobicity",
               "moment": "hydrophobic moment (Eisenberg)"}
SETS = {"generated": "generated (fine-tuned GPT)", "heldout": "held-out AMPs", "shuffled": "held-out AMPs, shuffled",
        "random": "random (uniform, same lengths)", "uniprot": "UniProt (non-AMP)"}


class LabError(Exception):
    """A step failed: one line for the user, then exit 1."""


@dataclass(frozen=True)
class Settings:
    """How long each step runs: the full study, or --quick."""

    pretrain_iters: int
    pretrain_eval_interval: int
    amp_iters: int  # the AMP models, fine-tuned and from scratch alike
    amp_eval_interval: int
    amp_lr: float  # peak; cosine down to a tenth
    eval_iters: int
    samples: int
    classify_epochs: int | None  # None: classify_iters steps instead
    classify_iters: int | None
    classify_lr: float
    classify_seeds: int
    rf_trees: int


FULL = Settings(pretrain_iters=1000, pretrain_eval_interval=100, amp_iters=400, amp_eval_interval=50, amp_lr=1e-3,
                eval_iters=20, samples=1000, classify_epochs=2, classify_iters=None,
                classify_lr=3e-4, classify_seeds=3, rf_trees=300)
QUICK = Settings(pretrain_iters=40, pretrain_eval_interval=20, amp_iters=20, amp_eval_interval=10, amp_lr=1e-3,
                 eval_iters=4, samples=200, classify_epochs=None, classify_iters=20,
                 classify_lr=3e-4, classify_seeds=2, rf_trees=50)


# ---------------------------------------------------------------- dependencies


def check_dependencies() -> None:
    """modlAMP and scikit-learn, or one line saying how to install them."""
    missing = []
    for module, name in (("modlamp.descriptors", "modlamp"), ("sklearn", "scikit-learn")):
        try:
            __import__(module)
        except ImportError:
            missing.append(name)
    if missing:
        raise LabError(f"the peptide lab needs {' and '.join(missing)}: {INSTALL}")


# ---------------------------------------------------------------- data


def load_modlamp() -> tuple[list[str], list[int]]:
    """modlAMP's AMPvsUniProt: 2,600 APD3 AMPs (target 1) and 2,600 UniProt peptides (target 0)."""
    from modlamp.datasets import load_AMPvsUniProt

    data = load_AMPvsUniProt()
    return [str(s) for s in data.sequences], [int(t) for t in data.target]


def made_up_peptides(n: int, seed: int) -> tuple[list[str], list[int]]:
    """n made-up "AMP-like" and n made-up "other" sequences, for tests and dry runs (no real data).

    The AMP-like ones follow a helical wheel (hydrophobic residues every 100 degrees on one face,
    cationic ones on the other), so they are amphipathic and positive; the others are uniform."""
    rng = np.random.default_rng(seed)
    seqs, labels = [], []
    for _ in range(n):
        length = int(rng.integers(12, 41))
        face = np.cos(np.deg2rad(100 * np.arange(length))) > 0
        seqs.append("".join(rng.choice(list("LIVFAW" if f else "KKRKSG")) for f in face))
        labels.append(1)
    for _ in range(n):
        seqs.append("".join(rng.choice(list(AMINO), size=int(rng.integers(MIN_LEN, MAX_LEN + 1)))))
        labels.append(0)
    return seqs, labels


def clean(seqs: Sequence[str], labels: Sequence[int]) -> tuple[dict[str, int], dict[str, int]]:
    """({sequence: label}, counts): standard residues only, length 10-50, each sequence once; a
    sequence that appears with both labels is dropped (it cannot be learned or scored)."""
    counts = {"loaded": len(seqs), "loaded_amp": int(sum(labels)), "dropped_length": 0, "dropped_residues": 0}
    seen: dict[str, set[int]] = {}
    for seq, label in zip(seqs, labels):
        if not MIN_LEN <= len(seq) <= MAX_LEN:
            counts["dropped_length"] += 1
        elif not set(seq) <= set(AMINO):
            counts["dropped_residues"] += 1
        else:
            seen.setdefault(seq, set()).add(int(label))
    peptides = {seq: next(iter(ls)) for seq, ls in sorted(seen.items()) if len(ls) == 1}
    kept = counts["loaded"] - counts["dropped_length"] - counts["dropped_residues"]
    counts.update(dropped_duplicates=kept - len(seen), dropped_both_labels=len(seen) - len(peptides),
                  kept=len(peptides), kept_amp=sum(peptides.values()))
    return peptides, counts


def split(peptides: dict[str, int], seed: int) -> dict[str, dict[str, int]]:
    """{"train"|"val"|"test": {sequence: label}}: each class's distinct sequences shuffled (seeded)
    and cut 80/10/10, so every split has both classes in the same proportion."""
    parts: dict[str, dict[str, int]] = {name: {} for name in SPLIT}
    rng = np.random.default_rng(seed)
    for label in (0, 1):
        members = sorted(s for s, l in peptides.items() if l == label)
        order = rng.permutation(len(members))
        n_val = max(1, round(len(members) * SPLIT["val"]))
        n_test = max(1, round(len(members) * SPLIT["test"]))
        for rank, i in enumerate(order):
            name = "val" if rank < n_val else "test" if rank < n_val + n_test else "train"
            parts[name][members[i]] = label
    return {name: dict(sorted(part.items())) for name, part in parts.items()}


@dataclass(frozen=True)
class DataFiles:
    """The files every step reads, in DIR/data/."""

    pretrain: Path  # every training-split peptide, one per line (labels ignored)
    amps_train: Path  # the training split's AMPs
    heldout_amps: Path  # the val split's AMPs: the held-out AMPs of the generative study
    train_csv: Path  # text,label (1 = AMP) of the training split
    val_csv: Path
    test_csv: Path
    test_txt: Path  # the test split's sequences alone, for `classify predict --file`


def write_lines(path: Path, lines: Sequence[str]) -> Path:
    from mlxgpt.files import write_atomic

    return write_atomic(path, "".join(line + "\n" for line in lines))


def write_csv(path: Path, part: dict[str, int]) -> Path:
    from mlxgpt.files import write_atomic

    return write_atomic(path, "text,label\n" + "".join(f"{s},{l}\n" for s, l in part.items()))


def write_data(directory: Path, parts: dict[str, dict[str, int]]) -> DataFiles:
    directory.mkdir(parents=True, exist_ok=True)
    train, val, test = parts["train"], parts["val"], parts["test"]
    return DataFiles(pretrain=write_lines(directory / "pretrain.txt", list(train)),
                     amps_train=write_lines(directory / "amps_train.txt", [s for s, l in train.items() if l]),
                     heldout_amps=write_lines(directory / "heldout_amps.txt", [s for s, l in val.items() if l]),
                     train_csv=write_csv(directory / "train.csv", train), val_csv=write_csv(directory / "val.csv", val),
                     test_csv=write_csv(directory / "test.csv", test),
                     test_txt=write_lines(directory / "test.txt", list(test)))


def shuffled(seqs: Sequence[str], seed: int) -> list[str]:
    """Each sequence's residues in a random order (seeded): the same composition, no pattern."""
    rng = np.random.default_rng(seed)
    return ["".join(rng.permutation(list(s))) for s in seqs]


def uniform_random(lengths: Sequence[int], seed: int) -> list[str]:
    """Sequences of the given lengths, each residue drawn uniformly from the 20 (seeded)."""
    rng = np.random.default_rng(seed)
    return ["".join(rng.choice(list(AMINO), size=n)) for n in lengths]


# ---------------------------------------------------------------- running mlxgpt's commands


def shown_path(path: Path | str) -> str:
    """A path as the printed commands show it: relative to the repository root when inside it."""
    path = Path(path)
    try:
        return str(path.resolve().relative_to(REPO))
    except ValueError:
        return str(path)


class Runner:
    """Runs `python ARGS` from the repository root, prints the command first and the output as it
    comes (unless told not to), keeps each output in DIR/logs/, and records the commands."""

    def __init__(self, logs: Path, say: Callable[[str], None]) -> None:
        self.logs, self.say = logs, say
        self.commands: list[dict[str, Any]] = []

    def __call__(self, args: Sequence[str | Path], name: str, echo: bool = True) -> str:
        words = [shown_path(a) if isinstance(a, Path) else str(a) for a in args]
        command = "python " + shlex.join(words)
        self.say(f"\n$ {command}")
        started = time.perf_counter()
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONIOENCODING": "utf-8"}
        process = subprocess.Popen([sys.executable, *words], cwd=REPO, env=env, stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True, encoding="utf-8", errors="replace")
        lines = []
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line)
            if echo:
                self.say("    " + line.rstrip("\n"))
        code = process.wait()
        output = "".join(lines)
        log = self.logs / f"{len(self.commands) + 1:02d}-{name}.log"
        log.write_text(f"$ {command}\n{output}", encoding="utf-8")
        seconds = time.perf_counter() - started
        if not echo:
            self.say(f"    ({len(lines)} lines of output in {shown_path(log)})")
        self.commands.append({"name": name, "command": command, "seconds": round(seconds, 1), "exit": code})
        if code != 0:
            last = next((line.strip() for line in reversed(lines) if line.strip()), "no output")
            raise LabError(f"{name} failed (exit {code}): {last} (the whole output: {shown_path(log)})")
        return output


# ---------------------------------------------------------------- reading their output


EVAL_LINE = re.compile(r"^(train|val) loss\s+([\d.]+) nats/token\s+([\d.]+) nats/example"
                       r".*\(([\d,]+) tokens predicted\)", re.M)
EXAMPLES = re.compile(r"split: ([\d,]+) examples")


def eval_numbers(output: str) -> dict[str, float]:
    """{"loss", "per_example", "tokens", "examples"} from `mlxgpt eval` on a --format lines run."""
    found, examples = EVAL_LINE.search(output), EXAMPLES.search(output)
    if not found or not examples:
        raise LabError(f"cannot read the loss in mlxgpt eval's output:\n{output}")
    return {"loss": float(found[2]), "per_example": float(found[3]), "tokens": int(found[4].replace(",", "")),
            "examples": int(examples[1].replace(",", ""))}


def combined(parts: Sequence[dict[str, float]]) -> dict[str, float]:
    """Two halves of one file scored apart, added up: the loss over every token of both."""
    tokens, examples = sum(p["tokens"] for p in parts), sum(p["examples"] for p in parts)
    nats = sum(p["loss"] * p["tokens"] for p in parts)
    return {"loss": nats / tokens, "perplexity": math.exp(nats / tokens), "per_example": nats / examples,
            "tokens": int(tokens), "examples": int(examples)}


def read_probabilities(output: str, texts: Sequence[str]) -> np.ndarray:
    """(N, 2) class probabilities from `classify predict`'s plain table, checked against the texts."""
    rows = [line.split() for line in output.splitlines() if line.strip()]
    header = next((i for i, row in enumerate(rows) if row[:2] == ["P(0)", "P(1)"]), None)
    if header is None:
        raise LabError("classify predict printed no table with the columns P(0) P(1)")
    rows = rows[header + 1:]
    if len(rows) != len(texts) or any(row[2] != text for row, text in zip(rows, texts)):
        raise LabError(f"classify predict printed {len(rows)} rows for {len(texts)} texts, or in another order")
    return np.array([[float(row[0]), float(row[1])] for row in rows])


def eval_curve(run: Path) -> list[tuple[int, float]]:
    """(step, val loss) of every evaluation in a run's metrics.jsonl."""
    curve = []
    for line in (run / "metrics.jsonl").read_text(encoding="utf-8").splitlines():
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            continue
        if event.get("event") == "eval":
            curve.append((int(event["iter"]), float(event["val_loss"])))
    return curve


def finished(run: Path) -> dict[str, Any]:
    """The run_finished event of a run: its last step, best val loss, why it stopped."""
    for line in reversed((run / "metrics.jsonl").read_text(encoding="utf-8").splitlines()):
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            continue
        if event.get("event") == "run_finished":
            return event
    raise LabError(f"{run} has no finished run in its metrics.jsonl")


# ---------------------------------------------------------------- descriptors


def profile(seqs: Sequence[str]) -> dict[str, np.ndarray]:
    """modlAMP's descriptors of each sequence: length, net charge at pH 7.4 (free C-terminus),
    Eisenberg's mean hydrophobicity and global hydrophobic moment (alpha helix, 100 degrees)."""
    from modlamp.descriptors import GlobalDescriptor, PeptideDescriptor

    seqs = list(seqs)
    glob = GlobalDescriptor(seqs)
    glob.length()
    length = glob.descriptor[:, 0].astype(float)
    glob.calculate_charge(ph=7.4, amide=False)
    charge = glob.descriptor[:, 0].astype(float)
    eisenberg = PeptideDescriptor(seqs, "eisenberg")
    eisenberg.calculate_global()
    hydrophobicity = eisenberg.descriptor[:, 0].astype(float)
    eisenberg.calculate_moment()
    moment = eisenberg.descriptor[:, 0].astype(float)
    return {"length": length, "charge": charge, "hydrophobicity": hydrophobicity, "moment": moment}


def baseline_features(seqs: Sequence[str]) -> np.ndarray:
    """The descriptor baseline's features: modlAMP's 10 global descriptors (length, MW, charge,
    charge density, pI, instability, aromaticity, aliphatic index, Boman index, hydrophobic
    ratio), Eisenberg hydrophobicity and moment, and the pepCATS auto-correlation (window 7)."""
    from modlamp.descriptors import GlobalDescriptor, PeptideDescriptor

    seqs = list(seqs)
    glob = GlobalDescriptor(seqs)
    glob.calculate_all(ph=7.4, amide=False)
    columns = [glob.descriptor]
    eisenberg = PeptideDescriptor(seqs, "eisenberg")
    eisenberg.calculate_global()
    columns.append(eisenberg.descriptor)
    eisenberg.calculate_moment()
    columns.append(eisenberg.descriptor)
    pepcats = PeptideDescriptor(seqs, "pepcats")
    pepcats.calculate_autocorr(7)
    columns.append(pepcats.descriptor)
    return np.hstack(columns).astype(float)


def rate(value: float) -> str:
    """A learning rate as people write it: 0.0003 -> 3e-4."""
    return f"{value:.0e}".replace("e-0", "e-")


def mean_sd(values: Sequence[float]) -> dict[str, float | None]:
    values = np.asarray([v for v in values if v is not None], dtype=float)
    return {"mean": float(values.mean()) if len(values) else None,
            "sd": float(values.std(ddof=1)) if len(values) > 1 else None}


def shown(stat: dict[str, float | None], digits: int = 3) -> str:
    if stat["mean"] is None:
        return "n/a"
    return f"{stat['mean']:.{digits}f}" + (f" ± {stat['sd']:.{digits}f}" if stat["sd"] is not None else "")


# ---------------------------------------------------------------- pictures


def draw_profile(values: dict[str, dict[str, np.ndarray]], path: Path) -> Path:
    """One panel per descriptor: each set's histogram as a density outline."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = {"generated": "#d62728", "heldout": "#1f77b4", "shuffled": "#9467bd", "random": "#7f7f7f",
               "uniprot": "#2ca02c"}
    fig, axes = plt.subplots(2, 2, figsize=(10, 7))
    for ax, (key, title) in zip(axes.flat, DESCRIPTORS.items()):
        everything = np.concatenate([v[key] for v in values.values()])
        low, high = np.percentile(everything, [0.5, 99.5])
        if key == "length":  # whole residues, two per bin
            bins = np.arange(MIN_LEN, MAX_LEN + 3, 2) - 0.5
        elif key == "charge":  # near-whole charges: one bin around each
            bins = np.arange(np.floor(low), np.ceil(high) + 2) - 0.5
        else:
            bins = np.linspace(low, high, 30)
        for name in reversed(values):  # the generated and held-out AMPs drawn last, on top (they share lengths)
            ax.hist(values[name][key], bins=bins, density=True, histtype="step", color=colours[name],
                    linewidth=2.0 if name == "generated" else 1.2, label=f"{SETS[name]} (n={len(values[name][key]):,})")
        ax.set_title(title)
        ax.set_ylabel("density")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles[::-1], labels[::-1], loc="lower center", ncol=3, fontsize=8, frameon=False)
    fig.suptitle("Physico-chemical profile (modlAMP descriptors)")
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def draw_curves(curves: dict[str, list[tuple[int, float]]], path: Path) -> Path:
    """The runs' own val loss by step: pre-training, then the two AMP models side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    steps, losses = zip(*curves["pretrained"])
    left.plot(steps, losses, marker=".", color="#2ca02c")
    left.set_title("pre-training on every training peptide")
    for name, colour, label in (("finetuned", "#d62728", "pre-trained, then fine-tuned on AMPs"),
                                ("scratch", "#1f77b4", "from scratch on AMPs")):
        steps, losses = zip(*curves[name])
        right.plot(steps, losses, marker=".", color=colour, label=label)
    right.set_title("AMP models (the same 10% of the training AMPs)")
    right.legend(fontsize=8)
    for ax in (left, right):
        ax.set_xlabel("step")
        ax.set_ylabel("val loss (nats/token)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def draw_roc(curves: dict[str, tuple[np.ndarray, np.ndarray, float]], path: Path) -> Path:
    """ROC curves on the test split (the first seed of each classifier)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 5))
    for name, (fpr, tpr, auc) in curves.items():
        ax.plot(fpr, tpr, label=f"{name} (AUC {auc:.3f})")
    ax.plot([0, 1], [0, 1], color="#bbbbbb", linestyle="--", linewidth=1)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title("AMP vs non-AMP, test split")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


# ---------------------------------------------------------------- the study


def prepare_out(out: Path) -> None:
    """DIR must be new, empty, or one this lab wrote (its marker file): never someone else's files."""
    if out.exists() and not out.is_dir():
        raise LabError(f"--out {out} is a file: pass a directory")
    if out.is_dir() and any(out.iterdir()) and not (out / MARKER).exists():
        raise LabError(f"--out {out} holds files the peptide lab did not write: choose a new or empty directory")
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text("written by examples/peptides.py\n", encoding="utf-8")
    (out / "logs").mkdir(exist_ok=True)
    for old in (out / "logs").glob("*.log"):
        old.unlink()


def train_flags(settings: Settings, seed: int) -> list[str]:
    return ["--format", "lines", "--no-ui", "--sample-tokens", "0", "--seed", str(seed), "--eval-iters",
            str(settings.eval_iters), "--overwrite"]


def language_models(run: Runner, files: DataFiles, runs: Path, settings: Settings, seed: int) -> dict[str, Any]:
    """Pre-train, fine-tune, train from scratch; score each on the held-out AMPs."""
    common = train_flags(settings, seed)
    run(["train.py", "--data", files.pretrain, "--out", runs / "pretrained", *MODEL_FLAGS, "--batch-size", "32",
         "--max-iters", str(settings.pretrain_iters), "--warmup-iters", str(max(1, settings.pretrain_iters // 20)),
         "--eval-interval", str(settings.pretrain_eval_interval), "--log-interval", "50", *common], "pretrain")
    # the two AMP models get the same recipe (steps, schedule, batches, early stopping): only the start differs
    amp_flags = ["--lr", f"{settings.amp_lr:g}", "--min-lr", f"{settings.amp_lr / 10:g}", "--warmup-iters",
                 str(max(1, settings.amp_iters // 20)), "--batch-size", "32", "--max-iters", str(settings.amp_iters),
                 "--eval-interval", str(settings.amp_eval_interval), "--early-stop-evals", "4", "--log-interval", "50",
                 *common]
    run(["train.py", "--init-from", runs / "pretrained", "--data", files.amps_train, "--out", runs / "finetuned",
         *amp_flags], "finetune")
    run(["train.py", "--data", files.amps_train, "--out", runs / "scratch", *MODEL_FLAGS, *amp_flags], "scratch")

    # `mlxgpt eval --data FILE` splits a lines file 90/10 as training does: score both parts, add them up,
    # and every held-out AMP is predicted once, by every model
    scores = {}
    for name in ("pretrained", "finetuned", "scratch"):
        parts = [eval_numbers(run(["-m", "mlxgpt", "eval", "--checkpoint", runs / name, "--data", files.heldout_amps,
                                   "--split", part], f"eval-{name}-{part}")) for part in ("train", "val")]
        done = finished(runs / name)
        scores[name] = {**combined(parts), "steps": int(done["iter"]), "stopped": done["reason"],
                        "own_best_val_loss": float(done["best_val_loss"])}
    return scores


def generation(run: Runner, files: DataFiles, out: Path, runs: Path, settings: Settings, seed: int,
               peptides: dict[str, int]) -> tuple[dict[str, Any], list[str]]:
    """`mlxgpt sample` from the fine-tuned model; its report, and novelty against wider sets."""
    samples = out / "generated.txt"
    run(["-m", "mlxgpt", "sample", "--checkpoint", runs / "finetuned", "-n", str(settings.samples), "--alphabet",
         AMINO, "--min-len", str(MIN_LEN), "--max-len", str(MAX_LEN), "--seed", str(seed), "--out", samples],
        "sample")
    report = json.loads(samples.with_suffix(".json").read_text(encoding="utf-8"))
    texts = [row["text"] for row in report["samples"]]
    valid = [row["text"] for row in report["samples"] if row["valid"]]
    train_amps = set(files.amps_train.read_text(encoding="utf-8").split())
    everything = set(peptides)
    summary = {key: report[key] for key in ("n", "valid_fraction", "unique_fraction", "novel_fraction", "capped",
                                             "mean_identity", "samples_per_s", "temperature")}
    identity = np.array([row["identity"] for row in report["samples"]])
    summary.update(novel_vs_training_amps=sum(t not in train_amps for t in texts) / len(texts),
                   novel_vs_whole_dataset=sum(t not in everything for t in texts) / len(texts), valid_count=len(valid),
                   median_identity=float(np.median(identity)), near_copies=float(np.mean(identity >= 0.8)),
                   examples=texts[:5])
    return summary, valid


def descriptor_profile(generated: list[str], files: DataFiles, peptides: dict[str, int], seed: int
                       ) -> dict[str, dict[str, np.ndarray]]:
    heldout = files.heldout_amps.read_text(encoding="utf-8").split()
    sets = {"generated": generated, "heldout": heldout, "shuffled": shuffled(heldout, seed),
            "random": uniform_random([len(s) for s in heldout], seed + 1),
            "uniprot": [s for s, label in peptides.items() if label == 0]}
    if not generated:
        raise LabError("the fine-tuned model generated no valid peptide: train longer (drop --quick)")
    return {name: profile(seqs) for name, seqs in sets.items()}


Roc = dict[str, tuple[np.ndarray, np.ndarray, float]]  # classifier: (false positive rates, true positive rates, AUC)


def classifiers(run: Runner, files: DataFiles, runs: Path, settings: Settings, seed: int,
                parts: dict[str, dict[str, int]]) -> tuple[dict[str, Any], Roc, int]:
    """GPT-1 classifiers (pre-trained and random start) and the descriptor baseline, over seeds,
    all scored on the test split."""
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_curve
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from mlxgpt.classify import classification_metrics

    # the same shape and tokenizer as the pre-trained model, its weights left as initialised: one step at lr 1e-9
    # (train.py needs at least one) moves no weight by more than about 1e-9
    run(["train.py", "--data", files.pretrain, "--out", runs / "random-init", *MODEL_FLAGS, "--batch-size", "32",
         "--max-iters", "1", "--lr", "1e-9", "--min-lr", "0", "--warmup-iters", "0", "--eval-interval", "1",
         "--eval-iters", "1", "--format", "lines", "--no-ui", "--sample-tokens", "0", "--seed", str(seed),
         "--overwrite"], "random-init")
    test_texts, test_labels = list(parts["test"]), np.array(list(parts["test"].values()))
    length = (["--epochs", str(settings.classify_epochs)] if settings.classify_epochs
              else ["--max-iters", str(settings.classify_iters)])
    seeds = [seed + k for k in range(settings.classify_seeds)]
    per_seed: dict[str, list[dict[str, Any]]] = {}
    roc: Roc = {}

    def record(name: str, s: int, probs: np.ndarray) -> None:
        metrics = classification_metrics(test_labels, probs)
        per_seed.setdefault(name, []).append({"seed": s, **metrics})
        if s == seeds[0]:
            fpr, tpr, _ = roc_curve(test_labels, probs[:, 1])
            roc[name] = (fpr, tpr, metrics["roc_auc"])

    for s in seeds:
        for name, parent in (("GPT classifier, pre-trained", "pretrained"), ("GPT classifier, random init",
                                                                            "random-init")):
            directory = runs / f"classify-{parent}-seed{s}"
            run(["-m", "mlxgpt", "classify", "train", "--init-from", runs / parent, "--data", files.train_csv,
                 "--out", directory, "--test-fraction", "0.05", "--lr", f"{settings.classify_lr:g}", *length,
                 "--seed", str(s), "--overwrite"], f"classify-{parent}-seed{s}")
            output = run(["-m", "mlxgpt", "classify", "predict", "--checkpoint", directory, "--file", files.test_txt,
                          "--batch-size", "64"], f"predict-{parent}-seed{s}", echo=False)
            record(name, s, read_probabilities(output, test_texts))

    train_x, train_y = baseline_features(list(parts["train"])), np.array(list(parts["train"].values()))
    test_x = baseline_features(test_texts)
    for s in seeds:
        forest = RandomForestClassifier(n_estimators=settings.rf_trees, random_state=s, n_jobs=-1).fit(train_x, train_y)
        record("descriptors + random forest", s, forest.predict_proba(test_x))
        logistic = make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000)).fit(train_x, train_y)
        record("descriptors + logistic regression", s, logistic.predict_proba(test_x))
    summary = {name: {"seeds": rows, **{key: mean_sd([r[key] for r in rows]) for key in
                                        ("accuracy", "mcc", "roc_auc", "loss")}}
               for name, rows in per_seed.items()}
    return summary, roc, int(train_x.shape[1])


def targets(lm: dict[str, Any], gen: dict[str, Any], prof: dict[str, Any], cls: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets, each with the measured value and whether it is met."""
    moment = {name: prof[name]["moment"]["mean"] for name in prof}
    gap_generated = abs(moment["generated"] - moment["heldout"])
    gap_shuffled = abs(moment["shuffled"] - moment["heldout"])
    gpt_auc = cls["GPT classifier, pre-trained"]["roc_auc"]["mean"]
    baselines = {name: cls[name]["roc_auc"]["mean"] for name in cls if name.startswith("descriptors")}
    best_baseline = max(baselines, key=lambda n: baselines[n])
    return [
        {"target": "generated valid >= 95%", "measured": f"{gen['valid_fraction']:.1%}",
         "met": gen["valid_fraction"] >= 0.95},
        {"target": "generated unique >= 90%", "measured": f"{gen['unique_fraction']:.1%}",
         "met": gen["unique_fraction"] >= 0.90},
        {"target": "generated novel >= 90% (not among the training AMPs)",
         "measured": f"{gen['novel_vs_training_amps']:.1%}", "met": gen["novel_vs_training_amps"] >= 0.90},
        {"target": "generated mean hydrophobic moment closer to held-out AMPs than the shuffled baseline's",
         "measured": f"held-out {moment['heldout']:.3f}; generated {moment['generated']:.3f} (off by "
                     f"{gap_generated:.3f}); shuffled {moment['shuffled']:.3f} (off by {gap_shuffled:.3f})",
         "met": gap_generated < gap_shuffled},
        {"target": "pre-training lowers the held-out AMP loss at equal fine-tuning steps",
         "measured": f"{lm['finetuned']['loss']:.4f} (pre-trained, fine-tuned) vs {lm['scratch']['loss']:.4f} "
                     "(from scratch) nats/token", "met": lm["finetuned"]["loss"] < lm["scratch"]["loss"]},
        {"target": "GPT classifier ROC-AUC at or above the descriptor baseline",
         "measured": f"{gpt_auc:.4f} vs {baselines[best_baseline]:.4f} ({best_baseline}, the better baseline)",
         "met": gpt_auc >= baselines[best_baseline]},
    ]


def markdown(results: dict[str, Any]) -> str:
    """results.md: every table, and the pictures next to it."""
    meta, data, lm, gen = results["meta"], results["data"], results["language_models"], results["generation"]
    settings = meta["settings"]
    length = (f"{settings['classify_epochs']} epochs" if settings["classify_epochs"]
              else f"{settings['classify_iters']} steps")
    lines = [f"# Peptide lab results{' (--quick)' if meta['quick'] else ''}", "",
             f"`{meta['command']}` on {meta['machine']}, {meta['date']}: {meta['wall_seconds']:.0f} s wall time "
             f"(seed {meta['seed']}; data: {meta['data_source']}).", "",
             "## Data", "",
             f"{data['loaded']:,} peptides loaded ({data['loaded_amp']:,} AMPs); dropped: {data['dropped_length']:,} "
             f"outside length {MIN_LEN}-{MAX_LEN}, {data['dropped_residues']:,} with non-standard residues, "
             f"{data['dropped_duplicates']:,} rows repeating a sequence, {data['dropped_both_labels']:,} sequences "
             "labelled both AMP and non-AMP. "
             f"Kept {data['kept']:,} distinct peptides ({data['kept_amp']:,} AMPs), split by sequence:", "",
             "| split | peptides | AMPs | non-AMPs |", "|---|---:|---:|---:|"]
    for name in SPLIT:
        part = data["splits"][name]
        lines.append(f"| {name} | {part['peptides']:,} | {part['amps']:,} | {part['peptides'] - part['amps']:,} |")
    lines += ["", "## Language models: held-out AMP loss", "",
              f"Every model scored on the same {lm['finetuned']['examples']:,} held-out AMPs (the val split's; "
              f"{lm['finetuned']['tokens']:,} tokens, end tokens included) with `mlxgpt eval`. Pre-training: "
              f"{settings['pretrain_iters']:,} steps of 32 peptides, lr 1e-3 to 1e-4. The two AMP models: the same "
              f"recipe, at most {settings['amp_iters']:,} steps of 32, lr {rate(settings['amp_lr'])} to "
              f"{rate(settings['amp_lr'] / 10)}, stopping after 4 evaluations without improvement; each scored at its "
              "best checkpoint by its own val loss (the same 10% of the training AMPs for both).", "",
              "| model | steps run | held-out AMP loss (nats/token) | perplexity | nats/peptide |",
              "|---|---:|---:|---:|---:|"]
    names = {"pretrained": "pre-trained on all training peptides (no AMP fine-tuning)",
             "finetuned": "pre-trained, then fine-tuned on training AMPs",
             "scratch": "trained on training AMPs from scratch"}
    for key, label in names.items():
        row = lm[key]
        lines.append(f"| {label} | {row['steps']:,} | {row['loss']:.4f} | {row['perplexity']:.3f} | "
                     f"{row['per_example']:.2f} |")
    lines += ["", "![val loss during training](curves.png)", "", "## Generated peptides", "",
              f"{gen['n']:,} samples from the fine-tuned model (temperature {gen['temperature']:g}):", "",
              "| | value |", "|---|---:|",
              f"| valid ({MIN_LEN}-{MAX_LEN} standard residues) | {gen['valid_fraction']:.1%} |",
              f"| unique | {gen['unique_fraction']:.1%} |",
              f"| novel: not in the fine-tuning run's training split (`mlxgpt sample`'s report) | "
              f"{gen['novel_fraction']:.1%} |",
              f"| novel: not among any training AMP | {gen['novel_vs_training_amps']:.1%} |",
              "| novel: not anywhere in the data set (all splits, both classes) | "
              f"{gen['novel_vs_whole_dataset']:.1%} |",
              f"| identity to the nearest training example: mean, median | {gen['mean_identity']:.3f}, "
              f"{gen['median_identity']:.3f} |",
              f"| near-copies: identity 0.8 or more | {gen['near_copies']:.1%} |",
              "", "The first samples: " + ", ".join(f"`{t}`" for t in gen["examples"]) + ".",
              "", "Physico-chemical profile (mean ± sd; generated: the valid samples):", "",
              "| set | n | " + " | ".join(DESCRIPTORS.values()) + " |", "|---|---:|" + "---:|" * len(DESCRIPTORS)]
    for name, stats in results["profile"].items():
        lines.append(f"| {SETS[name]} | {stats['n']:,} | "
                     + " | ".join(shown(stats[key], 1 if key == "length" else 3) for key in DESCRIPTORS) + " |")
    lines += ["", "![descriptor histograms](profile.png)", "", "## AMP vs non-AMP classifiers (test split)", "",
              f"{data['splits']['test']['peptides']:,} test peptides; mean ± sd over seeds "
              f"{', '.join(str(s) for s in results['classification_seeds'])}. GPT classifiers: `mlxgpt classify "
              f"train`, {length} at lr {rate(settings['classify_lr'])}, on the training split less the 5% that "
              "classify holds out to monitor itself; random init: the same shape and tokenizer after one step at "
              f"lr 1e-9. Baselines: {results['baseline_features']} modlAMP descriptors (10 global ones, Eisenberg "
              "hydrophobicity and hydrophobic moment, pepCATS auto-correlation over 7 residues) of the whole "
              f"training split, into a random forest ({settings['rf_trees']} trees) or a standardised logistic "
              "regression (deterministic: no spread).", "",
              "| classifier | accuracy | MCC | ROC-AUC |", "|---|---:|---:|---:|"]
    for name, stats in results["classification"].items():
        lines.append(f"| {name} | {shown(stats['accuracy'])} | {shown(stats['mcc'])} | {shown(stats['roc_auc'])} |")
    lines += ["", "![ROC curves](roc.png)", "", "## Targets", "", "| target | measured | met |", "|---|---|---|"]
    for t in results["targets"]:
        lines.append(f"| {t['target']} | {t['measured']} | {'yes' if t['met'] else '**no**'} |")
    lines += ["", "## Commands", "", "```"] + [c["command"] for c in results["commands"]] + ["```", ""]
    return "\n".join(lines)


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores ({cpu})"


def study(args: argparse.Namespace, say: Callable[[str], None] = print) -> dict[str, Any]:
    started = time.perf_counter()
    settings = QUICK if args.quick else FULL
    check_dependencies()
    out = Path(args.out).expanduser().resolve()
    prepare_out(out)
    run = Runner(out / "logs", say)
    timings: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        timings[name] = round(time.perf_counter() - clock, 1)
        clock = time.perf_counter()

    if args.fake_data:
        seqs, labels = made_up_peptides(args.fake_data, args.seed)
        source = f"{args.fake_data} made-up sequences per class (--fake-data)"
    else:
        seqs, labels = load_modlamp()
        source = "modlAMP's AMPvsUniProt (APD3 AMPs vs UniProt)"
    peptides, counts = clean(seqs, labels)
    parts = split(peptides, args.seed)
    files = write_data(out / "data", parts)
    counts["splits"] = {name: {"peptides": len(part), "amps": sum(part.values())} for name, part in parts.items()}
    say(f"data: {counts['kept']:,} distinct peptides ({counts['kept_amp']:,} AMPs) -> "
        + ", ".join(f"{name} {c['peptides']:,}" for name, c in counts["splits"].items())
        + f"; files in {shown_path(out / 'data')}")
    lap("data")

    runs = out / "runs"
    lm = language_models(run, files, runs, settings, args.seed)
    lap("language_models")
    gen, valid = generation(run, files, out, runs, settings, args.seed, peptides)
    lap("generation")
    values = descriptor_profile(valid, files, peptides, args.seed)
    prof = {name: {"n": len(v["length"]), **{key: mean_sd(v[key]) for key in DESCRIPTORS}}
            for name, v in values.items()}
    lap("profile")
    cls, roc, n_features = classifiers(run, files, runs, settings, args.seed, parts)
    lap("classification")

    pictures = [draw_profile(values, out / "profile.png"),
                draw_curves({name: eval_curve(runs / name) for name in ("pretrained", "finetuned", "scratch")},
                            out / "curves.png"),
                draw_roc(roc, out / "roc.png")]
    lap("pictures")
    command = " ".join(["python examples/peptides.py", *(["--quick"] if args.quick else []),
                        *([f"--fake-data {args.fake_data}"] if args.fake_data else []),
                        *([f"--seed {args.seed}"] if args.seed else []),
                        *([] if args.default_out else [f"--out {shlex.quote(args.out)}"])])
    results = {
        "meta": {"command": command, "machine": machine(), "date": datetime.date.today().isoformat(),
                 "python": platform.python_version(), "seed": args.seed, "quick": args.quick,
                 "data_source": source, "settings": asdict(settings), "timings_s": timings,
                 "wall_seconds": round(time.perf_counter() - started, 1)},
        "data": counts, "language_models": lm, "generation": gen, "profile": prof,
        "classification_seeds": [args.seed + k for k in range(settings.classify_seeds)],
        "baseline_features": n_features, "classification": cls,
        "targets": targets(lm, gen, prof, cls), "pictures": [p.name for p in pictures], "commands": run.commands}
    from mlxgpt.files import write_atomic

    write_atomic(out / "results.json", json.dumps(results, indent=1, allow_nan=False) + "\n")
    write_atomic(out / "results.md", markdown(results))
    say(f"\n{markdown(results)}")
    say(f"wrote {shown_path(out / 'results.json')}, {shown_path(out / 'results.md')} and "
        f"{', '.join(p.name for p in pictures)} in {shown_path(out)} ({results['meta']['wall_seconds']:.0f} s)")
    return results


DEFAULT_OUT = "out/peptides"
QUICK_OUT = "out/peptides-quick"  # a --quick check never overwrites a full run's results


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="The peptide lab: pre-train a char GPT on peptides, fine-tune it on "
                                            "antimicrobial peptides, generate and profile new ones, and classify AMP "
                                            "vs non-AMP against a descriptor baseline. Needs: " + INSTALL)
    p.add_argument("--quick", action="store_true", help="tiny steps: checks the whole pipeline in about a minute")
    p.add_argument("--out", help=f"directory for data, runs and results (default {DEFAULT_OUT}; with --quick "
                                 f"{QUICK_OUT})")
    p.add_argument("--seed", type=int, default=0, help="seed of the split, the training runs, the samples and the "
                                                       "baselines (classifiers use seed, seed+1, seed+2)")
    p.add_argument("--fake-data", type=int, metavar="N",
                   help="replace modlAMP's peptides with N made-up sequences per class (for tests)")
    args = p.parse_args(argv)
    default_out = args.out is None
    args.out = (QUICK_OUT if args.quick else DEFAULT_OUT) if default_out else args.out
    args.default_out = default_out
    if args.fake_data is not None and args.fake_data < 20:
        p.error("--fake-data needs at least 20 sequences per class")
    if args.seed < 0:
        p.error("--seed must be 0 or more")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        study(args)
    except LabError as exc:
        print(f"peptides: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("peptides: stopped (Ctrl-C); run the command again to start over", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
