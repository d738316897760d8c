"""GPT-1 classification (mlxgpt/classify.py): the metrics against hand-computed values, the pieces
(CSV, split, padding, losses) in process, and fine-tuning and prediction through the real CLI on
made-up texts: sequences rich in "a" (class "ay") or in "b" (class "bee")."""

from __future__ import annotations

import csv
import json
import math
import random
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
from conftest import TINY_FLAGS, TINY_MODEL, assert_clean_failure, run_cli

from mlxgpt.classify import (Classifier, average_ranks, binary_auc, classify_loss, lm_loss, matthews_corrcoef,
                             pad_rows, read_labelled_csv, roc_auc, split_by_text)
from mlxgpt.config import ModelArgs
from mlxgpt.errors import MlxgptError
from mlxgpt.model import GPT

# ---------------------------------------------------------------- metrics, by hand


def test_mcc_binary_is_matthews():
    labels = np.array([1, 1, 1, 0, 0, 0, 0, 1])
    predicted = np.array([1, 1, 0, 0, 0, 1, 0, 1])  # TP 3, FN 1, TN 3, FP 1: (9 - 1) / sqrt(4^4) = 0.5
    assert matthews_corrcoef(labels, predicted, 2) == pytest.approx(0.5)
    assert matthews_corrcoef(labels, labels, 2) == pytest.approx(1.0)
    assert matthews_corrcoef(labels, 1 - labels, 2) == pytest.approx(-1.0)
    assert matthews_corrcoef(labels, np.ones(8, dtype=int), 2) == 0.0  # one class predicted: undefined -> 0


def test_mcc_multiclass_is_gorodkins():
    labels = np.array([0, 0, 1, 1, 2, 2])
    predicted = np.array([0, 1, 1, 1, 2, 0])
    # confusion rows [1 1 0] [0 2 0] [1 0 1]: t = (2, 2, 2), p = (2, 3, 1), c = 4, s = 6
    # (4*6 - 12) / sqrt((36 - 14) * (36 - 12)) = 12 / sqrt(528)
    assert matthews_corrcoef(labels, predicted, 3) == pytest.approx(12 / math.sqrt(528))
    assert matthews_corrcoef(labels, labels, 3) == pytest.approx(1.0)


def test_average_ranks_share_ties():
    assert average_ranks(np.array([5.0, 1.0, 5.0])).tolist() == [2.5, 1.0, 2.5]
    assert average_ranks(np.array([3.0, 3.0, 3.0])).tolist() == [2.0, 2.0, 2.0]
    assert average_ranks(np.array([0.4, 0.1, 0.3, 0.2])).tolist() == [4.0, 1.0, 3.0, 2.0]


@pytest.mark.parametrize("labels, scores, expected", [
    ([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8], 3 / 4),  # 0.35 beats 0.1 but not 0.4; 0.8 beats both
    ([0, 1, 0, 1], [0.5, 0.5, 0.2, 0.9], 3.5 / 4),  # a positive tied with a negative counts half
    ([0, 0, 1, 1], [0.1, 0.2, 0.3, 0.4], 1.0),  # perfect ranking
    ([0, 0, 1, 1], [0.4, 0.3, 0.2, 0.1], 0.0),  # inverted
    ([0, 1, 0, 1], [0.5, 0.5, 0.5, 0.5], 0.5),  # all tied: chance
])
def test_binary_auc(labels, scores, expected):
    assert binary_auc(np.array(labels) == 1, np.array(scores)) == pytest.approx(expected)


def test_auc_is_undefined_without_both_classes():
    assert binary_auc(np.array([True, True]), np.array([0.2, 0.9])) is None
    assert roc_auc(np.array([1, 1]), np.array([[0.8, 0.2], [0.1, 0.9]])) is None


def test_roc_auc_binary_reads_class_one():
    probs = np.array([[0.9, 0.1], [0.6, 0.4], [0.65, 0.35], [0.2, 0.8]])
    assert roc_auc(np.array([0, 0, 1, 1]), probs) == pytest.approx(3 / 4)


