"""`mlxgpt inspect cross-attention`: an encoder-decoder's cross-attention weights for one pair, the
alignment map of Bahdanau et al. The numbers are the model's own, each row sums to 1 over the
source, the picture shows them, and every mistake is one line."""

from __future__ import annotations

import subprocess

import mlx.core as mx
import numpy as np
import pytest

from conftest import assert_clean_failure, run_cli
from mlxgpt.checkpoint import load, save_checkpoint
from mlxgpt.cli import main
from mlxgpt.inspect import cross_attention as xa
from mlxgpt.seq2seq.data import PairVocabulary, make_batch
from mlxgpt.seq2seq.model import EncoderDecoder, Seq2SeqArgs, greedy
from picture_checks import check_picture_file, figure_texts

PAIRS = [("seven", "sept"), ("ninety-seven", "quatre-vingt-dix-sept"), ("eighty", "quatre-vingts")]
SOURCE, TARGET = "ninety-seven", "quatre-vingt-dix-sept"
BLOCK = 24


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    vocab = PairVocabulary.from_pairs(PAIRS)
    mx.random.seed(0)
    model = EncoderDecoder(Seq2SeqArgs(vocab_size=vocab.vocab_size, n_encoder_layers=1, n_decoder_layers=2, n_head=2,
                                       n_embd=32, block_size=BLOCK))
    run = tmp_path_factory.mktemp("seq2seq") / "run"
    save_checkpoint(run / "best", model, vocab, train_args={}, extra={"preset": "numbers"})
    return run


@pytest.fixture(scope="module")
def loaded(run_dir):
    return load(run_dir, architecture="encoder-decoder")


def inspect(capsys, *args: str) -> subprocess.CompletedProcess:
    """`mlxgpt inspect cross-attention ARGS` in this process, as a CompletedProcess."""
    code = main(["inspect", "cross-attention", *map(str, args)])
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(args, code, out, err)


# ---------------------------------------------------------------- the numbers


