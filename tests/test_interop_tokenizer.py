"""Our tokenizers in Hugging Face format (mlxgpt/interop/hf_tokenizer.py): the same ids and the same
decoded text in `tokenizers`, transformers' AutoTokenizer and mlx-lm's streaming detokenizer, on a
hard text and a long one; the refusals are one line; the write-time check catches a difference."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

pytest.importorskip("tokenizers")

from conftest import grammar_text  # noqa: E402

from mlxgpt.errors import MlxgptError  # noqa: E402
from mlxgpt.interop import hf_tokenizer as module  # noqa: E402
from mlxgpt.interop.hf_tokenizer import hf_tokenizer, write_hf_tokenizer  # noqa: E402
from mlxgpt.tokenizers.base import UnknownCharactersError  # noqa: E402
from mlxgpt.tokenizers.char import CharTokenizer  # noqa: E402
from mlxgpt.tokenizers.sentencepiece import SentencePieceTokenizer  # noqa: E402

HARD = ("  two leading, three   inside,\ttab\t\ttabs, CRLF\r\n\n\nthree newlines, digits 1623 and 3.14\n"
        "Greek Ωμέγα, Cyrillic привет, CJK 東京 北京市, Arabic مرحبا, Devanagari हिन्दी\n"
        "emoji 😀 👩\u200d👩\u200d👧 👍🏽 🏳️\u200d🌈, combining e\u0301 vs é, a literal ▁ and ▁▁x, NUL \x00, "
        "as text <0x41> <unk> ⁇ <s></s>, trailing  \t  ")
SCRIPTS = "".join(f"{line}\n" for line in [
    "Ωμέγα και άλφα, η γλώσσα.", "привет, как дела? Москва.", "東京 と 北京市 の 天気", "مرحبا بالعالم"] * 5)
REALISTIC = grammar_text(800, seed=7)  # ~20 KB
MAX_LENGTH = 64


def one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert message and "\n" not in message, message
    return message


@pytest.fixture(scope="module")
def char_tokenizer() -> CharTokenizer:
    return CharTokenizer.train(grammar_text(50) + HARD)  # every character of HARD is known


@pytest.fixture(scope="module")
def sp_tokenizer() -> SentencePieceTokenizer:
    # emoji, Devanagari, NUL, "▁", "<", ">" are unseen: they come out as byte-fallback pieces
    return SentencePieceTokenizer.train(grammar_text(300) + SCRIPTS, vocab_size=400)


@pytest.fixture(scope="module", params=["char", "sentencepiece"])
def exported(request, tmp_path_factory, char_tokenizer, sp_tokenizer):
    """(our tokenizer, the directory write_hf_tokenizer filled)."""
    ours = char_tokenizer if request.param == "char" else sp_tokenizer
    directory = tmp_path_factory.mktemp(f"hf-{request.param}")
    assert write_hf_tokenizer(ours, directory, model_max_length=MAX_LENGTH) == ["tokenizer.json",
                                                                               "tokenizer_config.json"]
    return ours, directory


def streamed(wrapper, ids: list[int]) -> str:
    """All ids through mlx-lm's streaming detokenizer, read after each token as mlx_lm.generate does."""
    detokenizer = wrapper.detokenizer
    detokenizer.reset()
    for i in ids:
        detokenizer.add_token(i)
        detokenizer.last_segment
    detokenizer.finalize()
    return detokenizer.text


# ---------------------------------------------------------------- same ids, same text


@pytest.mark.parametrize("text", [HARD, "", " ", "\n", "\n\n", REALISTIC], ids=["hard", "empty", "space", "newline",
                                                                                 "newlines", "realistic"])
def test_tokenizers_library_gives_our_ids_and_text(exported, text):
    from tokenizers import Tokenizer

    ours, directory = exported
    theirs = Tokenizer.from_file(str(directory / "tokenizer.json"))
    ids = ours.encode(text)
    assert theirs.encode(text).ids == ids
    assert theirs.decode(ids, skip_special_tokens=False) == ours.decode(ids) == text


