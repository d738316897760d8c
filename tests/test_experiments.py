"""The seed experiment: mlxgpt and nanoGPT's procedure train the same setting from
several seeds, and each trained model is scored on the whole validation split.

The real CLI runs on a generated text with the suite's tiny shapes; the nanoGPT
half needs PyTorch and is left out (with a note) when it is missing.
"""

from __future__ import annotations

import importlib.util
import json
import math

import numpy as np
import pytest

from conftest import TINY_BATCH, TINY_MODEL, assert_clean_failure, grammar_text, run_cli
from experiments import first_minutes
from experiments.nanogpt_train import setting_flags
from experiments.seeds import summarize

HAVE_TORCH = importlib.util.find_spec("torch") is not None
TINY_SETTING = [f"--{k.replace('_', '-')}={v}" for k, v in TINY_MODEL.items()] + [f"--batch-size={TINY_BATCH}"]


def test_summarize_counts_the_seeds_at_or_below_the_threshold():
    s = summarize([1.88, 1.89, 1.90, 1.93], threshold=1.89)
    assert s["n"] == 4 and s["at_or_below"] == 2
    assert s["mean"] == pytest.approx(1.9)
    assert s["sd"] == pytest.approx(np.std([1.88, 1.89, 1.90, 1.93], ddof=1))
    assert (s["min"], s["max"]) == (1.88, 1.93)


def test_setting_flags_pass_on_only_what_was_given():
    from argparse import Namespace

    args = Namespace(n_layer=2, n_head=None, n_embd=32, block_size=None, dropout=0.1, bias=False,
                     batch_size=None, max_iters=50)
    assert setting_flags(args) == ["--n-layer", "2", "--n-embd", "32", "--dropout", "0.1", "--no-bias",
                                   "--max-iters", "50"]


@pytest.fixture(scope="module")
def seed_study(tmp_path_factory):
    root = tmp_path_factory.mktemp("seeds")
    data = root / "grammar.txt"
    data.write_text(grammar_text(600), encoding="utf-8")
    out = root / "study"
    result = run_cli("-m", "experiments.seeds", "--data", data, "--seeds", "1", "2", "--max-iters", "150",
                     *TINY_SETTING, "--out", out)
    assert result.returncode == 0, result.stderr
    return json.loads((out / "results.json").read_text(encoding="utf-8")), out, data, result


def test_every_seed_of_every_procedure_is_trained_and_scored(seed_study):
    results, out, _, _ = seed_study
    procedures = ["mlxgpt", "nanogpt"] if HAVE_TORCH else ["mlxgpt"]
    assert list(results["runs"]) == procedures
    assert results["model"]["n_layer"] == TINY_MODEL["n_layer"] and results["max_iters"] == 150
    untrained = math.log(results["model"]["vocab_size"])
    for procedure in procedures:
        rows = results["runs"][procedure]
        assert set(rows) == {"1", "2"}
        for row in rows.values():
            assert row["iter"] == 150
            # learned something real: far below the untrained ln(vocab) ...
            assert row["val_whole"] < untrained - 1.0
            # ... and the whole-split score of the saved model agrees with the estimate
            # the run printed (a mis-loaded model would score near ln(vocab) or worse)
            assert abs(row["val_whole"] - row["val_estimate"]) < 0.15
        summary = results["summary"][procedure]["val_whole"]
        assert summary["n"] == 2
        assert summary["mean"] == pytest.approx(np.mean([r["val_whole"] for r in rows.values()]))
    table = (out / "results.md").read_text(encoding="utf-8")
    assert "| 1 |" in table and "seeds ≤ 1.89" in table


def test_seeds_differ_and_runs_repeat(seed_study):
    """Two seeds give two models; the same seed again gives the same model."""
    results, out, data, _ = seed_study
    rows = results["runs"]["mlxgpt"]
    assert rows["1"]["val_whole"] != rows["2"]["val_whole"]
    again = run_cli("-m", "experiments.seeds", "--data", data, "--seeds", "1", "--max-iters", "150",
                    "--procedures", "mlxgpt", *TINY_SETTING, "--out", out / "again")
    assert again.returncode == 0, again.stderr
    repeat = json.loads((out / "again" / "results.json").read_text(encoding="utf-8"))
    assert repeat["runs"]["mlxgpt"]["1"]["val_whole"] == rows["1"]["val_whole"]