def test_the_maps_are_the_model_s_own_and_each_row_sums_to_one_over_the_source(loaded):
    model, vocab = loaded
    pair = xa.make_pair(model, vocab, SOURCE, TARGET)
    assert pair.src_ids == vocab.encode(SOURCE) and pair.source_labels == list(SOURCE)
    assert pair.tgt_in == [vocab.bos_id, *vocab.encode(TARGET)]  # what the decoder reads
    assert pair.tgt_out == [*vocab.encode(TARGET), vocab.eos_id]  # what each row predicts: the rows' labels
    assert pair.target_labels == [*TARGET, "<eos>"] and pair.target == TARGET and not pair.greedy

    maps = xa.cross_attention_maps(model, pair)
    assert maps.shape == (2, 2, len(TARGET) + 1, len(SOURCE))  # (decoder layers, heads, Tt, Ts): no padding
    assert np.all(maps >= 0)
    np.testing.assert_allclose(maps.sum(axis=-1), 1.0, atol=1e-5)
    own = model.cross_attention_weights(mx.array([pair.src_ids]), mx.array([pair.tgt_in]))
    for layer, weights in enumerate(own):
        np.testing.assert_array_equal(maps[layer], np.array(weights[0]))

    # the same pair in a padded training batch: the same weights on the source, none on its padding
    src, tgt_in, _ = make_batch([(SOURCE, TARGET)], vocab, BLOCK)
    padded = model.cross_attention_weights(mx.array(src), mx.array(tgt_in))
    Tt, Ts = len(pair.tgt_in), len(SOURCE)
    for layer, weights in enumerate(padded):
        weights = np.array(weights[0])
        np.testing.assert_allclose(weights[:, :Tt, :Ts], maps[layer], atol=1e-5)
        assert np.all(weights[:, :Tt, Ts:] == 0.0)

    chosen = xa.select(model, None, None)
    assert chosen == [(0, 0), (0, 1), (1, 0), (1, 1)]
    mean = xa.mean_map(maps, chosen)
    np.testing.assert_allclose(mean, maps.mean(axis=(0, 1)), atol=1e-7)
    np.testing.assert_allclose(mean.sum(axis=-1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(xa.mean_map(maps, xa.select(model, 1, 0)), maps[1, 0])
    np.testing.assert_allclose(xa.mean_map(maps, xa.select(model, 0, None)), maps[0].mean(axis=0), atol=1e-7)
    assert xa.describe_choice(maps, chosen) == "mean of all 2 layers × 2 heads"
    assert xa.describe_choice(maps, [(1, 0)]) == "layer 1, head 0"


def test_without_a_target_the_rows_are_the_model_s_greedy_translation(loaded):
    model, vocab = loaded
    pair = xa.make_pair(model, vocab, SOURCE)
    out = greedy(model, vocab.encode(SOURCE), vocab.bos_id, vocab.eos_id, BLOCK)
    assert pair.greedy and pair.target == "".join(vocab.token_label(i) for i in out)  # as the rows show it
    if pair.ended:  # eos within the block: the last row predicts it
        assert pair.tgt_out == [*out, vocab.eos_id] and pair.tgt_in == [vocab.bos_id, *out]
    else:  # block_size tokens and no eos: the last one is predicted, never read
        assert pair.tgt_out == out and pair.tgt_in == [vocab.bos_id, *out[:-1]] and len(out) == BLOCK
    maps = xa.cross_attention_maps(model, pair)
    assert maps.shape[2:] == (len(pair.tgt_out), len(SOURCE))
    np.testing.assert_allclose(maps.sum(axis=-1), 1.0, atol=1e-5)


def synthetic_pair(source: str, target: str) -> xa.AlignedPair:
    return xa.AlignedPair(source=source, target=target, src_ids=[], tgt_in=[], tgt_out=[],
                          source_labels=list(source), target_labels=[*target, "<eos>"], greedy=False, ended=True)


def test_each_target_word_is_aligned_with_the_source_words_its_characters_read_most():
    pair = synthetic_pair(SOURCE, TARGET)
    looks_at = [0, 1, 2, 3, 4, 5,  # quatre: n i n e t y
                6,  # -: the hyphen (not a word)
                2, 2, 3, 1, 4,  # vingt: inside "ninety"
                6,
                8, 9, 8,  # dix: inside "seven"
                6,
                11, 7, 7, 7,  # sept: the "n" and the "s" of "seven"
                11]  # <eos>: the last character
    weights = np.full((len(looks_at), len(SOURCE)), 0.01)
    weights[np.arange(len(looks_at)), looks_at] = 0.9
    assert list(xa.strongest(weights)) == looks_at
    assert xa.word_alignment(pair, weights) == [("quatre", "ninety"), ("vingt", "ninety"), ("dix", "seven"),
                                                ("sept", "seven"), ("<eos>", "seven")]
    assert xa.alignment_line(pair, weights) == "quatre → ninety · vingt → ninety · dix → seven · sept → seven · " \
                                               "<eos> → seven"
    weights[0:6] = 0.01
    weights[0:6, 6] = 0.9  # "quatre" reads only the hyphen
    weights[7:12] = 0.01
    weights[np.arange(7, 12), [0, 11, 0, 0, 0]] = 0.9  # "vingt" reads from the first to the last character
    weights[13:16] = 0.01
    weights[np.arange(13, 16), [5, 6, 6]] = 0.9  # "dix" reads the "y" and the hyphen after it
    assert xa.word_alignment(pair, weights)[:3] == [("quatre", "-"), ("vingt", "ninety-seven"), ("dix", "ninety")]


# ---------------------------------------------------------------- the picture


def test_the_picture_shows_the_mean_large_and_every_head_small(loaded):
    model, vocab = loaded
    pair = xa.make_pair(model, vocab, SOURCE, TARGET)
    maps = xa.cross_attention_maps(model, pair)
    chosen = xa.select(model, None, None)
    fig = xa.picture(maps, pair, chosen, "Cross-attention")
    images = [a for a in fig.axes if a.images]
    assert len(images) == 1 + 2 * 3  # the mean; then per layer, each head and their mean
    main = images[0]
    np.testing.assert_allclose(main.images[0].get_array(), maps.mean(axis=(0, 1)), atol=1e-6)
    assert main.images[0].get_clim() == (0.0, 1.0)
    assert [t.get_text() for t in main.get_xticklabels()] == list(SOURCE)  # source across
    assert [t.get_text() for t in main.get_yticklabels()] == [*TARGET, "<eos>"]  # the predicted tokens down
    assert main.get_xlabel() == "source: the characters the encoder read →"
    assert f"{maps.mean(axis=(0, 1))[0, 0]:.2f}"[1:] in [t.get_text() for t in main.texts]
    small = [a.images[0].get_array() for a in images[1:]]
    for layer in range(2):
        np.testing.assert_allclose(small[3 * layer], maps[layer, 0], atol=1e-7)
        np.testing.assert_allclose(small[3 * layer + 1], maps[layer, 1], atol=1e-7)
        np.testing.assert_allclose(small[3 * layer + 2], maps[layer].mean(axis=0), atol=1e-6)
    texts = figure_texts(fig)
    assert {"head 0", "head 1", "mean of heads", "layer 0", "layer 1", "weight"} <= set(texts)
    assert "mean of all 2 layers × 2 heads" in texts

    one = xa.picture(maps, pair, [(1, 1)], "one head")
    images = [a for a in one.axes if a.images]
    assert len(images) == 1
    np.testing.assert_allclose(images[0].images[0].get_array(), maps[1, 1], atol=1e-7)


# ---------------------------------------------------------------- the command


def header_and_rows(out: str, n_rows: int) -> tuple[str, list[str]]:
    lines = out.splitlines()
    top = next(i for i, line in enumerate(lines) if line.strip() == " ".join(SOURCE))  # the column labels
    return lines[top], lines[top + 1: top + 1 + n_rows]


def test_the_command_prints_the_map_with_the_source_characters_across_and_saves_it(run_dir, loaded, tmp_path,
                                                                                   capsys):
    model, vocab = loaded
    picture = tmp_path / "pictures" / "align.png"
    result = inspect(capsys, "--checkpoint", run_dir, "--source", SOURCE, "--target", TARGET, "--save", picture)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert f"picture saved to {picture}" in out
    check_picture_file(picture, min_width=500)
    flat = " ".join(out.split())  # Rich wraps long lines at the terminal's width
    assert f"source '{SOURCE}' → target '{TARGET}' (given with --target, teacher-forced)" in flat
    assert "mean of all 2 layers × 2 heads" in flat
    assert max(len(line) for line in out.splitlines() if not line.startswith("picture saved")) <= 80

    pair = xa.make_pair(model, vocab, SOURCE, TARGET)
    mean = xa.cross_attention_maps(model, pair).mean(axis=(0, 1))
    _, rows = header_and_rows(out, len(TARGET) + 1)
    for row, label, weights in zip(rows, [*TARGET, "<eos>"], mean):  # each row: its label ... its strongest source
        j = int(np.argmax(weights))
        assert row.split()[0] == label and row.endswith(f"→ {SOURCE[j]} {weights[j]:.2f}"), row
    assert "Alignment (each target word → the source it reads most): " + xa.alignment_line(pair, mean) in flat

    result = inspect(capsys, "--checkpoint", run_dir, "--source", SOURCE, "--layer", "1", "--head", "0")
    assert result.returncode == 0, result.stderr
    pair = xa.make_pair(model, vocab, SOURCE)
    flat = " ".join(result.stdout.split())
    assert "(the model's greedy translation)" in flat and f"target'{pair.target}'" in flat.replace(" ", "")
    assert "layer 1, head 0:" in flat and "L0 H1" not in flat
    weights = xa.cross_attention_maps(model, pair)[1, 0]
    _, rows = header_and_rows(result.stdout, len(pair.target_labels))
    assert len(rows) == len(pair.target_labels)
    for row, label, w in zip(rows, pair.target_labels, weights):
        assert row.split()[0] == label and row.endswith(f"{w.max():.2f}"), row


@pytest.mark.parametrize("args, fragments", [
    (["--source", "ninety-zeven"], ["--source: 1 character(s) not in the vocabulary: 'z'"]),
    (["--source", SOURCE, "--target", "quatre-vingt-dix-sepT"], ["--target: 1 character(s)", "'T'"]),
    (["--source", "seven" * 5], ["--source is 25 characters, more than the model's block_size of 24"]),
    (["--source", ""], ["--source is empty"]),
    (["--source", SOURCE, "--target", "sept" * 6], ["--target is 24 characters", "at most 23"]),
    (["--source", SOURCE, "--layer", "2"], ["--layer 2 does not exist: this model's decoder has layers 0 to 1"]),
    (["--source", SOURCE, "--head", "-1"], ["--head -1 does not exist: this model has heads 0 to 1"]),
    (["--source", SOURCE, "--save", "x.jpg"], ["x.jpg: pictures are .png, .svg or .pdf"]),
], ids=["source-char", "target-char", "source-long", "source-empty", "target-long", "layer", "head", "save"])
def test_each_mistake_is_one_line(args, fragments, run_dir, capsys):
    line = assert_clean_failure(inspect(capsys, "--checkpoint", run_dir, *args), *fragments)
    assert line.startswith("error: ")


def test_through_python_dash_m_and_a_gpt_checkpoint_is_refused_in_one_line(run_dir, trained_run):
    result = run_cli("-m", "mlxgpt", "inspect", "cross-attention", "--checkpoint", run_dir, "--source", "seven",
                     "--target", "sept")
    assert result.returncode == 0, result.stderr
    assert "s e v e n" in result.stdout and "Alignment (each target word" in result.stdout
    result = run_cli("-m", "mlxgpt", "inspect", "cross-attention", "--checkpoint", trained_run, "--source", "The")
    assert_clean_failure(result, "holds a GPT (decoder-only), and this command needs an encoder-decoder",
                         "pass a checkpoint of that kind")
