"""Input the user does not control well: FIFOs, devices, huge files, standard input, a broken
cache variable, non-finite numbers, and flags that only fail halfway through the output.

Every case goes through the real CLI in a subprocess (one line on stderr, no traceback, nothing
half-printed) except where a test needs a tiny size limit or an endless stream: those call the
one reading helper, mlxgpt.data.read_bytes, directly. No test can hang: each subprocess has a timeout.
"""

from __future__ import annotations

import io
import json
import os
import sys
import socket
from pathlib import Path

import pytest
from conftest import REPO_ROOT, TINY_FLAGS, assert_clean_failure, grammar_text, run_cli

from mlxgpt import data
from mlxgpt.errors import MlxgptError

TIMEOUT = 120  # seconds: a FIFO read that blocks fails the test instead of hanging it
REGULAR_FILE_HINT = "pass a regular file, or - to read standard input"
posix_only = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs (POSIX)")


def train(*args, **kwargs):
    return run_cli(REPO_ROOT / "train.py", *args, timeout=TIMEOUT, **kwargs)


def generate(*args, **kwargs):
    return run_cli(REPO_ROOT / "generate.py", *args, timeout=TIMEOUT, **kwargs)


def sparse_file(path: Path, size: int) -> Path:
    """A file of `size` bytes that takes no disk space (and must not be read to be refused)."""
    with open(path, "wb") as f:
        f.truncate(size)
    return path


# ---------------------------------------------------------------- 1. bounded input: kinds of file


@pytest.fixture
def fifo(tmp_path) -> Path:
    """A named pipe nobody writes to: opening it for reading would block forever."""
    path = tmp_path / "pipe.txt"
    os.mkfifo(path)
    return path


@posix_only
def test_a_fifo_as_data_is_refused_without_blocking(fifo, tmp_path):
    line = assert_clean_failure(train("--data", fifo, "--out", tmp_path / "run", *TINY_FLAGS), REGULAR_FILE_HINT)
    assert str(fifo) in line and "FIFO" in line
    assert not (tmp_path / "run").exists()


@posix_only
def test_a_fifo_as_eval_data_is_refused_without_blocking(fifo, trained_run):
    result = run_cli("-m", "mlxgpt", "eval", "--checkpoint", trained_run, "--data", fifo, timeout=TIMEOUT)
    assert_clean_failure(result, str(fifo), REGULAR_FILE_HINT)
    assert result.stdout == ""


@posix_only
def test_a_fifo_as_prompt_file_is_refused_without_blocking(fifo, trained_run):
    result = generate("--checkpoint", trained_run, "--prompt-file", fifo, "--max-new-tokens", "3")
    assert_clean_failure(result, "prompt file", str(fifo), REGULAR_FILE_HINT)
    assert result.stdout == ""


@pytest.mark.skipif(not os.path.exists("/dev/null"), reason="needs /dev/null")
def test_a_character_device_as_prompt_file_is_refused(trained_run):
    """/dev/null reads as empty and /dev/zero as endless: neither is a prompt."""
    result = generate("--checkpoint", trained_run, "--prompt-file", "/dev/null")
    assert_clean_failure(result, "/dev/null is a character device", REGULAR_FILE_HINT)
    assert result.stdout == ""


@pytest.mark.skipif(not hasattr(socket, "AF_UNIX"), reason="needs Unix sockets")
def test_a_socket_as_data_is_refused(tmp_path):
    path = tmp_path / "s.sock"
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(path))
        assert_clean_failure(train("--data", path, "--out", tmp_path / "run", *TINY_FLAGS),
                             "is a socket", REGULAR_FILE_HINT)


# ---------------------------------------------------------------- 1. bounded input: size


def test_data_one_byte_over_the_limit_is_refused_unread(tmp_path):
    big = sparse_file(tmp_path / "big.txt", data.MAX_DATA_BYTES + 1)
    line = assert_clean_failure(train("--data", big, "--out", tmp_path / "run", *TINY_FLAGS),
                                str(big), f"{data.MAX_DATA_BYTES:,}-byte limit of --data")
    assert "binary" not in line  # refused for its size, before a byte of it was read


