"""experiments/translate_numbers.py: the GPT's masked lines, the batched greedy decoders (against
mlxgpt.seq2seq.greedy and an uncached argmax), and a --quick run end to end (~20 s)."""

from __future__ import annotations

import argparse
import json

import pytest

pytest.importorskip("num2words")

import mlx.core as mx  # noqa: E402

from conftest import run_cli  # noqa: E402
from experiments import translate_numbers as tn  # noqa: E402
from mlxgpt.config import ModelArgs  # noqa: E402
from mlxgpt.seq2seq.model import greedy  # noqa: E402

TINY = argparse.Namespace(seed=0, encoder_layers=1, decoder_layers=1, n_head=2, n_embd=16, batch_size=8,
                          gpt_embd=None, gpt_pos="learned", gpt_layers=None, warmup=5, weight_decay=0.1,
                          min_lr_ratio=0.1)


@pytest.fixture(scope="module")
def task():
    return tn.make_task("fr", 0, val_pairs=12)


def test_gpt_lines_predict_only_the_target_and_its_newline(task):
    tokenizer = tn.CharTokenizer.train("".join(f"{s}{tn.SEPARATOR}{t}\n" for s, t in task.train))
    pairs = [("ninety-seven", "quatre-vingt-dix-sept"), ("four", "quatre")]
    lines = tn.GptLines(tokenizer, pairs, tn.GptLines.block_size_for(task.train))
    for i, (source, target) in enumerate(pairs):
        predicted = [int(v) for v in lines.y[i] if v >= 0]
        assert tokenizer.decode(predicted) == target + "\n"
        first = len(lines.prompt(source)) - 1  # the separator's last character predicts the target's first
        assert tokenizer.decode([int(lines.x[i, first])]) == " " and lines.y[i, first - 1] == -1


def test_the_gpt_depth_is_the_closest_parameter_count():
    base = ModelArgs(vocab_size=30, block_size=97, n_layer=1, n_head=4, n_embd=128, pos_embedding="learned")
    target = 922_752  # the 2+2-layer, 128-wide encoder-decoder
    depth = tn.gpt_depth_matching(target, base)
    counts = {n: ModelArgs(**{**vars(base), "n_layer": n}).parameter_count() for n in (depth - 1, depth, depth + 1)}
    assert abs(counts[depth] - target) == min(abs(c - target) for c in counts.values())


def test_batched_greedy_decoders_match_one_at_a_time_decoding(task):
    targs = tn.train_args(1e-3, TINY, 1.0)
    encdec = tn.build_encdec(task, TINY, targs, streams=1)
    gpt = tn.build_gpt(task, TINY, targs, streams=1, match_params=encdec.params)
    sources = [s for s, _ in task.val[:6]]
    vocab = encdec.extra["vocab"]
    one_by_one = [vocab.decode(greedy(encdec.model, vocab.encode(s), vocab.bos_id, vocab.eos_id,
                                      encdec.model.args.block_size)) for s in sources]
    assert encdec.translate(sources) == one_by_one
    lines = gpt.translate.args[1]
    uncached = []
    for source in sources:
        ids, out = lines.prompt(source), []
        while len(ids) <= gpt.model.args.block_size:
            token = int(mx.argmax(gpt.model(mx.array([ids]))[0, -1]).item())
            if token == lines.newline:
                break
            out.append(token)
            ids.append(token)
        uncached.append(lines.tokenizer.decode(out))
    assert gpt.translate(sources) == uncached


def test_quick_run_trains_and_scores_both_models(tmp_path):
    out = tmp_path / "translate"
    result = run_cli("-m", "experiments.translate_numbers", "--quick", "--budget", "3", "--eval-every", "2",
                     "--out", out, timeout=120)
    assert result.returncode == 0, result.stderr
    results = json.loads((out / "translate_numbers.json").read_text(encoding="utf-8"))
    assert results["quick"] and results["val_pairs"] == 200 and list(results["runs"]) == ["encdec", "gpt"]
    assert 0.8 < results["params_ratio_gpt_over_encdec"] < 1.25
    for run in results["runs"].values():
        assert run["iters"] > 1 and run["train_s"] >= 3 and run["compile_s"] > 0
        assert 0 <= run["exact_match"] <= 1 and run["cer"] >= 0 and len(run["curve"]) == 2
        examples = {e["number"]: e for e in run["examples"]}
        assert examples[97]["reference"] == "quatre-vingt-dix-sept" and not examples[97]["held_out"]
        assert any(e["held_out"] for e in run["examples"])
    assert "| model | params |" in (out / "translate_numbers.md").read_text(encoding="utf-8")