@pytest.mark.parametrize("text", [HARD, REALISTIC], ids=["hard", "realistic"])
def test_transformers_gives_our_ids_and_text(exported, text):
    pytest.importorskip("transformers")
    from transformers import AutoTokenizer

    ours, directory = exported
    theirs = AutoTokenizer.from_pretrained(directory)
    ids = ours.encode(text)
    assert theirs(text, add_special_tokens=False)["input_ids"] == ids
    assert theirs(text)["input_ids"] == ids  # the default call adds nothing either
    assert theirs.encode(text) == ids
    assert theirs.decode(ids) == text
    assert (theirs.bos_token, theirs.eos_token, theirs.model_max_length) == (None, None, MAX_LENGTH)


@pytest.mark.parametrize("text", [HARD, REALISTIC], ids=["hard", "realistic"])
def test_mlx_lm_gives_our_ids_and_streams_our_text(exported, text):
    pytest.importorskip("mlx_lm")
    from mlx_lm.tokenizer_utils import load as load_tokenizer

    ours, directory = exported
    wrapper = load_tokenizer(Path(directory))
    ids = ours.encode(text)
    assert wrapper.encode(text) == ids
    assert streamed(wrapper, ids) == ours.decode(ids) == text


def test_every_token_decodes_alike(exported):
    """Each id alone, byte pieces and <unk> (" ⁇ ") included."""
    pytest.importorskip("transformers")
    from tokenizers import Tokenizer
    from transformers import AutoTokenizer

    ours, directory = exported
    theirs = Tokenizer.from_file(str(directory / "tokenizer.json"))
    auto = AutoTokenizer.from_pretrained(directory)
    for i in range(ours.vocab_size):
        assert theirs.decode([i], skip_special_tokens=False) == auto.decode([i]) == ours.decode([i]), i


def test_sentencepiece_unseen_characters_fall_back_to_bytes(sp_tokenizer):
    """The hard text really exercises byte fallback, the literal "▁" included."""
    ids = hf_tokenizer(sp_tokenizer).encode("😀▁").ids
    assert [sp_tokenizer.piece(i) for i in ids] == ["<0xF0>", "<0x9F>", "<0x98>", "<0x80>",
                                                    "<0xE2>", "<0x96>", "<0x81>"]


# ---------------------------------------------------------------- char specifics


def test_char_unknown_character_is_refused_everywhere(tmp_path, char_tokenizer):
    """Ours refuses a character it has no id for; so do tokenizers and transformers (no silent id)."""
    pytest.importorskip("transformers")
    from tokenizers import Tokenizer
    from transformers import AutoTokenizer

    write_hf_tokenizer(char_tokenizer, tmp_path, model_max_length=MAX_LENGTH)
    with pytest.raises(UnknownCharactersError):
        char_tokenizer.encode("Ж")
    with pytest.raises(Exception, match="UNK"):
        Tokenizer.from_file(str(tmp_path / "tokenizer.json")).encode("Ж")
    with pytest.raises(Exception, match="UNK"):
        AutoTokenizer.from_pretrained(tmp_path)("Ж")


def test_char_vocabulary_without_common_characters_streams_in_mlx_lm(tmp_path):
    """A DNA alphabet: mlx-lm picks its linear SentencePiece detokenizer for our char decoder, so it
    never runs its naive detokenizer's encode("a ,b") probe, which this vocabulary cannot encode."""
    pytest.importorskip("mlx_lm")
    from mlx_lm.tokenizer_utils import load as load_tokenizer

    ours = CharTokenizer.train("ACGT\n")
    write_hf_tokenizer(ours, tmp_path, model_max_length=MAX_LENGTH)
    wrapper = load_tokenizer(tmp_path)
    text = "GATTACA\nTTAG\n"
    ids = ours.encode(text)
    assert type(wrapper.detokenizer).__name__ == "SPMStreamingDetokenizer"
    assert wrapper.encode(text) == ids
    assert streamed(wrapper, ids) == text


# ---------------------------------------------------------------- files, eos, refusals


