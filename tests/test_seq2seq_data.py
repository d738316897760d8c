"""The translation data (mlxgpt/seq2seq/data.py): number words, the split by number, the pair
vocabulary, batches, the TSV reader, the scores, and one loss through the encoder-decoder."""

from __future__ import annotations

import itertools
import json
import sys

import mlx.core as mx
import numpy as np
import pytest

from mlxgpt.errors import MlxgptError
from mlxgpt.seq2seq.data import (FILENAME, PairVocabulary, batch_rows, character_error_rate, edit_distance,
                                 exact_match, make_batch, needed_block_size, number_pairs, read_pairs_tsv,
                                 sample_batches, split_numbers)

PAIRS = [("six", "six"), ("ninety-seven", "quatre-vingt-dix-sept"), ("eighty", "quatre-vingts")]


def one_line(exc: pytest.ExceptionInfo) -> str:
    message = str(exc.value)
    assert "\n" not in message and message
    return message


# ---------------------------------------------------------------- number words


@pytest.mark.parametrize("lang, expected", [
    ("fr", {97: "quatre-vingt-dix-sept", 80: "quatre-vingts", 71: "soixante et onze",
            1999: "mille neuf cent quatre-vingt-dix-neuf"}),
    ("de", {97: "siebenundneunzig", 80: "achtzig", 71: "einundsiebzig",
            1999: "eintausendneunhundertneunundneunzig"}),
])
def test_number_pairs(lang, expected):
    pytest.importorskip("num2words")
    pairs = number_pairs(list(expected), target_lang=lang)
    assert [target for _, target in pairs] == list(expected.values())
    assert pairs[0][0] == "ninety-seven" and pairs[1][0] == "eighty"


def test_number_pairs_refuses_bad_languages_and_numbers():
    pytest.importorskip("num2words")
    with pytest.raises(MlxgptError) as exc:
        number_pairs([1], target_lang="klingon")
    assert "'klingon'" in one_line(exc) and "fr (French)" in str(exc.value) and "de (German)" in str(exc.value)
    with pytest.raises(MlxgptError, match="whole numbers"):
        number_pairs([7.5])


def test_number_pairs_without_num2words(monkeypatch):
    monkeypatch.setitem(sys.modules, "num2words", None)  # makes `import num2words` fail
    with pytest.raises(MlxgptError) as exc:
        number_pairs([1])
    assert "pip install -e '.[translate]'" in one_line(exc)


def test_split_by_number():
    train, val = split_numbers(1, 9999, 0.1, seed=0)
    assert len(val) == 1000 and len(train) == 8999
    assert not set(train) & set(val) and sorted(train + val) == list(range(1, 10000))
    assert split_numbers(1, 9999, 0.1, seed=0) == (train, val)
    assert split_numbers(1, 9999, 0.1, seed=1)[1] != val
    assert split_numbers(1, 2, 0.9) in (([1], [2]), ([2], [1]))  # one held out, one left
    for bad in (dict(low=5, high=5), dict(val_fraction=0.0), dict(val_fraction=1.0)):
        with pytest.raises(MlxgptError):
            split_numbers(**bad)


# ---------------------------------------------------------------- vocabulary


def test_vocabulary_round_trip(tmp_path):
    vocab = PairVocabulary.from_pairs(PAIRS)
    assert (vocab.pad_id, vocab.bos_id, vocab.eos_id) == (0, 1, 2)
    assert vocab.chars == sorted(set("".join(s + t for s, t in PAIRS)))
    assert vocab.vocab_size == 3 + len(vocab.chars) and min(vocab.encode("six")) >= 3
    ids = vocab.encode("quatre-vingts")
    assert vocab.decode(ids) == "quatre-vingts"
    assert vocab.decode([vocab.bos_id, *ids, vocab.eos_id, vocab.pad_id]) == "quatre-vingts"
    assert [vocab.token_label(i) for i in (0, 1, 2)] == ["<pad>", "<bos>", "<eos>"]
    assert vocab.save(tmp_path) == [FILENAME]
    loaded = PairVocabulary.load(tmp_path)
    assert loaded.chars == vocab.chars and loaded.encode("quatre-vingts") == ids


