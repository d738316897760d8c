"""The peptide lab (examples/peptides.py): its pieces, its refusal without modlAMP, and the whole
pipeline in --quick mode on made-up sequences (--fake-data: no real peptide data in the tests).

The end-to-end test needs modlAMP and scikit-learn (`pip install -e '.[peptides]'`) and is skipped
without them; everything else runs anywhere."""

from __future__ import annotations

import importlib.util
import json
import sys

import numpy as np
import pytest

from conftest import REPO_ROOT, run_cli

LAB = REPO_ROOT / "examples" / "peptides.py"


@pytest.fixture(scope="module")
def lab():
    spec = importlib.util.spec_from_file_location("peptide_lab", LAB)
    module = importlib.util.module_from_spec(spec)
    sys.modules["peptide_lab"] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop("peptide_lab", None)


def test_clean_keeps_standard_peptides_of_10_to_50_once(lab):
    seqs = ["KLAKLAKKLA", "KLAKLAKKLA", "SHORT", "A" * 51, "KLAKXAKKLAK", "GIGAVLKVLT", "GIGAVLKVLT", "DEDEDEDEDEW"]
    labels = [1, 1, 1, 1, 1, 1, 0, 0]
    peptides, counts = lab.clean(seqs, labels)
    assert peptides == {"DEDEDEDEDEW": 0, "KLAKLAKKLA": 1}  # GIGAVLKVLT had both labels
    assert counts["dropped_length"] == 2 and counts["dropped_residues"] == 1
    assert counts["dropped_duplicates"] == 2  # rows that repeat a sequence: KLAK... and GIGA...'s second row
    assert counts["dropped_both_labels"] == 1
    assert counts["loaded"] - counts["dropped_length"] - counts["dropped_residues"] - counts["dropped_duplicates"] \
        - counts["dropped_both_labels"] == counts["kept"]
    assert counts["kept"] == 2 and counts["kept_amp"] == 1


def test_the_split_is_by_sequence_per_class_and_seeded(lab):
    seqs, labels = lab.made_up_peptides(100, seed=3)
    peptides, _ = lab.clean(seqs, labels)
    parts = lab.split(peptides, seed=7)
    assert parts == lab.split(peptides, seed=7)
    assert parts != lab.split(peptides, seed=8)
    names = list(parts)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            assert not set(parts[a]) & set(parts[b])
    assert sum(len(p) for p in parts.values()) == len(peptides)
    for part in parts.values():  # both classes everywhere, in about the same proportion
        share = sum(part.values()) / len(part)
        assert 0.35 < share < 0.65


def test_baselines_keep_lengths_and_composition(lab):
    seqs = ["KLAKLAKKLAKLAK", "GIGAVLKVLTTGLPALISWIKRKRQQ"]
    mixed = lab.shuffled(seqs, seed=1)
    assert [sorted(s) for s in mixed] == [sorted(s) for s in seqs] and mixed != seqs
    assert mixed == lab.shuffled(seqs, seed=1)
    random = lab.uniform_random([10, 33], seed=1)
    assert [len(s) for s in random] == [10, 33] and set("".join(random)) <= set(lab.AMINO)


def test_reading_eval_and_predict_output(lab):
    train = ("checkpoint  out/x/best\ntext        h.txt, train split: 9 examples, 200 characters\n"
             "train loss    2.0000 nats/token   40.0000 nats/example   2.8854 bits/char   (180 tokens predicted)\n")
    val = ("checkpoint  out/x/best\ntext        h.txt, val split: 1 examples, 21 characters\n"
           "val loss    3.0000 nats/token   60.0000 nats/example   4.3281 bits/char   (20 tokens predicted)\n")
    both = lab.combined([lab.eval_numbers(train), lab.eval_numbers(val)])
    assert both["tokens"] == 200 and both["examples"] == 10
    assert both["loss"] == pytest.approx((2.0 * 180 + 3.0 * 20) / 200)
    assert both["per_example"] == pytest.approx((2.0 * 180 + 3.0 * 20) / 10)
    table = "  P(0)    P(1)  text\n0.2500  0.7500  KLAK\n0.9000  0.1000  DEDE\n"
    assert lab.read_probabilities(table, ["KLAK", "DEDE"]).tolist() == [[0.25, 0.75], [0.9, 0.1]]
    with pytest.raises(lab.LabError):
        lab.read_probabilities(table, ["DEDE", "KLAK"])