def test_a_prompt_file_one_byte_over_the_limit_is_refused(tmp_path, trained_run):
    big = sparse_file(tmp_path / "prompt.txt", data.MAX_PROMPT_BYTES + 1)
    result = generate("--checkpoint", trained_run, "--prompt-file", big)
    assert_clean_failure(result, str(big), f"{data.MAX_PROMPT_BYTES:,}-byte limit of --prompt-file")
    assert result.stdout == ""


@pytest.fixture
def small():
    """--data with a limit of 10 bytes."""
    return data.TextSource("data file", "--data", 10, "to learn from")


@pytest.mark.parametrize("size, accepted", [(10, True), (11, False)])
def test_the_limit_is_exact_for_files(tmp_path, small, size, accepted):
    path = tmp_path / "t.txt"
    path.write_bytes(b"a" * size)
    if accepted:
        assert data.read_bytes(path, small) == (b"a" * 10, f"data file {path}")
    else:
        with pytest.raises(MlxgptError, match=r"over the 10-byte limit of --data"):
            data.read_bytes(path, small)


class EndlessStream(io.RawIOBase):
    """Standard input that never ends (like `yes | mlxgpt train --data -`), counting what is read."""

    def __init__(self) -> None:
        self.read_so_far = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        buffer[:] = b"y" * len(buffer)
        self.read_so_far += len(buffer)
        return len(buffer)


def test_endless_standard_input_is_refused_after_limit_plus_one_bytes(monkeypatch, small):
    endless = EndlessStream()
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(endless))
    with pytest.raises(MlxgptError, match=r"^standard input is over the 10-byte limit of --data"):
        data.read_bytes("-", small)
    assert endless.read_so_far == 11


def test_standard_input_within_the_limit(monkeypatch, small):
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"0123456789")))
    assert data.read_bytes("-", small) == (b"0123456789", "standard input")


# ---------------------------------------------------------------- 1. standard input, and paths read again


def test_data_from_standard_input_trains(tmp_path):
    text = grammar_text(200, seed=5)
    out = tmp_path / "run"
    result = train("--data", "-", "--out", out, *TINY_FLAGS, "--max-iters", "2", input=text)
    assert result.returncode == 0, result.stderr
    assert "completed at iter 2" in result.stdout
    vocab = json.loads((out / "best" / "char_vocab.json").read_text(encoding="utf-8"))["chars"]
    assert "".join(vocab) == "".join(sorted(set(text)))  # the model learned the text that came on stdin


def test_prompt_from_standard_input(trained_run):
    result = generate("--checkpoint", trained_run, "--prompt-file", "-", "--temperature", "0",
                      "--max-new-tokens", "4", input="The old ")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("The old ") and len(result.stdout) == len("The old ") + 4 + 1


def test_empty_standard_input_is_one_line(tmp_path):
    result = train("--data", "-", "--out", tmp_path / "run", *TINY_FLAGS, input="")
    assert_clean_failure(result, "standard input is empty")


def test_what_can_be_read_again(tmp_path, monkeypatch):
    regular = tmp_path / "text.txt"
    regular.write_text("hello\n")
    monkeypatch.chdir(tmp_path)
    assert data.is_stdin("-") and data.is_stdin(Path("-")) and not data.is_stdin("./-")
    assert data.rereadable_path("text.txt") == regular.resolve()  # absolute: a later run may start elsewhere
    assert data.rereadable_path("-") is None
    assert data.rereadable_path(tmp_path / "missing.txt") is None
    assert data.rereadable_path(tmp_path) is None
    if hasattr(os, "mkfifo"):
        os.mkfifo(tmp_path / "pipe")
        assert data.rereadable_path(tmp_path / "pipe") is None
    if os.path.exists("/dev/null"):
        assert data.rereadable_path("/dev/null") is None
    if os.path.isfile("/proc/self/status"):  # a regular file, but another one for every process
        assert data.rereadable_path("/proc/self/status") is None


# ---------------------------------------------------------------- 2. the environment


