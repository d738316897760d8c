"""`mlxgpt export --to mlx-lm|hf`: the exported directory is the same model in the other library.

The proof loads each export with the other library itself (mlx_lm.load; transformers'
GPT2LMHeadModel and AutoTokenizer) and compares logits (float32, max abs diff <= 1e-4) and greedy
text with mlxgpt's own, for a char and a SentencePiece model. Those tests need the `interop`
extra (`pip install -e '.[interop]'`, which .ci/run installs); the rules of the export (names,
layouts, what is refused, where it may write) are checked without it.

The tiny models have a context of 16 tokens: the other libraries do not slide the window past
block_size as generate.py does, so prompt + continuation stay within it.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
from mlx.utils import tree_flatten

from conftest import REPO_ROOT, TINY_FLAGS, TINY_MODEL, assert_clean_failure, run_cli
from mlxgpt.checkpoint import load
from mlxgpt.config import ModelArgs
from mlxgpt.errors import MlxgptError
from mlxgpt.interop.export import check_out_dir, gpt2_weights, unsupported
from mlxgpt.model import GPT

PROMPT = "The "
NEW_TOKENS = 12  # PROMPT's 4 characters + 12 = the tiny models' block_size (16)


# ---------------------------------------------------------------- without the extra


@pytest.mark.parametrize("switch, mlx_lm_ok, hf_ok", [
    ({}, True, True),
    ({"tie_embeddings": False}, True, True),
    ({"zero_init_proj": True}, True, True),
    ({"bias": True}, True, True),
    ({"mlp": "relu"}, False, True),
    ({"mlp": "relu2"}, False, True),
    ({"attn_scale": False}, False, True),
    ({"mlp": "swiglu"}, False, False),
    ({"pos_embedding": "rope"}, False, False),
    ({"pos_embedding": "sinusoidal"}, False, False),
    ({"norm": "rmsnorm"}, False, False),
    ({"qk_norm": True}, False, False),
    ({"logit_softcap": 15.0}, False, False),
    ({"post_ln": True}, False, False),
    ({"causal": False}, False, False),
])
def test_every_switch_is_exported_or_refused(switch, mlx_lm_ok, hf_ok):
    args = ModelArgs(**TINY_MODEL, **switch)
    assert (unsupported(args, "mlx-lm") == []) == mlx_lm_ok
    assert (unsupported(args, "hf") == []) == hf_ok


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("to", ["mlx-lm", "hf"])
def test_weights_take_the_other_librarys_names_and_layouts(to, bias):
    model = GPT(ModelArgs(**TINY_MODEL, vocab_size=20, bias=bias))
    ours = dict(tree_flatten(model.parameters()))
    theirs = gpt2_weights(model, to)
    block = ["ln_1.weight", "ln_1.bias", "attn.c_attn.weight", "attn.c_proj.weight", "ln_2.weight", "ln_2.bias",
             "mlp.c_fc.weight", "mlp.c_proj.weight"]
    if bias or to == "hf":  # GPT-2's Conv1Ds always have a bias; gpt_bigcode's Linears follow the model
        block += ["attn.c_attn.bias", "attn.c_proj.bias", "mlp.c_fc.bias", "mlp.c_proj.bias"]
    expected = {"transformer.wte.weight", "transformer.wpe.weight", "transformer.ln_f.weight",
                "transformer.ln_f.bias", *(f"transformer.h.{i}.{name}" for i in range(2) for name in block)}
    assert set(theirs) == expected
    for name, w in theirs.items():
        mine = name.removeprefix("transformer.")
        if mine in ours:
            transposed = to == "hf" and w.ndim == 2 and mine.startswith("h.")  # Conv1D: (in, out)
            assert mx.array_equal(w, ours[mine].T if transposed else ours[mine]), name
        else:  # a bias the model does not have: zero, so it adds nothing
            assert not bias and not mx.any(w).item(), name


def test_the_out_dir_is_new_empty_or_an_earlier_export(tmp_path):
    check_out_dir(tmp_path / "new", overwrite=False)
    check_out_dir(tmp_path, overwrite=False)  # empty
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(MlxgptError, match="--overwrite"):
        check_out_dir(tmp_path, overwrite=False)
    check_out_dir(tmp_path, overwrite=True)
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(MlxgptError, match="notes.txt"):
        check_out_dir(tmp_path, overwrite=True)


def test_a_switch_gpt2_cannot_express_is_one_line_and_writes_nothing(trained_run_sinusoidal, tmp_path):
    for to in ("mlx-lm", "hf"):
        result = run_cli("-m", "mlxgpt", "export", "--to", to, trained_run_sinusoidal, tmp_path / "out")
        assert_clean_failure(result, "--pos-embedding sinusoidal", "cannot express", "--pos learned")
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------- with the interop extra: the proof


def _needs(*modules: str) -> None:
    for module in modules:
        pytest.importorskip(module, reason=f"needs the interop extra (pip install -e '.[interop]'): {module}")


@pytest.fixture(scope="module")
def sp_run(tmp_path_factory) -> Path:
    """A tiny SentencePiece (BPE) model, on a text with Greek and an emoji besides the grammar."""
    from conftest import grammar_text

    data = tmp_path_factory.mktemp("export-sp") / "text.txt"
    data.write_text(grammar_text() + "Ο βασιλιάς βλέπει την αλεπού. 🦊\n" * 20, encoding="utf-8")
    out = data.parent / "run"
    result = run_cli("train.py", "--data", data, "--out", out, *TINY_FLAGS, "--tokenizer", "sentencepiece",
                     "--vocab-size", "330", "--max-iters", "120", "--eval-interval", "60", "--eval-iters", "4",
                     "--warmup-iters", "10", "--lr", "3e-3", "--min-lr", "3e-4")
    assert result.returncode == 0, result.stderr
    return out


@pytest.fixture(scope="module", params=["char", "sentencepiece"])
def run(request, trained_run, sp_run) -> Path:
    return trained_run if request.param == "char" else sp_run


def _export(run: Path, to: str, out: Path) -> Path:
    result = run_cli("-m", "mlxgpt", "export", "--to", to, run, out)
    assert result.returncode == 0, result.stderr
    assert {p.name for p in out.iterdir()} >= {"config.json", "model.safetensors", "tokenizer.json",
                                               "tokenizer_config.json", "README.md"}
    return out


def _ours(run: Path, prompt: str = PROMPT):
    model, tokenizer = load(run)
    ids = tokenizer.encode(prompt)
    greedy = run_cli("generate.py", "--checkpoint", run, "--prompt", prompt, "--temperature", "0",
                     "--max-new-tokens", NEW_TOKENS)
    assert greedy.returncode == 0, greedy.stderr
    continuation = greedy.stdout.removeprefix(prompt).removesuffix("\n")
    return model, tokenizer, ids, continuation


def _windows(vocab_size: int) -> np.ndarray:
    return np.random.default_rng(0).integers(0, vocab_size, (3, TINY_MODEL["block_size"]))


def test_mlx_lm_loads_the_same_model_and_generates_the_same_text(run, tmp_path):
    _needs("mlx_lm", "tokenizers", "transformers")
    from mlx_lm import generate, load as mlx_lm_load
    from mlx_lm.sample_utils import make_sampler

    out = _export(run, "mlx-lm", tmp_path / "mlx-lm")
    model, tokenizer, ids, continuation = _ours(run)
    their_model, their_tokenizer = mlx_lm_load(str(out))
    x = mx.array(_windows(tokenizer.vocab_size))
    assert mx.abs(model(x) - their_model(x)).max().item() <= 1e-4
    assert their_tokenizer.encode(PROMPT) == ids
    text = generate(their_model, their_tokenizer, PROMPT, max_tokens=NEW_TOKENS, sampler=make_sampler(temp=0.0))
    assert text == continuation and len(text) > 0


def test_mlx_lms_own_command_line_reads_the_export(trained_run, tmp_path):
    _needs("mlx_lm", "tokenizers", "transformers")
    out = _export(trained_run, "mlx-lm", tmp_path / "mlx-lm")
    _, _, _, continuation = _ours(trained_run)
    result = subprocess.run([sys.executable, "-m", "mlx_lm", "generate", "--model", str(out), "--prompt", PROMPT,
                             "--temp", "0", "--max-tokens", str(NEW_TOKENS)], cwd=REPO_ROOT, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert continuation in result.stdout, (continuation, result.stdout)


def test_transformers_loads_the_same_model_and_generates_the_same_text(run, tmp_path):
    _needs("torch", "transformers", "tokenizers")
    import torch
    from transformers import AutoTokenizer, GPT2LMHeadModel

    out = _export(run, "hf", tmp_path / "hf")
    model, tokenizer, ids, continuation = _ours(run)
    their_model = GPT2LMHeadModel.from_pretrained(out).eval()
    their_tokenizer = AutoTokenizer.from_pretrained(out)
    x = _windows(tokenizer.vocab_size)
    with torch.no_grad():
        logits = their_model(torch.tensor(x)).logits.numpy()
    assert np.abs(np.array(model(mx.array(x))) - logits).max() <= 1e-4
    assert their_tokenizer(PROMPT)["input_ids"] == ids
    with torch.no_grad():
        generated = their_model.generate(torch.tensor([ids]), max_new_tokens=NEW_TOKENS, do_sample=False,
                                         pad_token_id=0)
    assert their_tokenizer.decode(generated[0, len(ids):]) == continuation


def test_hf_export_of_the_switches_it_can_express(text_file, tmp_path):
    """Untied head, ReLU, no attention scale: GPT2LMHeadModel computes the same logits."""
    _needs("torch", "transformers", "tokenizers")
    import torch
    from transformers import GPT2LMHeadModel

    run = tmp_path / "run"
    result = run_cli("train.py", "--data", text_file, "--out", run, *TINY_FLAGS, "--max-iters", "30",
                     "--eval-interval", "30", "--eval-iters", "2", "--untie-head", "--mlp", "relu",
                     "--no-attn-scale", "--bias")
    assert result.returncode == 0, result.stderr
    assert_clean_failure(run_cli("-m", "mlxgpt", "export", "--to", "mlx-lm", run, tmp_path / "mlx-lm"),
                         "--mlp relu", "--to hf can express it")
    out = _export(run, "hf", tmp_path / "hf")
    model, tokenizer = load(run)
    x = _windows(tokenizer.vocab_size)
    with torch.no_grad():
        logits = GPT2LMHeadModel.from_pretrained(out).eval()(torch.tensor(x)).logits.numpy()
    assert np.abs(np.array(model(mx.array(x))) - logits).max() <= 1e-4


def test_a_hard_string_gets_the_same_ids_in_every_library(sp_run, tmp_path):
    _needs("mlx_lm", "transformers", "tokenizers")
    from mlx_lm import load as mlx_lm_load
    from transformers import AutoTokenizer

    hard = "  two  spaces,\ttab\r\nnew\n\nlines 1623 Ελληνικά Кириллица 中文 العربية हिन्दी 👩🏽‍🚀 e\u0301 ▁ end  "
    _, tokenizer = load(sp_run)
    ids = tokenizer.encode(hard)
    for to in ("mlx-lm", "hf"):
        out = _export(sp_run, to, tmp_path / to)
        hf = AutoTokenizer.from_pretrained(out)
        assert hf(hard)["input_ids"] == ids
        assert hf.decode(ids) == hard
    _, wrapper = mlx_lm_load(str(tmp_path / "mlx-lm"))
    assert wrapper.encode(hard) == ids
    detokenizer = wrapper.detokenizer
    detokenizer.reset()
    for token in ids:
        detokenizer.add_token(token)
    detokenizer.finalize()
    assert detokenizer.text == hard


def test_export_replaces_only_an_earlier_export(trained_run, tmp_path):
    _needs("tokenizers")
    out = _export(trained_run, "hf", tmp_path / "hf")
    before = (out / "model.safetensors").read_bytes()
    assert_clean_failure(run_cli("-m", "mlxgpt", "export", "--to", "hf", trained_run, out), "--overwrite")
    assert (out / "model.safetensors").read_bytes() == before
    result = run_cli("-m", "mlxgpt", "export", "--to", "mlx-lm", trained_run, out, "--overwrite")
    assert result.returncode == 0, result.stderr
    assert '"gpt_bigcode"' in (out / "config.json").read_text()
    assert not list(tmp_path.glob(".hf.tmp-*"))


def test_a_lines_model_starts_and_stops_at_the_newline_in_the_other_libraries(tmp_path):
    """--format lines: every example starts after the end token and ends with it. The export makes the
    newline BOS and EOS, so mlx-lm and transformers continue a prompt as `generate.py` does."""
    _needs("mlx_lm", "torch", "transformers", "tokenizers")
    import torch
    from mlx_lm import generate, load as mlx_lm_load
    from mlx_lm.sample_utils import make_sampler
    from transformers import AutoTokenizer, GPT2LMHeadModel

    words = tmp_path / "words.txt"
    words.write_text("".join(f"{'ba' * (i % 3 + 1)}{'ku' * (i % 2)}\n" for i in range(300)), encoding="utf-8")
    run = tmp_path / "run"
    result = run_cli("train.py", "--data", words, "--format", "lines", "--out", run, *TINY_FLAGS, "--max-iters",
                     "150", "--eval-interval", "150", "--eval-iters", "2", "--lr", "3e-3")
    assert result.returncode == 0, result.stderr
    ours = run_cli("generate.py", "--checkpoint", run, "--prompt", "ba", "--temperature", "0", "--max-new-tokens", "12")
    assert ours.returncode == 0, ours.stderr
    example = ours.stdout.splitlines()[0]  # the prompt and its greedy continuation, up to the end token
    model, tokenizer = load(run)
    end = tokenizer.end_id

    their_model, their_tokenizer = mlx_lm_load(str(_export(run, "mlx-lm", tmp_path / "mlx-lm")))
    assert their_tokenizer.encode("ba") == [end, *tokenizer.encode("ba")] and end in their_tokenizer.eos_token_ids
    text = generate(their_model, their_tokenizer, "ba", max_tokens=12, sampler=make_sampler(temp=0.0))
    assert "ba" + text == example and len(example) > 2, (text, example)

    out = _export(run, "hf", tmp_path / "hf")
    hf, hf_tokenizer = GPT2LMHeadModel.from_pretrained(out).eval(), AutoTokenizer.from_pretrained(out)
    ids = hf_tokenizer("ba", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        generated = hf.generate(ids, max_new_tokens=12, do_sample=False)
    assert hf_tokenizer.decode(generated[0, ids.shape[1]:], skip_special_tokens=True) == example[2:]


def test_a_sentencepiece_unigram_model_is_refused_in_one_line(text_file, tmp_path):
    _needs("tokenizers")
    pytest.importorskip("google.protobuf", reason="needs the interop extra: protobuf")
    run = tmp_path / "run"
    result = run_cli("train.py", "--data", text_file, "--out", run, *TINY_FLAGS, "--tokenizer", "sentencepiece",
                     "--sp-model-type", "unigram", "--vocab-size", "300", "--max-iters", "10", "--eval-interval", "10",
                     "--eval-iters", "2")
    assert result.returncode == 0, result.stderr
    assert_clean_failure(run_cli("-m", "mlxgpt", "export", "--to", "mlx-lm", run, tmp_path / "out"),
                         "unigram", "--sp-model-type bpe")
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.tmp-*"))


def test_a_missing_run_is_one_line(tmp_path):
    assert_clean_failure(run_cli("-m", "mlxgpt", "export", "--to", "hf", tmp_path / "none", tmp_path / "out"),
                         "does not exist")