def test_config_adds_no_special_tokens(exported):
    _, directory = exported
    assert sorted(p.name for p in directory.iterdir()) == ["tokenizer.json", "tokenizer_config.json"]
    config = json.loads((directory / "tokenizer_config.json").read_text(encoding="utf-8"))
    assert config["tokenizer_class"] == "PreTrainedTokenizerFast"
    assert config["clean_up_tokenization_spaces"] is False
    assert config["model_max_length"] == MAX_LENGTH
    assert not config["add_bos_token"] and not config["add_eos_token"]
    assert "eos_token" not in config and "bos_token" not in config


def test_newline_eos_token(exported, tmp_path):
    """eos_token="\\n": a special token everywhere, and still exactly our ids."""
    pytest.importorskip("mlx_lm")
    from mlx_lm.tokenizer_utils import load as load_tokenizer

    ours, _ = exported
    write_hf_tokenizer(ours, tmp_path, model_max_length=MAX_LENGTH, eos_token="\n")
    assert json.loads((tmp_path / "tokenizer_config.json").read_text(encoding="utf-8"))["eos_token"] == "\n"
    wrapper = load_tokenizer(tmp_path)
    assert wrapper.eos_token_id == ours.end_id and wrapper.eos_token_ids == {ours.end_id}
    ids = ours.encode(HARD)
    assert wrapper.encode(HARD) == ids
    assert wrapper.decode(ids) == streamed(wrapper, ids) == HARD


def test_eos_token_that_would_change_ids_is_refused(exported, tmp_path):
    ours, _ = exported
    with pytest.raises(MlxgptError) as error:
        write_hf_tokenizer(ours, tmp_path, model_max_length=MAX_LENGTH, eos_token="<|endoftext|>")
    assert "not a single token" in one_line(error)
    if ours.kind == "sentencepiece":
        with pytest.raises(MlxgptError) as error:  # "e" is a piece, but inside "the", "he", ...
            write_hf_tokenizer(ours, tmp_path, model_max_length=MAX_LENGTH, eos_token="e")
        assert "contains it" in one_line(error)
    assert list(tmp_path.iterdir()) == []


def test_sentencepiece_unigram_is_refused_in_one_line(tmp_path):
    unigram = SentencePieceTokenizer.train(grammar_text(300), vocab_size=300, model_type="unigram")
    with pytest.raises(MlxgptError) as error:
        hf_tokenizer(unigram)
    message = one_line(error)
    assert "unigram" in message and "float32" in message and "--sp-model-type bpe" in message
    with pytest.raises(MlxgptError):
        write_hf_tokenizer(unigram, tmp_path, model_max_length=MAX_LENGTH)
    assert list(tmp_path.iterdir()) == []


def test_missing_tokenizers_library_is_one_line(monkeypatch, char_tokenizer):
    monkeypatch.setitem(sys.modules, "tokenizers", None)  # makes `import tokenizers` fail
    with pytest.raises(MlxgptError) as error:
        hf_tokenizer(char_tokenizer)
    assert "pip install -e '.[interop]'" in one_line(error)


# ---------------------------------------------------------------- the write-time check


def test_check_catches_different_ids(monkeypatch, tmp_path, char_tokenizer):
    """A converter that swaps two characters' ids: nothing is left written, and the error names a text."""
    real = module.hf_tokenizer
    swapped = list(char_tokenizer.chars)
    swapped[1], swapped[2] = swapped[2], swapped[1]
    monkeypatch.setattr(module, "hf_tokenizer", lambda tokenizer: real(CharTokenizer(swapped)))
    with pytest.raises(MlxgptError) as error:
        write_hf_tokenizer(char_tokenizer, tmp_path, model_max_length=MAX_LENGTH)
    assert "differs from mlxgpt's on the text" in one_line(error)
    assert list(tmp_path.iterdir()) == []


def test_check_catches_a_different_decode(monkeypatch, tmp_path, sp_tokenizer):
    """A decoder that shows <unk> differently: caught on that token alone."""
    monkeypatch.setattr(module, "UNK_TEXT", "<unk>")
    with pytest.raises(MlxgptError) as error:
        write_hf_tokenizer(sp_tokenizer, tmp_path, model_max_length=MAX_LENGTH)
    assert "decoding token 0" in one_line(error)
    assert list(tmp_path.iterdir()) == []
