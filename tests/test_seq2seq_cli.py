"""`mlxgpt translate train|run|eval` through the real CLI: a run that learns, resumes, translates
and scores; every mistake one line. Pairs made here (reversed syllable strings), and real number
words where num2words is installed."""

from __future__ import annotations

import json
import random

import pytest

from conftest import assert_clean_failure, run_cli
from mlxgpt.ui.metrics import read_metrics

TINY = ["--encoder-layers", "1", "--decoder-layers", "1", "--n-head", "2", "--n-embd", "32", "--batch-size", "32",
        "--eval-iters", "2", "--no-ui"]


@pytest.fixture(scope="module")
def pairs_file(tmp_path_factory):
    """source<TAB>target: a syllable string and the same syllables reversed (needs the source)."""
    rng = random.Random(0)
    syllables = ["ba", "ku", "mi", "to", "ne", "ra"]
    rows = set()
    while len(rows) < 400:
        words = [rng.choice(syllables) for _ in range(rng.randint(2, 4))]
        rows.add(("".join(words), "".join(reversed(words))))
    path = tmp_path_factory.mktemp("pairs") / "pairs.tsv"
    path.write_text("".join(f"{s}\t{t}\n" for s, t in sorted(rows)), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def translate_run(pairs_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("translate") / "run"
    result = run_cli("-m", "mlxgpt", "translate", "train", "--pairs", pairs_file, "--out", out, *TINY,
                     "--max-iters", "300", "--eval-interval", "150", "--lr", "3e-3", "--warmup-iters", "20")
    assert result.returncode == 0, result.stderr
    return out, result.stdout


def test_a_run_learns_and_reports_the_held_out_pairs(translate_run):
    out, stdout = translate_run
    evals = [r for r in read_metrics(out / "metrics.jsonl") if r["event"] == "eval"]
    assert [e["iter"] for e in evals] == [0, 150, 300] and evals[-1]["val_loss"] < 0.5 * evals[0]["val_loss"]
    assert "encoder-decoder, 1 encoder + 1 decoder layers" in stdout
    assert "sample at iter 300:" in stdout and "reference:" in stdout  # source → prediction, reference
    assert "held-out (40 pairs, greedy): exact match" in stdout
    assert json.loads((out / "best" / "config.json").read_text())["architecture"] == "encoder-decoder"


def test_run_eval_and_beam(translate_run, tmp_path):
    out, _ = translate_run
    result = run_cli("-m", "mlxgpt", "translate", "run", "--checkpoint", out, "bakumi", "tone", "--beam", "3")
    assert result.returncode == 0, result.stderr
    assert [line.split(" → ")[0] for line in result.stdout.splitlines()] == ["bakumi", "tone"]
    scored = run_cli("-m", "mlxgpt", "translate", "eval", "--checkpoint", out, "--json", tmp_path / "s.json")
    assert scored.returncode == 0, scored.stderr
    numbers = json.loads((tmp_path / "s.json").read_text())
    assert numbers["pairs"] == 40 and 0 <= numbers["exact_match"] <= 1 and numbers["decoding"] == "greedy"
    assert f"exact match {numbers['exact_match']:.1%}" in scored.stdout


def test_resume_continues_the_run(translate_run, tmp_path):
    import shutil

    out, _ = translate_run
    copy = tmp_path / "run"
    shutil.copytree(out, copy)
    result = run_cli("-m", "mlxgpt", "translate", "train", "--resume", "--out", copy, "--max-iters", "320", "--no-ui")
    assert result.returncode == 0, result.stderr
    assert "resumed" in result.stdout and "completed at iter 320" in result.stdout
    assert_clean_failure(run_cli("-m", "mlxgpt", "translate", "train", "--resume", "--out", copy, "--n-embd", "64"),
                         "cannot change the model's shape")


def test_mistakes_are_one_line(translate_run, trained_run, pairs_file, tmp_path):
    out, _ = translate_run
    bad = tmp_path / "bad.tsv"
    bad.write_text("one\tun\ntwo deux\n", encoding="utf-8")
    translate = ("-m", "mlxgpt", "translate")
    assert_clean_failure(run_cli(*translate, "train", "--pairs", bad, "--out", tmp_path / "a"), "line 2")
    assert_clean_failure(run_cli(*translate, "train", "--pairs", "numbers:en-xx", "--out", tmp_path / "b"), "xx")
    assert_clean_failure(run_cli(*translate, "train", "--pairs", pairs_file), "--out")
    assert_clean_failure(run_cli(*translate, "train", "--pairs", pairs_file, "--out", out), "--resume")
    assert_clean_failure(run_cli(*translate, "run", "--checkpoint", trained_run, "x"), "holds a GPT")
    assert_clean_failure(run_cli("generate.py", "--checkpoint", out), "encoder-decoder")
    assert_clean_failure(run_cli(*translate, "run", "--checkpoint", out, "bakumi", "--beam", "0"), "--beam")
    assert_clean_failure(run_cli(*translate, "run", "--checkpoint", out, "zzz"), "'z'")


def test_number_words_train_from_the_command_line(tmp_path):
    pytest.importorskip("num2words", reason="needs the translate extra")
    out = tmp_path / "numbers"
    result = run_cli("-m", "mlxgpt", "translate", "train", "--out", out, *TINY, "--max-iters", "60",
                     "--eval-interval", "60")
    assert result.returncode == 0, result.stderr
    assert "held-out (1,000 pairs, greedy)" in result.stdout
    config = json.loads((out / "best" / "config.json").read_text())
    assert config["data"] == "numbers:en-fr" and config["tokenizer"]["kind"] == "pairs"
