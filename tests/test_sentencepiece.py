"""SentencePiece tokenizer: exact round trip, streaming decode, save/load, training
end to end through the CLI, bits per character, and its one-line errors."""

from __future__ import annotations

import json
import math
import random
import shutil
from pathlib import Path

import pytest
from conftest import TINY_FLAGS, assert_clean_failure, grammar_text, run_cli

from mlxgpt.data import split_text
from mlxgpt.errors import MlxgptError
from mlxgpt.tokenizers import TOKENIZERS, CharTokenizer, SentencePieceTokenizer, load_tokenizer

WORDS = ["the", "quick", "brown", "fox", "café", "naïve", "Ærøskøbing", "東京", "北京市", "😀", "🦄🎉",
         "👩\u200d👩\u200d👧", "Ωμέγα", "привет", "مرحبا", "e\u0301", "ﬁne", "Ａ", "1623", "3.14", "<unk>", "<0x41>",
         "▁", "▁▁x", "⁇", "\x00", "\ufeff", "\u200b"]
SEPARATORS = [" ", "  ", "   ", "\t", "\t\t", "\n", "\n\n", " \n", "\r\n", "\u00a0", "\u3000", ""]


def hard_text(seed: int = 0, words: int = 3000) -> str:
    """Whitespace runs, tabs, CRLF, NUL, mixed scripts, combining marks, emoji (with ZWJ),
    SentencePiece's own markers, leading and trailing whitespace."""
    rng = random.Random(seed)
    body = "".join(rng.choice(WORDS) + rng.choice(SEPARATORS) for _ in range(words))
    return "  \t" + body + " \t\n  "


UNSEEN = ["", " ", "\n", "  leading and trailing  ", "tabs\tand\t\tmore\t", "\n\n\nnewlines\n\n",
          "unseen: ☃ 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 🏳️‍🌈 Ĳ ǅ Å (A + ring) ﬀ", "한국어 テキスト हिन्दी ไทย", "▁", "▁▁ ▁", " ⁇ <s> </s> <pad>",
          "\x01\x7f\x85\u2028\u2029\ufffd", "x" * 10000]


@pytest.fixture(scope="module", params=["bpe", "unigram"])
def sp(request) -> SentencePieceTokenizer:
    train, _ = split_text(hard_text())
    return SentencePieceTokenizer.train(train, vocab_size=340, model_type=request.param)


@pytest.fixture(scope="module")
def ascii_sp() -> SentencePieceTokenizer:
    """Trained on ASCII only: every other character must come out as byte-fallback pieces."""
    return SentencePieceTokenizer.train(grammar_text(200), vocab_size=300)


def random_unicode(rng: random.Random, length: int) -> str:
    ranges = [(0x0, 0x7F), (0x80, 0x7FF), (0x800, 0xD7FF), (0xE000, 0xFFFF), (0x10000, 0x10FFFF)]
    out = []
    for _ in range(length):
        lo, hi = rng.choice(ranges)
        out.append(chr(rng.randint(lo, hi)))
    return "".join(out)


# ---------------------------------------------------------------- round trip


def test_round_trip_hard_text(sp):
    for seed in range(3):  # seed 0 includes the training text itself; 1 and 2 are unseen arrangements
        text = hard_text(seed)
        ids = sp.encode(text)
        assert sp.decode(ids) == text
        assert len(ids) < len(text.encode("utf-8"))  # it learned something beyond bytes


def test_round_trip_unseen_text(sp, ascii_sp):
    for tokenizer in (sp, ascii_sp):
        for text in UNSEEN:
            assert tokenizer.decode(tokenizer.encode(text)) == text, repr(text)


def test_round_trip_random_unicode(sp):
    rng = random.Random(7)
    for _ in range(200):
        text = random_unicode(rng, rng.randint(0, 40))
        assert sp.decode(sp.encode(text)) == text, repr(text)


def test_decode_agrees_with_sentencepiece(sp):
    """Our byte-level decode is SentencePiece's own decode for everything encode() produces
    (the literal '▁' aside, which SentencePiece itself would turn into a space)."""
    for text in [hard_text(1).replace("▁", "_"), *[t for t in UNSEEN if "▁" not in t]]:
        ids = sp.encode(text)
        assert sp.decode(ids) == sp.sp.decode(ids) == text