@pytest.mark.skipif(not HAVE_TORCH, reason="nanoGPT's procedure runs in PyTorch: pip install -e '.[bench]'")
def test_nanogpt_procedure_runs_without_mlxgpts_blas(seed_study):
    """PyTorch must not share a process with mlxgpt's OpenBLAS (it would slow ~3x)."""
    _, out, data, _ = seed_study
    result = run_cli("-m", "experiments.nanogpt_train", "--data", data, "--seed", "3", "--max-iters", "20",
                     *TINY_SETTING, "--out", out / "nano3")
    assert result.returncode == 0, result.stderr
    report = json.loads((out / "nano3" / "result.json").read_text(encoding="utf-8"))
    assert report["iter"] == 20 and math.isfinite(report["val_estimate"])
    assert report["mlxgpt_blas"] == "reference"  # the command restarted itself without our OpenBLAS
    with np.load(out / "nano3" / "weights.npz", allow_pickle=False) as weights:
        assert weights["wte.weight"].shape == (report["model"]["vocab_size"], TINY_MODEL["n_embd"])


def test_bad_data_is_one_line(tmp_path):
    for module in ("experiments.seeds", "experiments.nanogpt_train", "experiments.tokenizers"):
        result = run_cli("-m", module, "--data", tmp_path / "missing.txt", "--out", tmp_path / "out")
        assert_clean_failure(result, "missing.txt")


def test_the_experiments_are_not_part_of_the_installed_package():
    """They may import torch: the package holds the product only."""
    assert importlib.util.find_spec("mlxgpt.experiments") is None


def test_first_minutes_finds_the_moments_a_user_sees_in_the_plain_log():
    """The times of the compiling note, the iter-0 eval and step 1, read from lines as train.py prints them."""
    from mlxgpt.events import EvalDone, StepLogged
    from mlxgpt.ui.format import COMPILING_NOTE
    from mlxgpt.ui.plain import format_event

    def step(i):
        return format_event(StepLogged(iter=i, max_iters=300, train_loss=3.0, lr=1e-3, grad_norm=1.0, ms_per_iter=50.0,
                                       tokens_per_s=1e4, elapsed_s=1.0, active_memory_mb=1.0, peak_memory_mb=1.0))

    def evaluation(i):
        return format_event(EvalDone(iter=i, train_loss=3.0, val_loss=3.1, val_bpc=4.4, lr=1e-3, tokens_per_s=0.0,
                                     best_val_loss=3.1, is_best=True))

    lines = [(0.5, "mlxgpt: preset cpu-speedrun (default on CPU; choose with --preset) on CPU"),
             (0.6, COMPILING_NOTE), (4.0, evaluation(0)), (9.0, step(1)), (9.5, step(10)), (10.0, evaluation(10))]
    assert first_minutes.startup_times(lines) == dict(compiling_note_s=0.6, eval0_s=4.0, iter1_s=9.0)
    # a warm cache prints no note; step 11 and eval 10 are not step 1 and eval 0
    warm = [(0.4, evaluation(10)), (1.0, step(11)), (1.1, evaluation(0)), (1.2, step(1))]
    assert first_minutes.startup_times(warm) == dict(compiling_note_s=None, eval0_s=1.1, iter1_s=1.2)


def test_first_minutes_table_and_commands():
    assert first_minutes.shown(["/usr/bin/python3", "train.py", "--data", "shakespeare", "--no-ui",
                                "--out", "/tmp/x"]) == "python train.py --data shakespeare --no-ui"
    machine = dict(cpu="Some CPU", cores=2, system="Linux x86_64", python="3.11", mlx="0.0", date="2026-12-01T10:00:00")
    step = dict(command="python train.py --data shakespeare --max-iters 2 --no-ui", exit_s=14.3)
    run = dict(command="python train.py --data shakespeare --no-ui", preset="cpu-speedrun", iters=1500,
               reason="time budget", train_seconds=119.6, wall_seconds=126.2, val_estimate=1.7412, val_whole=1.7333)
    results = dict(machine=machine, quick=False, load=2, blas="openblas",
                   first_step=dict(cold=dict(step, compiling_note_s=1.7, eval0_s=4.6, iter1_s=12.5),
                                   warm=dict(step, compiling_note_s=None, eval0_s=1.3, iter1_s=1.8)),
                   default=run, speedrun=dict(run, iters=1200), nanogpt=dict(
                       command="python -m experiments.nanogpt_train --data shakespeare --preset baby",
                       preset="baby", iter=2000, train_seconds=118.0, wall_seconds=125.0, val_estimate=1.8857,
                       val_whole=1.8801))
    table = first_minutes.markdown(results)
    assert table.startswith("2026-12-01: Some CPU, 2 cores") and "BLAS openblas" in table and "--quick" not in table
    assert "| first run ever (empty kernel cache) | 1.7 s | 4.6 s | **12.5 s** | 14.3 s |" in table
    assert "| second run (warm kernel cache) | — | 1.3 s | **1.8 s** |" in table
    assert "| 1500 (time budget) | 120 s | 126 s | 1.7412 | **1.7333** |" in table
    assert "| CPU speed-run, 2 busy processes |" in table and "| 1200 (time budget) |" in table
    assert "| nanoGPT's procedure | `python -m experiments.nanogpt_train" in table and "| 2000 |" in table
    del results["nanogpt"]
    quick = first_minutes.markdown({**results, "quick": True})
    assert "nanoGPT" not in quick and "**--quick**" in quick