def test_roc_auc_multiclass_is_the_macro_one_vs_rest_mean():
    labels = np.array([0, 1, 2, 2])
    probs = np.array([[0.6, 0.3, 0.1], [0.5, 0.4, 0.1], [0.2, 0.3, 0.5], [0.3, 0.4, 0.3]])
    # class 0: 0.6 beats 0.5, 0.2, 0.3 -> 1; class 1: 0.4 beats 0.3, 0.3, ties 0.4 -> 2.5/3; class 2: 4/4
    assert roc_auc(labels, probs) == pytest.approx((1 + 2.5 / 3 + 1) / 3)
    # a class the test set lacks is left out of the mean
    assert roc_auc(np.array([0, 0, 1]), np.array([[0.7, 0.2, 0.1], [0.6, 0.3, 0.1], [0.2, 0.7, 0.1]])) == 1.0


# ---------------------------------------------------------------- the pieces, in process


def _write_csv(path: Path, rows: list[list[str]]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows(rows)
    return path


def test_csv_labels_sort_as_numbers_and_extra_columns_are_ignored(tmp_path):
    path = _write_csv(tmp_path / "l.csv", [["id", "text", "label"], ["1", "ab, c", "10"], ["2", "ba", "2"],
                                           ["3", "cc", "10"]])
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())  # a BOM, as Excel writes
    data = read_labelled_csv(path)
    assert data.classes == ["2", "10"] and data.labels == [1, 0, 1] and data.texts == ["ab, c", "ba", "cc"]
    assert data.places[0] == f"line 2 of {path}"


def test_the_same_text_with_two_labels_is_refused(tmp_path):
    path = _write_csv(tmp_path / "l.csv", [["text", "label"], ["ab", "x"], ["cd", "y"], ["ab", "y"]])
    with pytest.raises(MlxgptError, match="line 4 .* the label 'y', but line 2 .* gave it 'x'"):
        read_labelled_csv(path)


def test_split_keeps_every_copy_of_a_text_on_one_side():
    texts = [f"t{i % 7}" for i in range(40)]  # 7 distinct texts, each repeated
    train, test = split_by_text(texts, 0.3, seed=3)
    assert sorted([*train, *test]) == list(range(40))
    assert not {texts[i] for i in train} & {texts[i] for i in test}
    assert len({texts[i] for i in test}) == 2  # round(7 * 0.3)
    assert (split_by_text(texts, 0.3, seed=3)[1] == test).all()  # seeded


def _tiny_classifier(n_classes: int = 3) -> Classifier:
    mx.random.seed(0)
    return Classifier(GPT(ModelArgs(**TINY_MODEL, vocab_size=11)), n_classes)


def test_padding_changes_no_row():
    """Each row's class logits and language-model loss are the same alone as in a padded batch."""
    model = _tiny_classifier()
    model.eval()
    rows = [[1, 2, 3, 1], [1, 5, 6, 7, 8, 9, 1], [1, 4, 1]]
    idx, lengths = pad_rows(rows)
    assert idx.shape == (3, 7) and lengths.tolist() == [4, 7, 3]
    together, hidden = model(idx, lengths)
    alone = [model(*pad_rows([row]))[0][0] for row in rows]
    assert np.allclose(np.array(together), np.array(mx.stack(alone)), atol=1e-6)
    # the batch's LM loss is the mean over real targets: each row's mean weighted by its targets
    per_row = [lm_loss(model.gpt, model(*pad_rows([row]))[1], *pad_rows([row])).item() for row in rows]
    weighted = sum(loss * (len(row) - 1) for loss, row in zip(per_row, rows)) / sum(len(row) - 1 for row in rows)
    assert lm_loss(model.gpt, hidden, idx, lengths).item() == pytest.approx(weighted, rel=1e-5)


def test_loss_is_classification_plus_weighted_lm():
    model = _tiny_classifier()
    idx, lengths = pad_rows([[1, 2, 3, 1], [1, 4, 1]])
    labels = mx.array([0, 2])
    total, classification, language = classify_loss(model, idx, lengths, labels, lm_weight=0.5)
    assert total.item() == pytest.approx(classification.item() + 0.5 * language.item(), rel=1e-6)
    off, classification_only, _ = classify_loss(model, idx, lengths, labels, lm_weight=0.0)
    assert off.item() == pytest.approx(classification.item(), rel=1e-6) == classification_only.item()


# ---------------------------------------------------------------- through the CLI