def test_no_normalisation(sp):
    """NFKC would turn these into other characters; identity normalisation keeps them."""
    for text in ["ﬁ", "Ａ", "e\u0301", "\u00a0", "Ⅻ", "①", "¼"]:
        assert sp.decode(sp.encode(text)) == text


def test_newline_is_a_piece_and_vocab_size(sp):
    assert sp.vocab_size == 340
    assert sp.encode("\n") == [sp.sp.piece_to_id("\n")]
    assert sp.encode("\n\n") == sp.encode("\n") * 2


def test_nothing_is_unknown(sp):
    unk = sp.sp.unk_id()
    assert unk not in sp.encode(hard_text(2) + "".join(UNSEEN))


# ---------------------------------------------------------------- streaming


def stream(tokenizer, ids: list[int]) -> list[str]:
    decoder = tokenizer.decoder()
    return [decoder.add(i) for i in ids] + [decoder.flush()]


def test_stream_splits_multibyte_characters_across_byte_tokens(ascii_sp):
    text = "The fox 東京 sees 🦄🎉 and Ærø.\n"
    ids = ascii_sp.encode(text)
    byte_ids = [i for i in ids if ascii_sp.sp.is_byte(i)]
    assert len(byte_ids) >= 3 * 2 + 4 * 2  # 東京 and the emoji are spelled byte by byte
    pieces = stream(ascii_sp, ids)
    assert "".join(pieces) == ascii_sp.decode(ids) == text
    assert not any("\ufffd" in p for p in pieces), pieces  # never a replacement character mid-stream
    assert "" in pieces  # bytes were held back until their character was complete
    assert "東" in pieces and "🦄" in pieces


def test_stream_equals_decode_for_any_ids(sp):
    """Even for id sequences a model might sample (invalid UTF-8 included), the stream
    equals decode(all ids): both are the same bytes through the same UTF-8 decoder."""
    rng = random.Random(3)
    for _ in range(300):
        ids = [rng.randrange(sp.vocab_size) for _ in range(rng.randint(0, 30))]
        assert "".join(stream(sp, ids)) == sp.decode(ids)


def test_stream_of_a_real_text(sp):
    text = hard_text(4)
    pieces = stream(sp, sp.encode(text))
    assert "".join(pieces) == text
    assert not any("\ufffd" in p for p in pieces)


def test_char_tokenizer_streams_too():
    tok = CharTokenizer.train("héllo 東京\n")
    ids = tok.encode("東京 héllo\n")
    assert "".join(stream(tok, ids)) == "東京 héllo\n"


# ---------------------------------------------------------------- files and labels


def test_save_load_gives_identical_ids(sp, tmp_path):
    files = sp.save(tmp_path)
    assert files == ["sentencepiece.model"] and (tmp_path / files[0]).is_file()
    loaded = load_tokenizer("sentencepiece", tmp_path)
    assert isinstance(loaded, SentencePieceTokenizer)
    assert loaded.vocab_size == sp.vocab_size
    for text in [hard_text(5), *UNSEEN]:
        assert loaded.encode(text) == sp.encode(text)
    assert [loaded.token_label(i) for i in range(sp.vocab_size)] == [sp.token_label(i) for i in range(sp.vocab_size)]


def test_training_is_deterministic():
    train, _ = split_text(hard_text())
    a = SentencePieceTokenizer.train(train, vocab_size=340)
    b = SentencePieceTokenizer.train(train, vocab_size=340)
    assert a.model_proto == b.model_proto


def test_token_labels_show_whitespace(ascii_sp):
    the = ascii_sp.sp.piece_to_id("▁the")
    assert the != ascii_sp.sp.unk_id() and ascii_sp.token_label(the) == "␣the"
    assert ascii_sp.token_label(ascii_sp.encode("\n")[0]) == "⏎"
    first_byte = ascii_sp.encode("東")[0]
    assert ascii_sp.token_label(first_byte) == "<0xE6>"


