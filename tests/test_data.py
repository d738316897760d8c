"""Text -> token ids -> train/val arrays -> seeded batches; reading bad files; the packaged dataset."""

from __future__ import annotations

import bz2
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO_ROOT, TINY_FLAGS, grammar_text, run_cli

from mlxgpt import data
from mlxgpt.data import (DATASETS, PROMPT_TEXT, BatchSampler, Dataset, read_text, rereadable_path, resolve_data,
                         split_text)
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


# ---------------------------------------------------------------- the packaged dataset


def test_tiny_shakespeare_ships_inside_the_package(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no file called shakespeare here
    text = read_text(resolve_data("shakespeare"))
    assert len(text) == 1_115_394 and hashlib.sha256(text.encode()).hexdigest() == DATASETS["shakespeare"].sha256
    # what config.json records: the name, which --resume and eval read again
    assert rereadable_path(resolve_data("shakespeare")) == Path("shakespeare")


def test_a_file_that_exists_wins_over_the_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "shakespeare").write_text("a local file named like the dataset")
    assert read_text(resolve_data("shakespeare")) == "a local file named like the dataset"
    assert rereadable_path("shakespeare") == tmp_path / "shakespeare"  # absolute: a later run may start elsewhere
    assert resolve_data("no/such/file.txt").as_posix() == "no/such/file.txt"  # read_text reports it


def test_a_prompt_file_is_never_a_dataset(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(MlxgptError, match="prompt file shakespeare does not exist"):
        read_text("shakespeare", PROMPT_TEXT)


@pytest.mark.parametrize("damage, problem", [
    ("other text", "its SHA-256 differs"),
    ("cut short", "it cannot be decompressed"),
    ("missing", "it is missing"),
])
def test_a_damaged_packaged_copy_is_refused(tmp_path, monkeypatch, damage, problem):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(data, "DATASET_DIR", tmp_path)
    packaged = tmp_path / DATASETS["shakespeare"].filename
    compressed = bz2.compress(grammar_text(50).encode())
    if damage == "other text":
        packaged.write_bytes(compressed)
    elif damage == "cut short":
        packaged.write_bytes(compressed[:-20])
    with pytest.raises(MlxgptError) as info:
        read_text("shakespeare")
    message = str(info.value)
    assert problem in message and str(packaged) in message and "reinstall mlxgpt" in message and "\n" not in message


def test_the_first_run_needs_no_network_and_no_cache(tmp_path):
    """README's first command, offline: trained, resumed and evaluated from the packaged copy."""
    cache = tmp_path / "cache"
    closed = "http://127.0.0.1:9"  # a closed port: offline even on a machine with internet
    offline = {"MLXGPT_CACHE": str(cache), "https_proxy": closed,
               "HTTPS_PROXY": closed, "http_proxy": closed, "HTTP_PROXY": closed, "no_proxy": "", "NO_PROXY": ""}
    out = tmp_path / "run"
    flags = [*TINY_FLAGS, "--eval-iters", "2"]
    first = run_cli(REPO_ROOT / "train.py", "--data", "shakespeare", "--out", out, "--max-iters", "2", *flags,
                    env=offline)
    assert first.returncode == 0, first.stderr
    config = json.loads((out / "latest" / "config.json").read_text(encoding="utf-8"))
    assert config["data"] == "shakespeare" and config["data_sha256"] == DATASETS["shakespeare"].sha256
    assert not cache.exists()  # nothing downloaded, nothing cached

    resumed = run_cli(REPO_ROOT / "train.py", "--resume", "--out", out, "--max-iters", "3", *flags, env=offline)
    assert resumed.returncode == 0, resumed.stderr
    scored = run_cli("-m", "mlxgpt", "eval", "--checkpoint", out, env=offline)
    assert scored.returncode == 0, scored.stderr
    assert "text        shakespeare, val split: 111,540 characters" in scored.stdout
