"""Every bad input, through the real CLI in a subprocess: a non-zero exit status,
exactly one line on stderr, no traceback, and nothing on disk lost.
Plus: the entry points answer --help."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path

import pytest
from conftest import REPO_ROOT, TINY_FLAGS, assert_clean_failure, grammar_text, run_cli


def snapshot(directory: Path) -> dict[str, str]:
    """Every file under directory (hidden ones too) with a hash of its bytes."""
    return {str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.rglob("*")) if p.is_file()}


@pytest.fixture
def run_copy(trained_run, tmp_path) -> Path:
    """A private copy of the shared trained run, free to damage."""
    copy = tmp_path / "run"
    shutil.copytree(trained_run, copy)
    return copy


def train(*args, **kwargs):
    return run_cli(REPO_ROOT / "train.py", *args, **kwargs)


def generate(*args, **kwargs):
    return run_cli(REPO_ROOT / "generate.py", *args, **kwargs)


# ---------------------------------------------------------------- train.py: the data


def _write(path: Path, content: bytes | str | None) -> Path:
    if isinstance(content, str):
        path.write_text(content, encoding="utf-8")
    elif isinstance(content, bytes):
        path.write_bytes(content)
    return path


@pytest.mark.parametrize("content, fragments", [
    pytest.param(None, ["does not exist", "--data PATH"], id="missing"),
    pytest.param(b"", ["is empty"], id="empty"),
    pytest.param(b"First line\n\x00\x00\x00\x01binary\xff", ["looks binary", "NUL"], id="binary"),
    pytest.param("Caf\u00e9 cr\u00e8me br\u00fbl\u00e9e. ".encode("latin-1") * 50, ["is not UTF-8", "iconv"],
                 id="latin-1"),
    pytest.param("The cat sat.\n" * 4, ["block_size+1 = 17", "--block-size"], id="too-short"),  # 5-token val split
])
def test_bad_data_files(tmp_path, content, fragments):
    data = _write(tmp_path / "data.txt", content)
    result = train("--data", data, "--out", tmp_path / "run", *TINY_FLAGS)
    line = assert_clean_failure(result, *fragments)
    if content is not None:
        assert str(data) in line or "split" in line
    assert not (tmp_path / "run").exists()


def test_a_directory_as_data(tmp_path):
    assert_clean_failure(train("--data", tmp_path, "--out", tmp_path / "run", *TINY_FLAGS), "is a directory")


def test_no_data_at_all(tmp_path):
    assert_clean_failure(train("--out", tmp_path / "run", *TINY_FLAGS), "no training text", "--data")


# ---------------------------------------------------------------- train.py: shapes and flag values


@pytest.mark.parametrize("flags, fragments", [
    (["--n-embd", "30", "--n-head", "4"], ["n_embd (30) must be divisible by n_head (4)"]),
    (["--dropout", "1.5"], ["--dropout"]),
    (["--batch-size", "0"], ["--batch-size must be at least 1"]),
    (["--max-iters", "0"], ["--max-iters must be at least 1"]),
    (["--lr", "-0.1"], ["--lr"]),
    (["--lr", "1e-4", "--min-lr", "1e-3"], ["--min-lr"]),
    (["--warmup-iters", "-5"], ["--warmup-iters"]),
    (["--block-size", "0"], ["block_size must be at least 1"]),
    (["--seed", "-1"], ["--seed must be between 0 and 2**64 - 1"]),
    (["--pos-embedding", "sinusoidal", "--n-embd", "33", "--n-head", "3"], ["even"]),
])
def test_impossible_settings(text_file, tmp_path, flags, fragments):
    result = train("--data", text_file, "--out", tmp_path / "run", *TINY_FLAGS, *flags)
    assert_clean_failure(result, *fragments)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("flags, fragments", [
    (["--max-iters", "ten"], ["--max-iters", "invalid int value", "--help"]),
    (["--dropout", "lots"], ["--dropout", "invalid float value"]),
    (["--preset", "huge"], ["--preset", "invalid choice"]),
    (["--pos-embedding", "rotary"], ["--pos-embedding", "invalid choice"]),
    (["--n-layers", "2"], ["unrecognized arguments: --n-layers"]),
    (["--data"], ["--data", "expected one argument"]),
])
def test_argparse_errors_are_one_line(text_file, tmp_path, flags, fragments):
    result = train("--data", text_file, "--out", tmp_path / "run", *flags)
    assert result.returncode == 2
    assert_clean_failure(result, *fragments)


@pytest.mark.parametrize("where", ["file", "inside a file"])
def test_run_directory_that_cannot_be_written(text_file, tmp_path, where):
    blocker = _write(tmp_path / "notes.txt", "not a directory\n")
    out = blocker if where == "file" else blocker / "run"
    result = train("--data", text_file, "--out", out, *TINY_FLAGS, "--max-iters", "3")
    assert_clean_failure(result, "is a file, not a directory" if where == "file" else "cannot write the run directory",
                         "--out")
    assert blocker.read_text() == "not a directory\n"


# ---------------------------------------------------------------- train.py: existing runs are never lost


def test_an_existing_run_is_not_replaced_without_asking(run_copy, text_file):
    before = snapshot(run_copy)
    result = train("--data", text_file, "--out", run_copy, *TINY_FLAGS, "--max-iters", "5")
    assert_clean_failure(result, "already holds a trained run", "--resume", "--overwrite")
    assert snapshot(run_copy) == before


@pytest.mark.parametrize("bad", ["empty data", "bad shape", "missing data"])
def test_a_failing_overwrite_deletes_nothing(run_copy, tmp_path, text_file, bad):
    before = snapshot(run_copy)
    data, flags = text_file, []
    if bad == "empty data":
        data = _write(tmp_path / "empty.txt", b"")
    elif bad == "missing data":
        data = tmp_path / "missing.txt"
    else:
        flags = ["--n-embd", "30", "--n-head", "4"]
    assert_clean_failure(train("--data", data, "--out", run_copy, "--overwrite", *TINY_FLAGS, *flags))
    assert snapshot(run_copy) == before


def test_resume_with_a_different_vocabulary(run_copy, tmp_path):
    other = _write(tmp_path / "other.txt", grammar_text(300, seed=2) + "Zebras, quoth she!\n")
    before = snapshot(run_copy)
    result = train("--resume", "--out", run_copy, "--data", other, "--max-iters", "300", "--no-ui")
    assert_clean_failure(result, "is not the text", str(other))
    assert snapshot(run_copy) == before
    config = json.loads((run_copy / "latest" / "config.json").read_text())
    del config["data_sha256"]  # a run from before the hash was recorded: its vocabulary is still checked
    (run_copy / "latest" / "config.json").write_text(json.dumps(config))
    result = train("--resume", "--out", run_copy, "--data", other, "--max-iters", "300", "--no-ui")
    assert_clean_failure(result, "different vocabulary", str(other))


def test_resume_cannot_change_the_model_shape(run_copy):
    before = snapshot(run_copy)
    result = train("--resume", "--out", run_copy, "--n-layer", "3", "--max-iters", "300", "--no-ui")
    assert_clean_failure(result, "cannot change the model's shape", "n_layer")
    assert snapshot(run_copy) == before


def test_resume_needs_a_run(tmp_path):
    assert_clean_failure(train("--resume", "--no-ui"), "--resume needs the run directory", "--out")
    assert_clean_failure(train("--resume", "--out", tmp_path, "--no-ui"), "nothing to resume", str(tmp_path))


def test_resume_after_a_crash_between_the_checkpoint_renames(run_copy):
    """A save that died between its two renames leaves the previous latest/ as
    .latest.old: --resume must continue from it rather than say there is nothing."""
    (run_copy / "latest").rename(run_copy / ".latest.old")
    result = train("--resume", "--out", run_copy, "--max-iters", "205", "--no-ui")
    assert result.returncode == 0, result.stderr
    assert "resuming at iter 200" in result.stdout
    assert json.loads((run_copy / "latest" / "state.json").read_text())["iter"] == 205
    assert not (run_copy / ".latest.old").exists()


def test_resume_from_a_corrupt_checkpoint(run_copy):
    config = run_copy / "latest" / "config.json"
    config.write_text(config.read_text()[:40])
    before = snapshot(run_copy)
    assert_clean_failure(train("--resume", "--out", run_copy, "--max-iters", "300", "--no-ui"), "corrupt")
    assert snapshot(run_copy) == before


# ---------------------------------------------------------------- generate.py: checkpoints


def test_checkpoint_directory_missing(tmp_path):
    result = generate("--checkpoint", tmp_path / "nope", "--max-new-tokens", "5")
    assert_clean_failure(result, "does not exist", str(tmp_path / "nope"))


def test_checkpoint_is_a_file_or_an_empty_directory(tmp_path):
    (tmp_path / "file.txt").write_text("hello")
    assert_clean_failure(generate("--checkpoint", tmp_path / "file.txt"), "not a directory")
    assert_clean_failure(generate("--checkpoint", tmp_path), "holds no mlxgpt checkpoint")


def test_no_checkpoint_given_and_none_trained(tmp_path):
    result = generate(cwd=tmp_path)  # the default: the newest run under ./out/
    assert_clean_failure(result, "no trained model found under out")


def _garbage(path: Path) -> None:
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8)


def _truncate(path: Path) -> None:
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 3])


def _other_program(path: Path) -> None:  # e.g. a Hugging Face GPT-2 config
    path.write_text(json.dumps({"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "n_embd": 768}))


@pytest.mark.parametrize("which, damage, fragments", [
    ("model.safetensors", _garbage, ["model.safetensors is corrupt"]),
    ("model.safetensors", _truncate, ["model.safetensors is corrupt"]),
    ("model.safetensors", Path.unlink, ["model.safetensors is missing"]),
    ("config.json", _other_program, ["not an mlxgpt checkpoint", "another program"]),
    ("config.json", _truncate, ["config.json is unreadable or corrupt"]),
    ("char_vocab.json", _truncate, ["char_vocab.json is corrupt"]),
])
def test_damaged_checkpoints(run_copy, which, damage, fragments):
    damage(run_copy / "best" / which)
    before = snapshot(run_copy)
    result = generate("--checkpoint", run_copy / "best", "--prompt", "The ", "--max-new-tokens", "5")
    assert_clean_failure(result, *fragments)
    assert result.stdout == ""
    assert snapshot(run_copy) == before


def test_unknown_prompt_characters_are_named(trained_run):
    result = generate("--checkpoint", trained_run, "--prompt", "The €uro Zone", "--max-new-tokens", "5")
    assert_clean_failure(result, "2 character(s) not in the model's vocabulary", "'Z' '€'")
    assert result.stdout == ""  # fails before printing anything


@pytest.mark.parametrize("flags, fragments", [
    (["--temperature", "-1"], ["--temperature must be >= 0"]),
    (["--top-k", "0"], ["--top-k must be >= 1"]),
    (["--top-p", "1.5"], ["--top-p must be in (0, 1]"]),
    (["--top-p", "0"], ["--top-p"]),
    (["--min-p", "2"], ["--min-p must be in [0, 1]"]),
    (["--max-new-tokens", "0"], ["--max-new-tokens"]),
    (["--num-samples", "0"], ["--num-samples"]),
    (["--seed", "-5"], ["--seed must be between 0 and 2**64 - 1"]),
])
def test_bad_sampling_values(trained_run, flags, fragments):
    assert_clean_failure(generate("--checkpoint", trained_run, *flags), *fragments)


@pytest.mark.parametrize("flags, fragments", [
    (["--temperature", "hot"], ["--temperature", "invalid float value"]),
    (["--top-k", "2.5"], ["--top-k", "invalid int value"]),
    (["--prompt"], ["--prompt", "expected one argument"]),
])
def test_generate_argparse_errors(trained_run, flags, fragments):
    result = generate("--checkpoint", trained_run, *flags)
    assert result.returncode == 2
    assert_clean_failure(result, *fragments)


def test_empty_prompt(trained_run):
    assert_clean_failure(generate("--checkpoint", trained_run, "--prompt", ""), "the prompt is empty")


def test_bad_prompt_files(trained_run, tmp_path):
    assert_clean_failure(generate("--checkpoint", trained_run, "--prompt-file", tmp_path / "nope.txt"),
                         "prompt file", "does not exist")
    latin1 = _write(tmp_path / "latin1.txt", "Caf\u00e9".encode("latin-1"))
    assert_clean_failure(generate("--checkpoint", trained_run, "--prompt-file", latin1), "not UTF-8")
    assert_clean_failure(generate("--checkpoint", trained_run, "--prompt-file", tmp_path), "is a directory")


def test_module_entry_point_errors(tmp_path):
    result = run_cli("-m", "mlxgpt")
    assert result.returncode == 2
    assert_clean_failure(result, "required")
    assert_clean_failure(run_cli("-m", "mlxgpt", "frobnicate"), "invalid choice")
    assert_clean_failure(run_cli("-m", "mlxgpt", "generate", "--checkpoint", tmp_path / "nope"), "does not exist")


# ---------------------------------------------------------------- the entry points answer --help


@pytest.mark.parametrize("args, flags", [
    (["train.py", "--help"], ["--data", "--preset", "--resume", "--grad-accum", "--pos-embedding", "--tokenizer"]),
    (["generate.py", "--help"], ["--checkpoint", "--prompt", "--temperature", "--top-k", "--top-p", "--min-p",
                                 "--num-samples", "--stop", "--seed"]),
    (["-m", "mlxgpt", "--help"], ["train", "generate"]),
    (["-m", "mlxgpt", "train", "--help"], ["--data", "--max-iters"]),
    (["-m", "mlxgpt", "generate", "--help"], ["--checkpoint", "--max-new-tokens"]),
])
def test_help(args, flags):
    result = run_cli(*args)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    for flag in flags:
        assert flag in result.stdout


def project_scripts(pyproject: str) -> dict[str, str]:
    """[project.scripts] of a pyproject.toml (tomllib is Python 3.11+; we support 3.10)."""
    try:
        import tomllib
    except ImportError:
        section = re.search(r"^\[project\.scripts\]\n(.*?)(?=^\[|\Z)", pyproject, re.M | re.S).group(1)
        return dict(re.findall(r'^([\w-]+)\s*=\s*"([^"]+)"', section, re.M))
    return tomllib.loads(pyproject)["project"]["scripts"]


def test_console_script_targets_exist():
    """pyproject's [project.scripts] point at callables that answer --help."""
    scripts = project_scripts((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert "mlxgpt" in scripts
    for target in scripts.values():
        module_name, function_name = target.split(":")
        module = __import__(module_name, fromlist=[function_name])
        with pytest.raises(SystemExit) as exit_info:
            getattr(module, function_name)(["--help"])
        assert exit_info.value.code == 0


def test_train_then_generate_end_to_end_with_default_checkpoint(trained_run, tmp_path):
    """generate.py with no --checkpoint uses the newest run under ./out/."""
    shutil.copytree(trained_run, tmp_path / "out" / "grammar")
    result = run_cli(REPO_ROOT / "generate.py", "--prompt", "The ", "--temperature", "0", "--max-new-tokens", "10",
                     cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("The ") and len(result.stdout) == 4 + 10 + 1
