"""Whole-example sampling from a --format lines model and its report: edit distances against
hand-computed ones and a plain DP, the fractions on hand-made samples, sampling a tiny model
trained on made-up words (ended, seeded, batch-size independent), and the `sample` and
generate.py commands, bad inputs included."""

from __future__ import annotations

import json
import random

import pytest
from conftest import REPO_ROOT, TINY_FLAGS, assert_clean_failure, run_cli

import mlxgpt
from mlxgpt.data import split_examples
from mlxgpt.errors import MlxgptError
from mlxgpt.samples import ExampleIndex, Rules, Sample, identity, report, sample_examples

CONSONANTS, VOWELS = "bdgklmnprst", "aeiou"
ALPHABET = CONSONANTS + VOWELS
MIN_LEN, MAX_LEN = 2, 6  # words of 1 to 3 syllables


def word_lines(count: int = 500, seed: int = 3) -> str:
    """Made-up words from a tiny grammar: 1 to 3 consonant-vowel syllables ('bado', 'ki', 'metusa')."""
    rng = random.Random(seed)
    words = ("".join(rng.choice(CONSONANTS) + rng.choice(VOWELS) for _ in range(rng.randint(1, 3)))
             for _ in range(count))
    return "".join(word + "\n" for word in words)


def levenshtein(a: str, b: str) -> int:
    """The textbook table, row by row: the reference for ExampleIndex."""
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def samples_of(*texts: str, capped: tuple[int, ...] = ()) -> list[Sample]:
    return [Sample(text, [], i in capped) for i, text in enumerate(texts)]


# ---------------------------------------------------------------- edit distance and the report


def test_edit_distances_by_hand():
    index = ExampleIndex(["sitting", "lawn", "kitten", "abc"])
    assert index.distances("kitten").tolist() == [3, 5, 0, 6]  # kitten -> sitting: k/s, e/i, +g
    assert index.distances("flaw").tolist() == [7, 2, 6, 4]  # flaw -> lawn: -f, +n
    assert index.distances("").tolist() == [7, 4, 6, 3]  # from nothing: insert every character
    assert index.distances("€").tolist() == [7, 4, 6, 3]  # a character no example has


@pytest.mark.parametrize("longest", [5, 64, 65, 150])  # one word of bits, exactly full, and several words
def test_edit_distances_equal_the_textbook_table(longest):
    rng = random.Random(longest)
    examples = ["".join(rng.choice("abc") for _ in range(rng.randint(1, longest))) for _ in range(30)]
    index = ExampleIndex(examples)
    for _ in range(8):
        text = "".join(rng.choice("abcd") for _ in range(rng.randint(0, longest + 3)))
        assert index.distances(text).tolist() == [levenshtein(text, e) for e in index.examples]


def test_nearest_example_and_identity():
    index = ExampleIndex(["bado", "kimetu", "bada"])
    near = index.nearest("badu")
    assert (near.example, near.distance, near.identity) == ("bado", 1, 0.75)  # of two at distance 1, the first
    assert index.nearest("kimetu").identity == 1.0
    assert index.nearest("kimet").example == "kimetu"  # distance 1; "bado" and "bada" are 4 away
    assert identity(2, "abcd", "ab") == 0.5 and identity(3, "abc", "xyz") == 0.0


def test_report_on_hand_made_samples():
    training = ["bado", "kime", "bado", "tusa"]
    result = report(samples_of("bado", "bado", "kimu", "x", "tusakimetusa", capped=(4,)), training,
                    alphabet="abdekimostu", min_len=2, max_len=6)
    assert result.n == 5
    assert result.valid == [True, True, True, False, False]  # "x": not in the alphabet, too short; the last too long
    assert result.valid_fraction == 3 / 5
    assert result.unique_fraction == 4 / 5  # bado twice
    assert result.novel == [False, False, True, True, True] and result.novel_fraction == 3 / 5
    assert result.capped_count == 1
    assert [n.distance for n in result.nearest] == [0, 0, 1, 4, 8]
    assert result.mean_identity == pytest.approx((1 + 1 + 0.75 + 0 + 4 / 12) / 5)
    rows = result.rows()
    assert rows[2] == {"text": "kimu", "valid": True, "novel": True, "capped": False, "nearest": "kime",
                       "distance": 1, "identity": 0.75}
    everything = report(samples_of("x", ""), training)  # no rules: every sample is valid
    assert everything.valid_fraction == 1.0 and everything.unique_fraction == 1.0