def test_unknown_character_refused():
    vocab = PairVocabulary.from_pairs(PAIRS)
    with pytest.raises(MlxgptError) as exc:
        vocab.encode("soixante et onze")
    assert "'o'" in one_line(exc) and "training pairs" in str(exc.value)


@pytest.mark.parametrize("content, problem", [
    ("{not json", "not valid JSON"),
    (json.dumps({"chars": "abc"}), "chars must be"),
    (json.dumps({}), "chars is missing"),
    (json.dumps({"chars": []}), "chars is empty"),
    (json.dumps({"chars": ["a", "bc"]}), "chars[1] must be one character"),
    (json.dumps({"chars": ["a", "b", "a"]}), "chars[2] repeats chars[0]"),
])
def test_corrupt_vocabulary_file(tmp_path, content, problem):
    (tmp_path / FILENAME).write_text(content)
    with pytest.raises(MlxgptError) as exc:
        PairVocabulary.load(tmp_path)
    assert problem in one_line(exc)


def test_missing_vocabulary_file(tmp_path):
    with pytest.raises(MlxgptError) as exc:
        PairVocabulary.load(tmp_path)
    assert "is missing" in one_line(exc)


# ---------------------------------------------------------------- batches


def test_make_batch_layout():
    vocab = PairVocabulary.from_pairs(PAIRS)
    block = needed_block_size(PAIRS)
    assert block == len("quatre-vingt-dix-sept") + 1
    src, tgt_in, tgt_out = make_batch(PAIRS, vocab, block)
    assert src.shape == tgt_in.shape == tgt_out.shape == (3, block)
    assert src.dtype == tgt_in.dtype == tgt_out.dtype == np.int32
    six = vocab.encode("six")
    assert src[0].tolist() == six + [0] * (block - 3)
    assert tgt_in[0].tolist() == [1] + six + [0] * (block - 4)
    assert tgt_out[0].tolist() == six + [2] + [0] * (block - 4)
    shifted = tgt_in[:, 1:] != 0  # the decoder predicts its next input; eos where its input ends
    assert (tgt_in[:, 1:][shifted] == tgt_out[:, :-1][shifted]).all()
    assert ((tgt_out == 2).sum(axis=1) == 1).all() and ((tgt_out != 0).sum(axis=1) == (tgt_in != 0).sum(axis=1)).all()
    assert (tgt_in[:, 0] == 1).all() and (tgt_out[1] != 0).all()  # the longest target fills the block
    for row, (_, target) in zip(tgt_out, PAIRS):
        assert vocab.decode(row) == target and row[len(target)] == vocab.eos_id


def test_too_long_pair_refused():
    vocab = PairVocabulary.from_pairs(PAIRS)
    with pytest.raises(MlxgptError) as exc:
        make_batch(PAIRS, vocab, 12)
    message = one_line(exc)
    assert "pair 2" in message and "needs block_size 22" in message and "use block_size 22" in message
    make_batch(PAIRS[:1], vocab, 4)  # "six": source 3, bos + target 4
    with pytest.raises(MlxgptError, match="needs block_size 4"):
        make_batch(PAIRS[:1], vocab, 3)