def _sequence(rng: random.Random, major: str) -> str:
    """6-12 letters, most of them `major`: the class is learnable from the letters."""
    return "".join(major if rng.random() < 0.6 else rng.choice("abcd") for _ in range(rng.randint(6, 12)))


def classify(*args, **kwargs):
    return run_cli("-m", "mlxgpt", "classify", *args, **kwargs)


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory) -> Path:
    """A tiny GPT pretrained on made-up sequences, one example per line (150 steps, ~2 s)."""
    root = tmp_path_factory.mktemp("classify-pre")
    rng = random.Random(1)
    text = root / "sequences.txt"
    text.write_text("".join(_sequence(rng, rng.choice("ab")) + "\n" for _ in range(800)), encoding="utf-8")
    result = run_cli("train.py", "--data", text, "--format", "lines", "--out", root / "run", *TINY_FLAGS,
                     "--max-iters", "150", "--eval-interval", "150", "--eval-iters", "4", "--warmup-iters", "15",
                     "--lr", "3e-3", "--min-lr", "3e-4")
    assert result.returncode == 0, result.stderr
    return root / "run"


@pytest.fixture(scope="module")
def labelled(tmp_path_factory) -> Path:
    rng = random.Random(2)
    rows = [["text", "label"]]
    for _ in range(200):
        major = rng.choice("ab")
        rows.append([_sequence(rng, major), {"a": "ay", "b": "bee"}[major]])
    return _write_csv(tmp_path_factory.mktemp("classify-data") / "labels.csv", rows)


@pytest.fixture(scope="module")
def fine_tuned(pretrained, labelled, tmp_path_factory):
    out = tmp_path_factory.mktemp("classify-run") / "cls"
    result = classify("train", "--init-from", pretrained, "--data", labelled, "--out", out, "--lr", "1e-3",
                      "--epochs", "3", "--batch-size", "16")
    assert result.returncode == 0, result.stderr
    return out, result


def test_fine_tuning_learns_the_label(fine_tuned):
    out, result = fine_tuned
    assert "Traceback" not in result.stderr
    report = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    steps = [e["step"] for e in report["evals"]]
    assert report["labels"] == ["ay", "bee"] and steps == [steps[0], 2 * steps[0], 3 * steps[0]]  # per epoch
    assert report["evals"][-1]["test"] == report["test"]
    assert report["test"]["accuracy"] >= 0.8 and report["test"]["roc_auc"] >= 0.8
    assert report["test"]["mcc"] > 0.5
    for line in ("accuracy", "MCC", "ROC-AUC", "held-out test split"):
        assert line in result.stdout


def test_the_checkpoint_is_a_gpt_checkpoint_plus_the_head(fine_tuned):
    import mlxgpt

    out, _ = fine_tuned
    checkpoint = out / "latest"
    info = json.loads((checkpoint / "classifier.json").read_text(encoding="utf-8"))
    assert info["labels"] == ["ay", "bee"] and info["lm_weight"] == 0.5 and info["parent"].endswith("best")
    assert set(info["test_metrics"]) == {"loss", "accuracy", "mcc", "roc_auc"}
    head = mx.load(str(checkpoint / "head.safetensors"))
    assert head["weight"].shape == (2, TINY_MODEL["n_embd"]) and head["bias"].shape == (2,)
    model, tokenizer = mlxgpt.load(out)  # the fine-tuned GPT, usable on its own
    assert model.args.block_size == TINY_MODEL["block_size"] and tokenizer.encode("\n")


def _probability_rows(stdout: str) -> list[tuple[list[float], str]]:
    header, *lines = stdout.splitlines()
    assert header.split() == ["P(ay)", "P(bee)", "text"]
    return [([float(p) for p in line.split()[:2]], line.split()[2]) for line in lines]


def test_predict_prints_probabilities(fine_tuned, tmp_path):
    out, _ = fine_tuned
    result = classify("predict", "--checkpoint", out, "aaaabaaaa", "bbbbabbbb")
    assert result.returncode == 0, result.stderr
    rows = _probability_rows(result.stdout)
    assert [text for _, text in rows] == ["aaaabaaaa", "bbbbabbbb"]
    for probs, _ in rows:
        assert sum(probs) == pytest.approx(1.0, abs=1e-3)
    assert rows[0][0][0] > 0.5 > rows[1][0][0]  # a-rich is "ay", b-rich is "bee"

    texts = tmp_path / "texts.txt"
    texts.write_text("aaaabaaaa\n\nbbbbabbbb\n", encoding="utf-8")  # the blank line is skipped
    from_file = classify("predict", "--checkpoint", out, "--file", texts)
    assert from_file.returncode == 0 and from_file.stdout == result.stdout