@pytest.mark.parametrize("rules, fragment", [
    (dict(alphabet=""), "--alphabet is empty"),
    (dict(alphabet="ab\n"), "line break"),
    (dict(min_len=-1), "--min-len must be at least 0"),
    (dict(max_len=0), "--max-len must be at least 1"),
    (dict(min_len=5, max_len=4), "no sample could be valid"),
])
def test_rules_that_make_no_sense(rules, fragment):
    with pytest.raises(MlxgptError, match=fragment):
        Rules(**rules)


def test_nearest_example_search_is_fast():
    """1,000 samples against 5,000 training examples of up to 50 characters: seconds, not minutes."""
    rng = random.Random(0)
    letters = "ACDEFGHIKLMNPQRSTVWY"
    examples = ["".join(rng.choice(letters) for _ in range(rng.randint(8, 50))) for _ in range(5000)]
    texts = ["".join(rng.choice(letters) for _ in range(rng.randint(8, 50))) for _ in range(1000)]
    result = report([Sample(t, []) for t in texts], examples)
    assert result.search_seconds < 30


# ---------------------------------------------------------------- a tiny lines model


@pytest.fixture(scope="module")
def words_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("words") / "words.txt"
    path.write_text(word_lines(), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def lines_run(tmp_path_factory, words_file):
    out = tmp_path_factory.mktemp("lines") / "run"
    result = run_cli("train.py", "--data", words_file, "--format", "lines", "--out", out, *TINY_FLAGS,
                     "--max-iters", "300", "--eval-interval", "150", "--eval-iters", "4", "--log-interval", "100",
                     "--warmup-iters", "20", "--lr", "3e-3", "--min-lr", "3e-4")
    assert result.returncode == 0, result.stderr
    return out


@pytest.fixture(scope="module")
def loaded(lines_run):
    return mlxgpt.load(lines_run)


@pytest.fixture(scope="module")
def samples(loaded):
    model, tokenizer = loaded
    return sample_examples(model, tokenizer, 200, seed=4)


def test_every_sample_is_one_whole_example(loaded, samples):
    model, tokenizer = loaded
    assert len(samples) == 200
    for sample in samples:
        assert "\n" not in sample.text and tokenizer.end_id not in sample.tokens
        assert tokenizer.decode(sample.tokens) == sample.text
        if sample.capped:  # the longest example the model was trained on: block_size - 1 tokens
            assert len(sample.tokens) == model.args.block_size - 1
    rules = Rules(ALPHABET, MIN_LEN, MAX_LEN)
    assert sum(rules.valid(s.text) for s in samples) >= 0.8 * len(samples)  # the grammar was learned


def test_the_report_of_real_samples(samples, words_file):
    training = split_examples(words_file.read_text(encoding="utf-8"))[0]
    result = report(samples, training, alphabet=ALPHABET, min_len=MIN_LEN, max_len=MAX_LEN)
    texts = [s.text for s in samples]
    assert result.unique_fraction == len(set(texts)) / 200
    assert result.novel_fraction == sum(t not in set(training) for t in texts) / 200
    for fraction in (result.valid_fraction, result.unique_fraction, result.novel_fraction, result.mean_identity):
        assert 0 <= fraction <= 1
    for text, near in zip(texts, result.nearest):
        assert near.distance == levenshtein(text, near.example) == min(levenshtein(text, e) for e in training)


def test_the_same_seed_gives_the_same_samples_at_any_batch_size(loaded, samples):
    """Sample i draws with a key of (seed, i) alone: neither n nor the batch size changes it."""
    model, tokenizer = loaded
    texts = [s.text for s in samples]
    assert [s.text for s in sample_examples(model, tokenizer, 200, seed=4)] == texts
    for batch_size in (1, 7):
        again = sample_examples(model, tokenizer, 20, seed=4, batch_size=batch_size)
        assert [s.text for s in again] == texts[:20]
    other = [s.text for s in sample_examples(model, tokenizer, 21, seed=5)]
    assert other[:20] != texts[:20] and other[1:] != texts[1:21]  # not shifted by one either (as seed + i would be)


def test_greedy_and_the_filters_work_row_by_row(loaded):
    model, tokenizer = loaded
    greedy = {s.text for s in sample_examples(model, tokenizer, 5, temperature=0, batch_size=3)}
    assert len(greedy) == 1  # every row takes the argmax: one example, five times
    assert {s.text for s in sample_examples(model, tokenizer, 4, top_k=1, seed=2)} == greedy
    filtered = sample_examples(model, tokenizer, 20, top_p=0.9, min_p=0.05, seed=2)
    assert all(set(s.text) <= set(ALPHABET) for s in filtered)


def test_a_prefix_and_a_length_cap(loaded):
    model, tokenizer = loaded
    for sample in sample_examples(model, tokenizer, 20, seed=0, prefix="ba"):
        assert sample.text.startswith("ba")
    capped = sample_examples(model, tokenizer, 20, seed=0, max_tokens=2)
    assert all(len(s.tokens) <= 2 for s in capped) and any(s.capped for s in capped)
    assert all(len(s.tokens) == 2 for s in capped if s.capped)
    with pytest.raises(MlxgptError, match="cannot contain a newline"):
        sample_examples(model, tokenizer, 1, prefix="ba\nki")
    with pytest.raises(MlxgptError, match="pass a shorter prompt"):
        sample_examples(model, tokenizer, 1, prefix="ba" * model.args.block_size)


# ---------------------------------------------------------------- the commands


def test_the_sample_command(lines_run, tmp_path):
    out = tmp_path / "words.txt"
    result = run_cli("-m", "mlxgpt", "sample", "--checkpoint", lines_run, "-n", "50", "--out", out,
                     "--alphabet", ALPHABET, "--min-len", str(MIN_LEN), "--max-len", str(MAX_LEN), "--seed", "4")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    for label in ("samples ", "samples/s", "valid ", "unique ", "novel ", "mean identity", "wrote "):
        assert label in result.stdout
    lines = out.read_text(encoding="utf-8").split("\n")
    assert len(lines) == 51 and lines[-1] == ""  # one sample per line
    saved = json.loads((tmp_path / "words.json").read_text(encoding="utf-8"))
    assert saved["n"] == 50 and saved["rules"] == {"alphabet": ALPHABET, "min_len": MIN_LEN, "max_len": MAX_LEN}
    assert [row["text"] for row in saved["samples"]] == lines[:-1]
    assert {"valid", "novel", "capped", "nearest", "distance", "identity"} <= saved["samples"][0].keys()
    model, tokenizer = mlxgpt.load(lines_run)  # the command's samples are the library's
    assert lines[:-1] == [s.text for s in sample_examples(model, tokenizer, 50, seed=4)]


def test_generate_on_a_lines_run_writes_whole_examples(lines_run):
    result = run_cli(REPO_ROOT / "generate.py", "--checkpoint", lines_run, "--num-samples", "5", "--seed", "1")
    assert result.returncode == 0 and result.stderr == "", result.stderr
    lines = result.stdout.split("\n")
    assert len(lines) == 6 and lines[-1] == ""  # five examples, one per line
    assert all(set(line) <= set(ALPHABET) for line in lines)
    prefixed = run_cli(REPO_ROOT / "generate.py", "--checkpoint", lines_run, "--num-samples", "3", "--prompt", "ki",
                       "--max-new-tokens", "1", "--seed", "1")
    assert prefixed.returncode == 0
    assert all(line.startswith("ki") for line in prefixed.stdout.splitlines())
    note = prefixed.stderr.splitlines()
    assert len(note) <= 1 and all("reached the length cap (1 tokens after the prompt)" in line for line in note)


def test_sample_refuses_bad_inputs(lines_run, trained_run, tmp_path):
    out = str(tmp_path / "s.txt")
    sample = ("-m", "mlxgpt", "sample")
    assert_clean_failure(run_cli(*sample, "--checkpoint", trained_run, "--out", out), "--format lines",
                         "generate.py")
    for flags, fragment in [(["-n", "0"], "at least 1"),
                            (["--batch-size", "0"], "at least 1"),
                            (["--alphabet", ""], "--alphabet is empty"),
                            (["--min-len", "9", "--max-len", "3"], "no sample could be valid"),
                            (["--temperature", "-1"], "--temperature must be"),
                            (["--seed", "-1"], "--seed must be between")]:
        assert_clean_failure(run_cli(*sample, "--checkpoint", lines_run, "--out", out, *flags), fragment)
    assert_clean_failure(run_cli(*sample, "--checkpoint", lines_run, "--out", tmp_path), "is a directory")
    assert_clean_failure(run_cli(*sample, "--checkpoint", lines_run, "--out", tmp_path / "no" / "s.txt"),
                         "does not exist")
    assert_clean_failure(run_cli(*sample, "--checkpoint", lines_run, "--out", out, "--json", out), "same file")
    assert not (tmp_path / "s.txt").exists()


def test_generate_refuses_stream_flags_on_a_lines_run(lines_run):
    for flags in (["--stop", "x"], ["--show-probs"], ["--no-cache"]):
        assert_clean_failure(run_cli(REPO_ROOT / "generate.py", "--checkpoint", lines_run, *flags),
                             flags[0], "--format lines")
    assert_clean_failure(run_cli(REPO_ROOT / "generate.py", "--checkpoint", lines_run, "--prompt", "ba\nki"),
                         "cannot contain a newline")