def test_registered_and_free_of_mlx():
    assert TOKENIZERS["sentencepiece"] is SentencePieceTokenizer
    result = run_cli("-c", "import sys, mlxgpt.tokenizers.sentencepiece as m; import sentencepiece; "
                           "assert sentencepiece.SentencePieceProcessor is m.spm.SentencePieceProcessor; "
                           "print('mlx.core' in sys.modules)")
    assert result.returncode == 0 and result.stdout.strip() == "False", result.stderr


# ---------------------------------------------------------------- vocabulary size limits (library level)


def test_vocab_size_limits_are_exact():
    """The sizes named in the errors are the real limits: they train, one beyond does not."""
    train, _ = split_text(hard_text())
    with pytest.raises(MlxgptError, match=r"use --vocab-size (\d+) or more") as small:
        SentencePieceTokenizer.train(train, vocab_size=260)
    minimum = int(small.value.args[0].rsplit("use --vocab-size ", 1)[1].split()[0])
    assert SentencePieceTokenizer.train(train, vocab_size=minimum).vocab_size == minimum
    for model_type in ("bpe", "unigram"):
        with pytest.raises(MlxgptError, match=r"largest workable size is (\d+)") as big:
            SentencePieceTokenizer.train(train, vocab_size=100_000, model_type=model_type)
        largest = int(big.value.args[0].split("largest workable size is ")[1].split(";")[0])
        assert SentencePieceTokenizer.train(train, vocab_size=largest, model_type=model_type).vocab_size == largest
        with pytest.raises(MlxgptError, match="largest workable"):
            SentencePieceTokenizer.train(train, vocab_size=largest + 1, model_type=model_type)


# ---------------------------------------------------------------- end to end through the CLI

SP_VOCAB = 300


@pytest.fixture(scope="module")
def sp_text_file(tmp_path_factory) -> Path:
    """Grammar text whose validation part (the last 10%) holds a character the training part lacks."""
    text = grammar_text(300)
    cut = int(len(text) * 0.95)
    text = text[:cut] + "The ☃ sees the fox.\n" + text[cut:]
    path = tmp_path_factory.mktemp("spdata") / "grammar-sp.txt"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def sp_run(tmp_path_factory, sp_text_file) -> Path:
    out = tmp_path_factory.mktemp("sprun") / "run"
    result = run_cli("train.py", "--data", sp_text_file, "--out", out, *TINY_FLAGS, "--tokenizer", "sentencepiece",
                     "--vocab-size", str(SP_VOCAB), "--max-iters", "120", "--eval-interval", "60",
                     "--eval-iters", "4", "--log-interval", "40", "--warmup-iters", "10", "--lr", "3e-3",
                     "--min-lr", "3e-4")
    assert result.returncode == 0, result.stderr
    assert "val bpc" in result.stdout and "(bpc " in result.stdout  # in the log and in the final summary
    return out