def test_first_minutes_busy_processes_are_always_stopped():
    with pytest.raises(KeyboardInterrupt):
        with first_minutes.busy_processes(2) as processes:
            assert len(processes) == 2 and all(p.poll() is None for p in processes)
            raise KeyboardInterrupt
    assert all(p.returncode is not None for p in processes)


def test_first_minutes_help():
    result = run_cli("-m", "experiments.first_minutes", "--help")
    assert result.returncode == 0 and "--quick" in result.stdout and "--load" in result.stdout


# ---------------------------------------------------------------- the ablation (experiments/ablate.py)


def test_ablation_pairs_each_option_with_the_base_on_the_same_seed():
    from experiments.ablate import summarise, verdict
    rows = [dict(name=name, seed=seed, val_whole=loss, iters=100, tokens_per_s=1000.0)
            for name, seed, loss in [("base", 1, 2.0), ("base", 2, 2.2), ("x", 1, 1.9), ("x", 2, 2.1),
                                     ("y", 1, 2.05), ("y", 2, 2.15)]]
    s = summarise(rows)
    assert s["base"]["mean"] == pytest.approx(2.1) and "diff" not in s["base"]
    # x is 0.1 better on both seeds: a paired difference with no spread, though the seeds differ by 0.2
    assert s["x"]["diff"] == pytest.approx(-0.1) and s["x"]["diff_se"] == pytest.approx(0, abs=1e-9)
    assert verdict(s["x"]) == "helps"
    assert s["y"]["diff"] == pytest.approx(0.0, abs=1e-9) and s["y"]["diff_se"] == pytest.approx(0.05)
    assert verdict(s["y"]) == "within noise"


def test_ablation_base_resets_every_switch_a_preset_could_set():
    from experiments.ablate import BASE, assert_every_switch_is_reset, configurations
    assert_every_switch_is_reset()
    configs = configurations(["base", "rope", "combination"], ["muon", "relu2"])
    assert configs == {"base": [], "rope": ["--pos", "rope"], "combination": ["--optimizer", "muon", "--mlp", "relu2"]}
    assert "--optimizer" in BASE and "adamw" in BASE


def test_ablation_runs_scores_and_writes_its_table(tmp_path, text_file):
    out = tmp_path / "ablate"
    result = run_cli("-m", "experiments.ablate", "--data", text_file, "--budget", "1.5", "--seeds", "2",
                     "--only", "base", "relu2", "--out", out, timeout=600)
    assert result.returncode == 0, result.stderr
    saved = json.loads((out / "ablate.json").read_text())
    assert len(saved["runs"]) == 4 and {r["seed"] for r in saved["runs"]} == {1337, 1}
    assert all(math.isfinite(r["val_whole"]) and r["reason"] == "time budget" for r in saved["runs"])
    assert "diff_se" in saved["summary"]["relu2"]
    table = (out / "ablate.md").read_text()
    assert "| relu2 | `--mlp relu2` |" in table and "Δ vs base" in table
    # --keep: a run whose directory was deleted is trained again, the others are reused as they were
    import shutil
    shutil.rmtree(out / "runs" / "relu2-seed1")
    again = run_cli("-m", "experiments.ablate", "--data", text_file, "--budget", "1.5", "--seeds", "2",
                    "--only", "base", "relu2", "--out", out, "--keep", timeout=600)
    assert again.returncode == 0, again.stderr
    assert again.stdout.count("kept from the earlier ablation") == 3 and "relu2, seed 1:" in again.stdout
    redone = json.loads((out / "ablate.json").read_text())["runs"]
    assert [r for r in redone if r["name"] == "base"] == [r for r in saved["runs"] if r["name"] == "base"]
    assert (out / "runs" / "relu2-seed1").is_dir()
