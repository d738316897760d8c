"""Text -> token ids -> train/val arrays -> seeded batches; reading bad files; named datasets."""

from __future__ import annotations

import urllib.error
import urllib.request

import numpy as np
import pytest
from conftest import grammar_text

from mlxgpt.data import BatchSampler, Dataset, read_text, resolve_data, split_text
from mlxgpt.errors import MlxgptError
from mlxgpt.tokenizers import CharTokenizer, UnknownCharactersError


# ---------------------------------------------------------------- the char tokenizer


def test_char_tokenizer_is_sorted_and_round_trips(tmp_path):
    text = "hello, wörld\n"
    tokenizer = CharTokenizer.train(text)
    assert tokenizer.chars == sorted(set(text)) and tokenizer.vocab_size == len(set(text))
    ids = tokenizer.encode(text)
    assert ids[:2] == [tokenizer.chars.index("h"), tokenizer.chars.index("e")]
    assert tokenizer.decode(ids) == text
    # the vocabulary does not depend on the order characters first appear in
    assert CharTokenizer.train(text[::-1]).chars == tokenizer.chars
    tokenizer.save(tmp_path)
    assert CharTokenizer.load(tmp_path).chars == tokenizer.chars


def test_char_tokenizer_names_unknown_characters():
    tokenizer = CharTokenizer.train("abc ")
    with pytest.raises(UnknownCharactersError, match=r"2 character\(s\).*'x'.*'é'"):
        tokenizer.encode("a éx")


# ---------------------------------------------------------------- splits and arrays


def test_split_is_90_10_by_characters():
    text = "".join(chr(97 + i % 26) for i in range(1000))
    train, val = split_text(text)
    assert (len(train), len(val)) == (900, 100) and train + val == text


def test_dataset_holds_compact_token_arrays():
    text = grammar_text(50)
    tokenizer = CharTokenizer.train(text)
    data = Dataset.from_text(text, tokenizer, block_size=16)
    train, val = split_text(text)
    assert data.train.dtype == np.uint16 and data.val.dtype == np.uint16
    assert data.train.tolist() == tokenizer.encode(train) and data.val.tolist() == tokenizer.encode(val)
    assert (data.train_chars, data.val_chars) == (len(train), len(val))


@pytest.mark.parametrize("length, split", [(100, "validation"), (16, "training")])
def test_dataset_refuses_text_shorter_than_a_batch_row(length, split):
    text = grammar_text(50)[:length]  # 100 chars: the val split has 10 tokens < block 16 + 1
    with pytest.raises(MlxgptError, match=f"the {split} split has .* block_size\\+1 = 17"):
        Dataset.from_text(text, CharTokenizer.train(text), block_size=16)


# ---------------------------------------------------------------- batches


def test_batches_are_shifted_windows_and_seeded():
    ids = np.arange(100, dtype=np.uint16)  # token i at position i: windows are easy to check
    sampler = BatchSampler(ids, batch_size=4, block_size=8, seed=3)
    x, y = sampler.next(2)
    assert x.shape == y.shape == (2, 4, 8) and x.dtype == np.int32
    np.testing.assert_array_equal(y, x + 1)  # targets are the next tokens
    np.testing.assert_array_equal(np.diff(x, axis=-1), 1)  # contiguous windows
    assert x.min() >= 0 and y.max() <= 99
    again = BatchSampler(ids, batch_size=4, block_size=8, seed=3).next(2)
    np.testing.assert_array_equal(again[0], x)
    other = BatchSampler(ids, batch_size=4, block_size=8, seed=4).next(2)
    assert (other[0] != x).any()


def test_training_batches_depend_only_on_seed_and_iteration():
    """What lets --resume continue with the very same batches."""
    ids = np.arange(500, dtype=np.uint16)
    first = BatchSampler(ids, 4, 8, seed=1)
    straight = [first.batch(i, 2)[0] for i in range(6)]
    resumed = BatchSampler(ids, 4, 8, seed=1)
    for i in (3, 4, 5):
        np.testing.assert_array_equal(resumed.batch(i, 2)[0], straight[i])
    assert not np.array_equal(straight[0], straight[1])
    np.testing.assert_array_equal(np.diff(straight[0], axis=-1), 1)


def test_every_window_start_can_be_drawn():
    ids = np.arange(20, dtype=np.uint16)
    x, _ = BatchSampler(ids, batch_size=200, block_size=16, seed=0).next()
    assert set(x[0, :, 0].tolist()) == {0, 1, 2, 3}  # starts 0..len-block-1: the last window ends at the last token


# ---------------------------------------------------------------- reading files


@pytest.mark.parametrize("content, message", [
    (None, "does not exist"),
    (b"", "is empty"),
    (b"some text\x00\x01\x02 more", "looks binary"),
    ("café au lait".encode("latin-1"), "is not UTF-8 (bad byte at offset 3)"),
])
def test_read_text_explains_bad_files(tmp_path, content, message):
    path = tmp_path / "data.txt"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(MlxgptError, match=message.replace("(", r"\(").replace(")", r"\)")):
        read_text(path)


def test_read_text_refuses_a_directory(tmp_path):
    with pytest.raises(MlxgptError, match="is a directory"):
        read_text(tmp_path)


def test_read_text_reads_utf8(tmp_path):
    path = tmp_path / "ok.txt"
    path.write_text("ünïcödé ✓\n", encoding="utf-8")
    assert read_text(path) == "ünïcödé ✓\n"


# ---------------------------------------------------------------- named datasets


def test_existing_paths_are_used_as_given(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "shakespeare").write_text("a local file named like the dataset")
    monkeypatch.setattr(urllib.request, "urlopen", _no_network)
    assert resolve_data("shakespeare").read_text() == "a local file named like the dataset"
    assert resolve_data("no/such/file.txt").as_posix() == "no/such/file.txt"  # read_text reports it


def test_named_dataset_is_downloaded_once_into_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MLXGPT_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    calls = []

    class Response:
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def read(self):
            return b"FAKE PLAYER:\nA stand-in for the downloaded text.\n"

    def fake_urlopen(url, timeout=None):
        calls.append(url)
        return Response()

    monkeypatch.setattr(urllib.request, "urlopen", fake_urlopen)
    path = resolve_data("shakespeare")
    assert path == tmp_path / "cache" / "shakespeare.txt" and path.read_text().startswith("FAKE PLAYER")
    assert resolve_data("shakespeare") == path and len(calls) == 1  # the second time, from the cache
    assert "tinyshakespeare" in calls[0]
    assert list(path.parent.iterdir()) == [path]  # no partial file left behind


def _no_network(url, timeout=None):
    raise urllib.error.URLError("[Errno -2] Name or service not known")


def test_offline_download_says_where_to_put_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("MLXGPT_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(urllib.request, "urlopen", _no_network)
    target = tmp_path / "cache" / "shakespeare.txt"
    with pytest.raises(MlxgptError) as info:
        resolve_data("shakespeare")
    message = str(info.value)
    assert str(target) in message and "--data PATH" in message and "\n" not in message
    assert not target.exists() and not target.with_suffix(".part").exists()