def evals(run: Path) -> list[dict]:
    lines = (run / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    return [e for e in map(json.loads, lines) if e["event"] == "eval"]


def test_sentencepiece_training_lowers_val_loss(sp_run):
    history = evals(sp_run)
    assert len(history) >= 2
    assert history[-1]["val_loss"] < history[0]["val_loss"] - 0.5
    assert history[-1]["val_bpc"] < history[0]["val_bpc"]
    config = json.loads((sp_run / "best" / "config.json").read_text(encoding="utf-8"))
    assert config["tokenizer"] == {"kind": "sentencepiece", "vocab_size": SP_VOCAB, "files": ["sentencepiece.model"]}
    assert config["model"]["vocab_size"] == SP_VOCAB


def test_tokenizer_learned_from_training_split_only(sp_run, sp_text_file):
    tok = load_tokenizer("sentencepiece", sp_run / "best")
    train, val = split_text(sp_text_file.read_text(encoding="utf-8"))
    assert "☃" in val and "☃" not in train
    assert tok.sp.piece_to_id("☃") == tok.sp.unk_id()  # not a piece: it comes out as bytes
    assert tok.decode(tok.encode(val)) == val


def test_sentencepiece_bpc_is_total_nats_per_character(sp_run, sp_text_file):
    tok = load_tokenizer("sentencepiece", sp_run / "best")
    _, val = split_text(sp_text_file.read_text(encoding="utf-8"))
    tokens, chars = len(tok.encode(val)), len(val)
    assert tokens < chars  # pieces are longer than a character, so bpc != loss / ln 2 here
    for e in evals(sp_run):
        assert e["val_bpc"] == pytest.approx(e["val_loss"] * tokens / chars / math.log(2), rel=1e-9)


def test_char_bpc_equals_val_loss_over_ln2(trained_run):
    history = evals(trained_run)
    assert history
    for e in history:
        assert e["val_bpc"] == pytest.approx(e["val_loss"] / math.log(2), rel=1e-9)


def test_generate_streams_from_a_sentencepiece_run(sp_run):
    """The CLI prints the prompt (byte-fallback characters intact), then exactly the text that
    generate() streams with the same seed and defaults, then a newline."""
    import mlxgpt
    from mlxgpt.generate import generate

    prompt = "The fox ☃ 東京"
    result = run_cli("generate.py", "--checkpoint", sp_run, "--prompt", prompt, "--max-new-tokens", "40",
                     "--seed", "1")
    assert result.returncode == 0, result.stderr
    model, tok = mlxgpt.load(sp_run)
    pieces = list(generate(model, tok, prompt, 40, seed=1, temperature=0.8))  # generate.py's default temperature
    assert len(pieces) == 40
    assert result.stdout == prompt + "".join(p.text for p in pieces) + "\n"


def test_generate_pieces_equal_decode(sp_run):
    import mlxgpt
    from mlxgpt.generate import generate

    model, tok = mlxgpt.load(sp_run)
    pieces = list(generate(model, tok, "The old ", 60, seed=3, temperature=1.5))
    assert "".join(p.text for p in pieces) == tok.decode([p.token for p in pieces])


# ---------------------------------------------------------------- errors through the real CLI


def train_sp(text_file: Path, out: Path, *extra: str):
    return run_cli("train.py", "--data", text_file, "--out", out, *TINY_FLAGS, "--max-iters", "1",
                   "--tokenizer", "sentencepiece", *extra)


def test_error_vocab_size_too_large(sp_text_file, tmp_path):
    line = assert_clean_failure(train_sp(sp_text_file, tmp_path / "r", "--vocab-size", "50000"),
                                "--vocab-size 50000", "largest workable size is")
    largest = line.split("largest workable size is ")[1].split(";")[0]
    assert SP_VOCAB < int(largest) < 50000
    assert not (tmp_path / "r").exists()  # nothing written for a failed start


def test_error_vocab_size_too_large_unigram(sp_text_file, tmp_path):
    assert_clean_failure(train_sp(sp_text_file, tmp_path / "r", "--vocab-size", "50000", "--sp-model-type", "unigram"),
                         "(unigram)", "largest workable size is")


@pytest.mark.parametrize("size", ["100", "0", "270"])
def test_error_vocab_size_below_byte_fallback_minimum(sp_text_file, tmp_path, size):
    assert_clean_failure(train_sp(sp_text_file, tmp_path / "r", "--vocab-size", size),
                         f"--vocab-size {size} is below", "256 byte-fallback pieces", "or more")


def test_error_vocab_size_with_char_tokenizer(sp_text_file, tmp_path):
    result = run_cli("train.py", "--data", sp_text_file, "--out", tmp_path / "r", *TINY_FLAGS, "--vocab-size", "500")
    assert_clean_failure(result, "--tokenizer sentencepiece only")


@pytest.mark.parametrize("damage", ["missing", "garbage", "empty", "truncated"])
def test_error_tokenizer_file_missing_or_corrupt(sp_run, tmp_path, damage):
    run = tmp_path / "run"
    shutil.copytree(sp_run, run)
    model_file = run / "best" / "sentencepiece.model"
    if damage == "missing":
        model_file.unlink()
    elif damage == "garbage":
        model_file.write_bytes(b"this is not a sentencepiece model\n" * 10)
    elif damage == "empty":
        model_file.write_bytes(b"")
    else:
        model_file.write_bytes(model_file.read_bytes()[:1000])
    word = "missing" if damage == "missing" else "corrupt"
    assert_clean_failure(run_cli("generate.py", "--checkpoint", run, "--max-new-tokens", "5"),
                         "sentencepiece.model", word)