def test_sampler_is_seeded_and_covers_each_epoch():
    vocab = PairVocabulary.from_pairs(PAIRS)
    pairs = PAIRS * 3  # 9 pairs, batches of 4: the third batch straddles two epochs
    first = list(itertools.islice(sample_batches(pairs, vocab, 4, 22, seed=5), 5))
    again = list(itertools.islice(sample_batches(pairs, vocab, 4, 22, seed=5), 5))
    other = list(itertools.islice(sample_batches(pairs, vocab, 4, 22, seed=6), 5))
    for a, b in zip(first, again):
        assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert any(not np.array_equal(a[0], b[0]) for a, b in zip(first, other))
    assert all(batch[0].shape == (4, 22) for batch in first)
    stream = np.concatenate([batch_rows(9, 4, 5, i) for i in range(9)])  # 36 rows: 4 epochs
    assert all(sorted(stream[e * 9:(e + 1) * 9].tolist()) == list(range(9)) for e in range(4))
    resumed = next(sample_batches(pairs, vocab, 4, 22, seed=5, start=3))
    assert all(np.array_equal(x, y) for x, y in zip(resumed, first[3]))
    with pytest.raises(MlxgptError, match="batch_size"):
        next(sample_batches(pairs, vocab, 0, 22, seed=5))


# ---------------------------------------------------------------- a user's pairs file


def test_read_pairs_tsv(tmp_path):
    path = tmp_path / "pairs.tsv"
    path.write_text("\ufeffone\tun\r\n\n  \ntwo \t deux\nthree\ttrois\n", encoding="utf-8")
    assert read_pairs_tsv(path) == [("one", "un"), ("two", "deux"), ("three", "trois")]


@pytest.mark.parametrize("content, problem", [
    ("one\tun\ntwo deux\n", "line 2 of"),
    ("one\tun\n\nthree\ttrois\tdrei\n", "line 3 of"),
    ("one\t\n", "empty target"),
    ("\n\n\n", "no pairs"),
    ("", "is empty"),
])
def test_read_pairs_tsv_errors(tmp_path, content, problem):
    path = tmp_path / "pairs.tsv"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(MlxgptError) as exc:
        read_pairs_tsv(path)
    assert problem in one_line(exc)


def test_read_pairs_tsv_needs_utf8(tmp_path):
    path = tmp_path / "pairs.tsv"
    path.write_bytes("un\tdéjà\n".encode("latin-1"))
    with pytest.raises(MlxgptError) as exc:
        read_pairs_tsv(path)
    assert "not UTF-8" in one_line(exc)
    with pytest.raises(MlxgptError, match="does not exist"):
        read_pairs_tsv(tmp_path / "missing.tsv")


# ---------------------------------------------------------------- scores


def test_metrics_by_hand():
    assert edit_distance("kitten", "sitting") == 3
    assert edit_distance("", "abc") == 3 and edit_distance("abc", "") == 3 and edit_distance("abc", "abc") == 0
    assert edit_distance("flaw", "lawn") == 2
    assert character_error_rate(["kitten"], ["sitting"]) == pytest.approx(3 / 7)
    # totals, not a mean of rates: (3 + 0) / (7 + 2)
    assert character_error_rate(["kitten", "un"], ["sitting", "un"]) == pytest.approx(3 / 9)
    assert exact_match(["un", "deux", "troi"], ["un", "deux", "trois"]) == pytest.approx(2 / 3)
    with pytest.raises(ValueError):
        exact_match(["un"], ["un", "deux"])


# ---------------------------------------------------------------- through the model


def test_a_tiny_model_scores_a_batch_of_number_pairs():
    pytest.importorskip("num2words")
    from mlxgpt.seq2seq.model import EncoderDecoder, Seq2SeqArgs, loss

    pairs = number_pairs([1, 21, 71, 80, 97, 1999])
    vocab = PairVocabulary.from_pairs(pairs)
    block = needed_block_size(pairs)
    mx.random.seed(0)
    model = EncoderDecoder(Seq2SeqArgs(vocab_size=vocab.vocab_size, n_encoder_layers=1, n_decoder_layers=1,
                                       n_head=2, n_embd=32, block_size=block))
    assert model.args.pad_id == vocab.pad_id
    value = loss(model, *(mx.array(a) for a in make_batch(pairs, vocab, block))).item()
    assert np.isfinite(value) and 0 < value < 3 * np.log(vocab.vocab_size)
