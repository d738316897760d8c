"""An encoder-decoder checkpoint: the same directory layout and checks as the GPT's, told apart
by config.json's `architecture`; the GPT's commands refuse it in one line, and it refuses them."""

from __future__ import annotations

import json
import shutil

import mlx.core as mx
import pytest

from conftest import assert_clean_failure, run_cli
from mlxgpt.checkpoint import load, read_config, save_checkpoint
from mlxgpt.errors import MlxgptError
from mlxgpt.seq2seq.data import PairVocabulary, make_batch
from mlxgpt.seq2seq.model import EncoderDecoder, Seq2SeqArgs

PAIRS = [("seven", "sept"), ("ninety-seven", "quatre-vingt-dix-sept"), ("eighty", "quatre-vingts")]


@pytest.fixture
def saved(tmp_path):
    vocab = PairVocabulary.from_pairs(PAIRS)
    mx.random.seed(0)
    model = EncoderDecoder(Seq2SeqArgs(vocab_size=vocab.vocab_size, n_encoder_layers=1, n_decoder_layers=2, n_head=2,
                                       n_embd=32, block_size=24))
    path = save_checkpoint(tmp_path / "run" / "best", model, vocab, train_args={}, extra={"preset": "numbers"})
    return path, model, vocab


def test_an_encoder_decoder_comes_back_the_same(saved):
    path, model, vocab = saved
    assert json.loads((path / "config.json").read_text())["architecture"] == "encoder-decoder"
    loaded, loaded_vocab = load(path.parent, architecture="encoder-decoder")
    assert isinstance(loaded, EncoderDecoder) and loaded.args == model.args
    assert loaded_vocab.chars == vocab.chars
    src, tgt_in, _ = (mx.array(a) for a in make_batch(PAIRS, vocab, 24))
    assert mx.array_equal(model(src, tgt_in), loaded(src, tgt_in))


def test_each_command_reads_only_its_own_kind(saved, trained_run):
    path, _, _ = saved
    with pytest.raises(MlxgptError, match="holds an encoder-decoder .* needs a GPT"):
        read_config(path)
    with pytest.raises(MlxgptError, match="holds a GPT .* needs an encoder-decoder"):
        load(trained_run, architecture="encoder-decoder")
    assert read_config(trained_run / "best")["architecture"] == "gpt"
    for command in (["generate.py"], ["-m", "mlxgpt", "eval"], ["-m", "mlxgpt", "inspect", "params"]):
        assert_clean_failure(run_cli(*command, "--checkpoint", path), "encoder-decoder", "needs a GPT")


def test_a_gpt_checkpoint_from_before_the_field_is_a_gpt(trained_run, tmp_path):
    old = tmp_path / "old"
    shutil.copytree(trained_run / "best", old)
    config = json.loads((old / "config.json").read_text())
    del config["architecture"]
    (old / "config.json").write_text(json.dumps(config))
    model, tokenizer = load(old)
    assert type(model).__name__ == "GPT" and tokenizer.kind == "char"


@pytest.mark.parametrize("field, value, message", [
    ("architecture", "mamba", "does not know"),
    ("model.n_decoder_layers", "2", "n_decoder_layers"),
    ("model.pad_id", 999, "pad_id"),
    ("tokenizer.kind", "char", "'char'"),
])
def test_a_damaged_encoder_decoder_config_is_one_line(saved, field, value, message):
    path, _, _ = saved
    config = json.loads((path / "config.json").read_text())
    section, _, key = field.rpartition(".")
    (config[section] if section else config)[key] = value
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(MlxgptError, match=message) as caught:
        load(path, architecture="encoder-decoder")
    assert "\n" not in str(caught.value)


def test_the_vocabulary_file_is_checked_like_the_char_tokenizers(saved):
    path, _, _ = saved
    (path / "pair_vocab.json").write_text(json.dumps({"chars": ["a", "a"]}))
    with pytest.raises(MlxgptError, match="repeats"):
        load(path, architecture="encoder-decoder")