def test_it_writes_only_into_its_own_directories(lab, tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(lab.LabError, match="did not write"):
        lab.prepare_out(tmp_path)
    fresh = tmp_path / "lab"
    lab.prepare_out(fresh)
    (fresh / "results.json").write_text("{}")
    lab.prepare_out(fresh)  # its own: may be written again
    assert (fresh / lab.MARKER).exists()


def test_without_modlamp_it_says_how_to_install_it(tmp_path):
    blocker = tmp_path / "blocked"
    (blocker / "modlamp").mkdir(parents=True)
    (blocker / "modlamp" / "__init__.py").write_text("raise ImportError('modlamp is not installed (test)')\n")
    out = tmp_path / "out"
    result = run_cli(LAB, "--quick", "--out", out, env={"PYTHONPATH": str(blocker)}, timeout=120)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "pip install -e '.[peptides]'" in lines[0] and "modlamp" in lines[0], result.stderr
    assert not out.exists()


def test_the_whole_lab_runs_in_quick_mode_on_made_up_peptides(tmp_path):
    pytest.importorskip("modlamp")
    pytest.importorskip("sklearn")
    out = tmp_path / "lab"
    result = run_cli(LAB, "--quick", "--fake-data", "40", "--seed", "1", "--out", out, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "$ python train.py --data" in result.stdout and "$ python -m mlxgpt classify train" in result.stdout

    results = json.loads((out / "results.json").read_text())
    assert {"meta", "data", "language_models", "generation", "profile", "classification", "targets",
            "commands", "pictures"} <= set(results)
    assert results["meta"]["quick"] and "--fake-data 40" in results["meta"]["command"]
    assert results["data"]["kept"] == 80 and results["data"]["splits"]["test"]["peptides"] == 8
    lm = results["language_models"]
    assert set(lm) == {"pretrained", "finetuned", "scratch"}
    heldout = results["data"]["splits"]["val"]["amps"]
    assert all(m["examples"] == heldout and np.isfinite(m["loss"]) for m in lm.values())  # one held-out file for all
    assert 0 <= results["generation"]["valid_fraction"] <= 1
    assert set(results["profile"]) == {"generated", "heldout", "shuffled", "random", "uniprot"}
    assert set(results["profile"]["heldout"]) == {"n", "length", "charge", "hydrophobicity", "moment"}
    assert len(results["classification"]) == 4
    for name, stats in results["classification"].items():
        assert len(stats["seeds"]) == 2 and stats["roc_auc"]["mean"] is not None, name
    assert len(results["targets"]) == 6 and all(isinstance(t["met"], bool) for t in results["targets"])
    assert all(c["exit"] == 0 for c in results["commands"])

    markdown = (out / "results.md").read_text()
    for heading in ("## Data", "## Language models", "## Generated peptides", "## AMP vs non-AMP", "## Targets"):
        assert heading in markdown
    for picture in ("profile.png", "curves.png", "roc.png"):
        assert (out / picture).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"({picture})" in markdown
    for name in ("pretrain.txt", "amps_train.txt", "heldout_amps.txt", "train.csv", "val.csv", "test.csv", "test.txt"):
        assert (out / "data" / name).is_file()
    test_rows = (out / "data" / "test.csv").read_text().splitlines()[1:]
    train_rows = set((out / "data" / "train.csv").read_text().splitlines()[1:])
    assert test_rows and not set(test_rows) & train_rows