# ---------------------------------------------------------------- 3. non-finite numbers


@pytest.mark.parametrize("flags, flag", [
    (["--temperature", "inf"], "--temperature"),
    (["--temperature=-inf"], "--temperature"),  # '=': argparse reads a bare -inf as an option
    (["--top-p", "nan"], "--top-p"),
    (["--min-p=-inf"], "--min-p"),
    (["--min-p", "NaN"], "--min-p"),
])
def test_generate_refuses_non_finite_numbers(trained_run, flags, flag):
    result = generate("--checkpoint", trained_run, "--max-new-tokens", "3", *flags)
    assert_clean_failure(result, f"{flag} must be a finite number")
    assert result.stdout == ""


@pytest.mark.parametrize("flags, flag", [
    (["--lr", "inf"], "--lr"),
    (["--min-lr", "nan"], "--min-lr"),
    (["--grad-clip", "NaN"], "--grad-clip"),
    (["--weight-decay=-inf"], "--weight-decay"),
    (["--time-budget", "nan"], "--time-budget"),
])
def test_train_refuses_non_finite_numbers(text_file, tmp_path, flags, flag):
    result = train("--data", text_file, "--out", tmp_path / "run", *TINY_FLAGS, "--max-iters", "2", *flags)
    assert_clean_failure(result, f"{flag} must be a finite number")
    assert not (tmp_path / "run").exists()


def test_generate_refuses_a_temperature_too_small_for_float32(trained_run):
    """1e-40 is below float32's normal range: the logits would divide into NaNs and print garbage."""
    result = generate("--checkpoint", trained_run, "--max-new-tokens", "3", "--temperature", "1e-40")
    assert_clean_failure(result, "--temperature must be 0 (greedy) or at least")
    assert result.stdout == ""


@pytest.mark.parametrize("value", ["inf", "NaN", "1e-40"])
def test_inspect_next_refuses_temperatures_that_are_not_numbers(trained_run, value):
    result = run_cli("-m", "mlxgpt", "inspect", "next", "--checkpoint", trained_run, "--prompt", "The",
                     "--temperature", value, timeout=TIMEOUT)
    assert_clean_failure(result, "--temperature must be")
    assert result.stdout == ""


# ---------------------------------------------------------------- 4. nothing printed before a failure


def test_the_last_sample_seed_is_checked_before_the_first_sample(trained_run):
    seeds_end = 2**64 - 1
    result = generate("--checkpoint", trained_run, "--max-new-tokens", "3", "--seed", str(seeds_end - 1),
                      "--num-samples", "3")  # the third sample would need seed 2**64
    assert_clean_failure(result, "--seed", "--num-samples 3", str(seeds_end - 2))
    assert result.stdout == ""
    fits = generate("--checkpoint", trained_run, "--max-new-tokens", "3", "--seed", str(seeds_end - 2),
                    "--num-samples", "3", "--prompt", "The ")
    assert fits.returncode == 0, fits.stderr
    assert fits.stdout.count("The ") == 3


@pytest.mark.parametrize("flags, fragment", [
    (["--stop", ""], "--stop is empty"),  # an empty --stop used to be ignored without a word
    (["--stop", "\u00a7"], "can never appear"),  # a character this char model cannot produce
    (["--prompt", "", "--show-probs", "3"], "the prompt is empty"),  # the table header came first
])
def test_flags_that_fail_print_nothing(trained_run, flags, fragment):
    result = generate("--checkpoint", trained_run, "--max-new-tokens", "3", "--num-samples", "2", *flags)
    assert_clean_failure(result, fragment)
    assert result.stdout == ""


def test_prompt_and_prompt_file_together_are_refused(trained_run, tmp_path):
    """One of them used to be ignored without a word."""
    prompt = tmp_path / "prompt.txt"
    prompt.write_text("The king ", encoding="utf-8")
    result = generate("--checkpoint", trained_run, "--prompt", "The queen ", "--prompt-file", prompt)
    assert result.returncode == 2
    assert_clean_failure(result, "--prompt-file", "not allowed with argument --prompt")
    assert result.stdout == ""