def test_a_damaged_head_is_one_line(fine_tuned, tmp_path):
    import shutil

    out, _ = fine_tuned
    copy = tmp_path / "cls"
    shutil.copytree(out, copy)
    info_path = copy / "latest" / "classifier.json"
    info = json.loads(info_path.read_text(encoding="utf-8"))
    info_path.write_text(json.dumps({**info, "labels": ["ay", "bee", "sea"]}), encoding="utf-8")
    result = classify("predict", "--checkpoint", copy, "abc")
    assert_clean_failure(result, "head.safetensors", "has shape [2", "needs [3")  # a head for 2 classes, not 3


@pytest.mark.parametrize("rows, fragments", [
    pytest.param([["text", "label"], ["aab", "x"], ["bba", "x"]], ["one class only", "'x'"], id="one-class"),
    pytest.param([["text"], ["aab"], ["bba"]], ["no 'label' column", "text,label"], id="labels-missing"),
    pytest.param([["text", "label"], ["aab", "0"], ["bba", "0.75"]], ["'0.75'", "not a whole one", "class ids"],
                 id="label-a-measurement"),
    pytest.param([["text", "label"], ["a" * 20, "x"], ["bba", "y"]],
                 ["line 2 of", "20 tokens long", "at most 14", "--block-size"], id="too-long"),
    pytest.param([["text", "label"], ["aéb", "x"], ["bbz", "y"]], ["2 character(s)", "'z' 'é'"],
                 id="unknown-characters"),
    pytest.param([["text", "label"], ["", "x"], ["bba", "y"]], ["line 2 of", "the text is empty"], id="empty-text"),
    pytest.param([["text", "label"], ["ab", "x"], ["ab", "y"]], ["line 3 of", "gave it 'x'"], id="two-labels"),
    pytest.param([["text", "label"], ["a\nb", "x"], ["bba", "y"]], ["line 2 of", "line break"], id="line-break"),
])
def test_bad_labelled_files(pretrained, tmp_path, rows, fragments):
    data = _write_csv(tmp_path / "labels.csv", rows)
    result = classify("train", "--init-from", pretrained, "--data", data, "--out", tmp_path / "cls")
    assert_clean_failure(result, *fragments)
    assert not (tmp_path / "cls").exists()


def test_init_from_must_be_a_run(labelled, tmp_path):
    (tmp_path / "notes").mkdir()
    result = classify("train", "--init-from", tmp_path / "notes", "--data", labelled, "--out", tmp_path / "cls")
    assert_clean_failure(result, "--init-from", "holds no mlxgpt checkpoint")


def test_out_with_someone_elses_files_is_refused(pretrained, labelled, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "thesis.tex").write_text("keep me", encoding="utf-8")
    result = classify("train", "--init-from", pretrained, "--data", labelled, "--out", out)
    assert_clean_failure(result, "not an mlxgpt run directory", "thesis.tex")
    assert sorted(p.name for p in out.iterdir()) == ["thesis.tex"]


def test_predict_needs_a_classifier(pretrained):
    result = classify("predict", "--checkpoint", pretrained, "abc")
    assert_clean_failure(result, "is not a classifier", "classify train")


@pytest.mark.parametrize("flags, fragments", [
    (["--lm-weight", "-1"], ["--lm-weight must be >= 0"]),
    (["--test-fraction", "1"], ["--test-fraction must be between 0 and 1"]),
    (["--freeze-layers", "3"], ["--freeze-layers 3", "2 blocks"]),
    (["--epochs", "2", "--max-iters", "5"], ["not allowed with argument"]),
])
def test_bad_flags(pretrained, labelled, tmp_path, flags, fragments):
    result = classify("train", "--init-from", pretrained, "--data", labelled, "--out", tmp_path / "cls", *flags)
    assert_clean_failure(result, *fragments)
