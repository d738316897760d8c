"""`mlxgpt import-nanogpt`: a nanoGPT checkpoint becomes an mlxgpt run with the same logits, the same
val loss and the same greedy text, and a forged or mismatched file is refused in one line without
running anything in it.

The checkpoints are made here as nanoGPT's train.py makes them: a small GPT written in PyTorch with
nanoGPT's module names (independently of mlxgpt's own PyTorch mirror, bench/torch_ref.py), trained a
few dozen AdamW steps on a generated text, saved with torch.save in train.py's dict format (optimizer
state and config included), and its vocabulary pickled as data/shakespeare_char/prepare.py does.
"""

from __future__ import annotations

import math
import os
import pickle
import re
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY_MODEL, assert_clean_failure, grammar_text, run_cli

torch = pytest.importorskip("torch")
nn, F = torch.nn, torch.nn.functional

from mlxgpt.data import split_text  # noqa: E402
from mlxgpt.errors import MlxgptError  # noqa: E402
from mlxgpt.evaluate import windows  # noqa: E402
from mlxgpt.generate import default_keep  # noqa: E402
from mlxgpt.interop import nanogpt  # noqa: E402

TIMEOUT = 120
STEPS = 60


# ---------------------------------------------------------------- a nanoGPT-shaped model in PyTorch


class LayerNorm(nn.Module):
    def __init__(self, ndim: int, bias: bool) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(ndim))
        self.bias = nn.Parameter(torch.zeros(ndim)) if bias else None

    def forward(self, x):
        return F.layer_norm(x, self.weight.shape, self.weight, self.bias, 1e-5)


class SelfAttention(nn.Module):
    """legacy_mask: PyTorch < 2.0's path, with the causal mask as a buffer named `bias`."""

    def __init__(self, cfg: dict, legacy_mask: bool) -> None:
        super().__init__()
        C, self.n_head = cfg["n_embd"], cfg["n_head"]
        self.c_attn = nn.Linear(C, 3 * C, bias=cfg["bias"])
        self.c_proj = nn.Linear(C, C, bias=cfg["bias"])
        self.legacy = legacy_mask
        if legacy_mask:
            T = cfg["block_size"]
            self.register_buffer("bias", torch.tril(torch.ones(T, T)).view(1, 1, T, T))

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        if self.legacy:
            att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(k.size(-1)))
            att = F.softmax(att.masked_fill(self.bias[:, :, :T, :T] == 0, float("-inf")), dim=-1)
            y = att @ v
        else:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.c_proj(y.transpose(1, 2).contiguous().view(B, T, C))


class Block(nn.Module):
    def __init__(self, cfg: dict, legacy_mask: bool) -> None:
        super().__init__()
        C, bias = cfg["n_embd"], cfg["bias"]
        self.ln_1, self.ln_2 = LayerNorm(C, bias), LayerNorm(C, bias)
        self.attn = SelfAttention(cfg, legacy_mask)
        self.mlp = nn.Module()
        self.mlp.c_fc, self.mlp.gelu, self.mlp.c_proj = nn.Linear(C, 4 * C, bias), nn.GELU(), nn.Linear(4 * C, C, bias)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp.c_proj(self.mlp.gelu(self.mlp.c_fc(self.ln_2(x))))


class NanoGPT(nn.Module):
    def __init__(self, cfg: dict, legacy_mask: bool = False, tied: bool = True) -> None:
        super().__init__()
        V, C = cfg["vocab_size"], cfg["n_embd"]
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(V, C), wpe=nn.Embedding(cfg["block_size"], C),
            h=nn.ModuleList([Block(cfg, legacy_mask) for _ in range(cfg["n_layer"])]),
            ln_f=LayerNorm(C, cfg["bias"])))
        self.lm_head = nn.Linear(C, V, bias=False)
        if tied:
            self.transformer.wte.weight = self.lm_head.weight  # nanoGPT's weight tying
        for name, p in self.named_parameters():
            if name.endswith("bias"):
                nn.init.zeros_(p)
            elif p.dim() == 2:
                nn.init.normal_(p, std=0.02)

    def forward(self, idx):
        t = self.transformer
        x = t.wte(idx) + t.wpe(torch.arange(idx.shape[1]))
        for block in t.h:
            x = block(x)
        return self.lm_head(t.ln_f(x))


# ---------------------------------------------------------------- checkpoints in train.py's format


TEXT = grammar_text()
CHARS = sorted(set(TEXT))
STOI = {c: i for i, c in enumerate(CHARS)}


def encode(text: str) -> list[int]:
    return [STOI[c] for c in text]


def model_args(bias: bool, **changes) -> dict:
    return dict(**TINY_MODEL, bias=bias, vocab_size=len(CHARS), dropout=0.0) | changes


def train(model: nn.Module, block_size: int, steps: int = STEPS) -> tuple[torch.optim.AdamW, float]:
    """A few dozen AdamW steps on the text's training split; (optimizer, last loss)."""
    torch.manual_seed(0)
    data = torch.tensor(encode(split_text(TEXT)[0]))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, betas=(0.9, 0.99), weight_decay=0.1)
    for _ in range(steps):
        starts = torch.randint(len(data) - block_size - 1, (16,))
        x = torch.stack([data[s:s + block_size] for s in starts])
        y = torch.stack([data[s + 1:s + block_size + 1] for s in starts])
        loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    return optimizer, loss.item()


def save_nanogpt(directory: Path, model: nn.Module, args: dict, optimizer=None, compiled: bool = False,
                 meta: bool = True) -> Path:
    """ckpt.pt (and meta.pkl) as nanoGPT's train.py and prepare.py write them."""
    directory.mkdir(parents=True, exist_ok=True)
    state = model.state_dict()
    if compiled:  # torch.compile's wrapper module
        state = {f"_orig_mod.{k}": v for k, v in state.items()}
    config = dict(out_dir=str(directory), eval_interval=250, eval_iters=200, log_interval=10, dataset="grammar_char",
                  gradient_accumulation_steps=1, batch_size=16, block_size=args["block_size"], n_layer=args["n_layer"],
                  learning_rate=1e-2, max_iters=STEPS, weight_decay=0.1, beta1=0.9, beta2=0.99, grad_clip=1.0,
                  decay_lr=True, warmup_iters=10, lr_decay_iters=STEPS, min_lr=1e-3, backend="nccl",
                  device="cpu", dtype="float32", compile=compiled, bias=args["bias"], always_save_checkpoint=True)
    torch.save({"model": state, "optimizer": optimizer.state_dict() if optimizer else {}, "model_args": args,
                "iter_num": STEPS, "best_val_loss": torch.tensor(1.75), "config": config}, directory / "ckpt.pt")
    if meta:
        with open(directory / "meta.pkl", "wb") as f:
            pickle.dump({"vocab_size": len(CHARS), "itos": dict(enumerate(CHARS)), "stoi": STOI}, f)
    return directory / "ckpt.pt"


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """A model this small trains 100x faster on one thread: two fight over the cores (and the CLI's
    subprocesses) and spin."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def import_cli(*args) -> object:
    return run_cli("-m", "mlxgpt", "import-nanogpt", *args, timeout=TIMEOUT)


@pytest.fixture(scope="module")
def text_path(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("text") / "grammar.txt"
    path.write_text(TEXT, encoding="utf-8")
    return path


@pytest.fixture(scope="module", params=["bias-mask-buffer", "nobias-compiled"])
def nano(request, tmp_path_factory) -> tuple[nn.Module, Path]:
    """Two trained nanoGPT checkpoints: biases with PyTorch < 2.0's mask buffers (`attn.bias` beside
    `attn.c_attn.bias`), and no biases with torch.compile's `_orig_mod.` prefix."""
    bias = request.param.startswith("bias")
    args = model_args(bias)
    torch.manual_seed(1)
    model = NanoGPT(args, legacy_mask=bias)
    optimizer, loss = train(model, args["block_size"])
    assert loss < math.log(len(CHARS)) - 1.0, f"did not learn: loss {loss:.3f}, ln V {math.log(len(CHARS)):.3f}"
    return model, save_nanogpt(tmp_path_factory.mktemp(request.param), model, args, optimizer, compiled=not bias)


@pytest.fixture(scope="module")
def imported(nano, text_path, tmp_path_factory) -> Path:
    """The checkpoint through the CLI: meta.pkl found beside ckpt.pt, or passed as a path."""
    _, ckpt = nano
    out = tmp_path_factory.mktemp("imported") / "run"
    meta = [] if "mask" in ckpt.parent.name else [ckpt.with_name("meta.pkl")]
    result = import_cli(ckpt, *meta, out, "--data", text_path)
    assert result.returncode == 0, result.stderr
    assert result.stderr == "" and str(out) in result.stdout and "mlxgpt eval" in result.stdout
    return out


def torch_logits(model: nn.Module, ids) -> np.ndarray:
    with torch.no_grad():
        return model(torch.tensor(ids)).numpy()


# ---------------------------------------------------------------- the same model


def test_same_logits(nano, imported):
    import mlx.core as mx

    from mlxgpt.checkpoint import load, read_config

    model, ckpt = nano
    mlx_model, tokenizer = load(imported)
    assert tokenizer.chars == CHARS
    val = encode(split_text(TEXT)[1])
    ids = np.array([val[0:16], val[100:116], val[200:208] + val[300:308]])
    diff = np.abs(np.array(mlx_model(mx.array(ids))) - torch_logits(model, ids)).max()
    print(f"max |logit diff| {diff:.2e}")
    assert diff <= 1e-4
    config = read_config(imported / "best")
    assert config["init_from"]["nanogpt"] == str(ckpt.resolve()) and config["init_from"]["iter_num"] == STEPS
    assert config["init_from"]["best_val_loss"] == pytest.approx(1.75) and config["data_format"] == "text"
    assert config["train"]["lr"] == 1e-2 and config["train"]["batch_size"] == 16


def test_eval_matches_torch_loss(nano, imported):
    """`mlxgpt eval` (its recorded --data) = PyTorch's mean cross-entropy over the same windows."""
    model, _ = nano
    ids = np.array(encode(split_text(TEXT)[1]))
    block = TINY_MODEL["block_size"]
    starts, first_scored = windows(len(ids), block, block)
    total = 0.0
    for start, first in zip(starts, first_scored):
        with torch.no_grad():
            logits = model(torch.tensor(ids[None, start:start + block]))[0]
        losses = F.cross_entropy(logits, torch.tensor(ids[start + 1:start + block + 1]), reduction="none")
        total += losses[first:].sum().item()
    expected = total / (len(ids) - 1)
    result = run_cli("-m", "mlxgpt", "eval", "--checkpoint", imported, timeout=TIMEOUT)
    assert result.returncode == 0, result.stderr
    got = float(re.search(r"val loss\s+([\d.]+) nats/token", result.stdout).group(1))
    print(f"val loss: mlxgpt eval {got:.4f}, torch {expected:.6f}")
    assert abs(got - expected) <= 1e-4 + 5e-5  # eval prints 4 decimals
    assert expected < math.log(len(CHARS)) - 1.0


def test_greedy_generation_matches_torch(nano, imported):
    """generate.py --temperature 0 = argmax with the torch model, over the same context windows
    (mlxgpt slides its window back to default_keep tokens once block_size is full)."""
    model, _ = nano
    prompt, n = "The old ", 40
    block, keep = TINY_MODEL["block_size"], default_keep(TINY_MODEL["block_size"])
    tokens, start = encode(prompt), 0
    for _ in range(n):
        tokens.append(int(torch_logits(model, [tokens[start:]])[0, -1].argmax()))
        if len(tokens) - start > block:
            start = len(tokens) - keep
    expected = prompt + "".join(CHARS[i] for i in tokens[len(prompt):])
    result = run_cli("generate.py", "--checkpoint", imported, "--prompt", prompt, "--temperature", "0",
                     "--max-new-tokens", str(n), timeout=TIMEOUT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(expected), (result.stdout, expected)


def test_untied_head_and_api(tmp_path):
    """A checkpoint whose lm_head is not the embedding becomes tie_embeddings=False, same logits."""
    import mlx.core as mx

    from mlxgpt.checkpoint import load

    args = model_args(False)
    torch.manual_seed(2)
    model = NanoGPT(args, tied=False)
    train(model, args["block_size"], steps=5)
    ckpt = save_nanogpt(tmp_path / "nano", model, args)
    saved = nanogpt.import_nanogpt(str(ckpt), None, str(tmp_path / "run"))
    mlx_model, _ = load(saved)
    assert mlx_model.args.tie_embeddings is False
    ids = np.array([encode(TEXT[:16])])
    assert np.abs(np.array(mlx_model(mx.array(ids))) - torch_logits(model, ids)).max() <= 1e-4


# ---------------------------------------------------------------- refusals


class Payload:
    """What a forged pickle carries: unpickling it runs a shell command."""

    def __init__(self, sentinel: Path) -> None:
        self.sentinel = sentinel

    def __reduce__(self):
        return os.system, (f"touch {self.sentinel}",)


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Path:
    """An untrained nanoGPT checkpoint, to copy and spoil."""
    torch.manual_seed(3)
    return save_nanogpt(tmp_path_factory.mktemp("small"), NanoGPT(model_args(True)), model_args(True))


def test_forged_meta_runs_nothing(small, tmp_path):
    sentinel = tmp_path / "pwned"
    meta = tmp_path / "meta.pkl"
    with open(meta, "wb") as f:
        pickle.dump({"vocab_size": len(CHARS), "itos": Payload(sentinel)}, f)
    line = assert_clean_failure(import_cli(small, meta, tmp_path / "run"), str(meta),
                                "something other than dicts, strings and integers", "system")
    assert not sentinel.exists() and not (tmp_path / "run").exists(), line


def test_forged_checkpoint_runs_nothing(small, tmp_path):
    sentinel = tmp_path / "pwned"
    ckpt = tmp_path / "ckpt.pt"
    torch.save({"model": Payload(sentinel), "model_args": model_args(True)}, ckpt)
    (tmp_path / "meta.pkl").write_bytes(small.with_name("meta.pkl").read_bytes())
    assert_clean_failure(import_cli(ckpt, tmp_path / "run"), str(ckpt), "refers to Python code", "system")
    assert not sentinel.exists()


@pytest.fixture(scope="module")
def gpt2_vocab(tmp_path_factory) -> Path:
    """A nanoGPT checkpoint of GPT-2's padded vocabulary (50304), no meta.pkl: openwebtext's kind."""
    args = model_args(False, vocab_size=50304, n_layer=1, n_embd=8)
    return save_nanogpt(tmp_path_factory.mktemp("gpt2"), NanoGPT(args), args, meta=False)


def test_gpt2_vocab_without_meta(gpt2_vocab, tmp_path):
    assert_clean_failure(import_cli(gpt2_vocab, tmp_path / "run"), "no meta.pkl beside", "GPT-2's BPE",
                         "pass the meta.pkl")


def test_vocab_mismatch(gpt2_vocab, small, tmp_path):
    assert_clean_failure(import_cli(gpt2_vocab, small.with_name("meta.pkl"), tmp_path / "run"),
                         "vocab_size 50304", f"has {len(CHARS)} characters")


def test_not_a_checkpoint(small, tmp_path):
    bogus = tmp_path / "ckpt.pt"
    bogus.write_text("not a checkpoint\n")
    assert_clean_failure(import_cli(bogus, small.with_name("meta.pkl"), tmp_path / "run"), str(bogus),
                         "is not a PyTorch checkpoint")


def test_existing_run_is_kept(small, tmp_path):
    out = tmp_path / "run"
    assert import_cli(small, out).returncode == 0
    (out / "notes.txt").write_text("mine")
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert_clean_failure(import_cli(small, out), "already holds a trained run", "--overwrite")
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert import_cli(small, out, "--overwrite").returncode == 0
    assert (out / "notes.txt").read_text() == "mine" and (out / "best" / "model.safetensors").is_file()
    foreign = tmp_path / "thesis"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("x")
    assert_clean_failure(import_cli(small, foreign), "is not an mlxgpt run directory")


# ---------------------------------------------------------------- refusals, in-process (no subprocess each)


def _spoiled(small: Path, tmp_path: Path, change) -> Path:
    raw = torch.load(small, weights_only=True)
    change(raw)
    directory = tmp_path / "spoiled"
    directory.mkdir(exist_ok=True)
    torch.save(raw, directory / "ckpt.pt")
    (directory / "meta.pkl").write_bytes(small.with_name("meta.pkl").read_bytes())
    return directory / "ckpt.pt"


def _set(key: str, value):
    return lambda raw: raw["model"].__setitem__(key, value)


@pytest.mark.parametrize("change, message", [
    (lambda raw: raw["model_args"].pop("n_head"), "model_args lacks n_head"),
    (_set("transformer.h.0.mlp.c_fc.weight", torch.zeros(64, 32)), "has shape (64, 32)"),
    (lambda raw: raw["model"].pop("transformer.h.1.ln_2.bias"), "lacks weight 'transformer.h.1.ln_2.bias'"),
    (_set("transformer.h.0.attn.c_proj.weight", torch.full((32, 32), float("nan"))), "NaN"),
    (lambda raw: raw["model_args"].__setitem__("bias", False), "holds weight"),
    (lambda raw: raw.pop("model"), "is not a nanoGPT checkpoint"),
])
def test_spoiled_checkpoint(small, tmp_path, change, message):
    ckpt = _spoiled(small, tmp_path, change)
    with pytest.raises(MlxgptError, match=re.escape(message)) as info:
        nanogpt.import_nanogpt(str(ckpt), None, str(tmp_path / "run"))
    assert "\n" not in str(info.value) and not (tmp_path / "run").exists()


class Plain:
    pass


@pytest.mark.parametrize("meta, message", [
    ({"vocab_size": 3, "itos": {0: "a", 1: "b", 2: Plain()}}, "something other than dicts"),
    ({"vocab_size": 3, "itos": {0: "a", 1: "b", 2: [1]}}, "something other than dicts"),
    ({"vocab_size": 2, "itos": {0: "a", 1: "a"}}, "repeats itos[0]"),
    ({"vocab_size": 2, "itos": {0: "a", 1: "bc"}}, "not one character"),
    ({"vocab_size": 3, "itos": {0: "a", 1: "b"}}, "vocab_size (3) differs"),
    ([1, 2], "something other than dicts"),
])
def test_bad_meta(tmp_path, meta, message):
    path = tmp_path / "meta.pkl"
    path.write_bytes(pickle.dumps(meta))
    with pytest.raises(MlxgptError, match=re.escape(message)) as info:
        nanogpt.vocabulary(nanogpt.read_meta(path), path)
    assert "\n" not in str(info.value)


def test_meta_size_is_bounded(tmp_path, monkeypatch):
    path = tmp_path / "meta.pkl"
    path.write_bytes(pickle.dumps({"itos": dict(enumerate("abc")), "pad": "x" * 1000}))
    monkeypatch.setattr(nanogpt, "MAX_META_BYTES", 100)
    with pytest.raises(MlxgptError, match="far more than"):
        nanogpt.read_meta(path)


def test_without_torch(small, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now raises ImportError
    with pytest.raises(MlxgptError, match=re.escape("pip install -e '.[interop]'")):
        nanogpt.import_nanogpt(str(small), None, str(tmp_path / "run"))
    assert not (tmp_path / "run").exists()


def test_nanogpt_out_dir_is_accepted(small, tmp_path):
    """nanoGPT's out_dir (out-shakespeare-char) stands for the ckpt.pt inside it."""
    assert nanogpt.import_nanogpt(str(small.parent), None, str(tmp_path / "run")) == tmp_path / "run" / "best"


def test_a_text_file_given_as_the_checkpoint_is_named_as_such(tmp_path):
    """Without META.pkl the meta.pkl beside CKPT is looked for, but a file that is no torch.save
    archive at all is refused first, for what it is."""
    notes = tmp_path / "notes.txt"
    notes.write_text("not a checkpoint\n")
    assert_clean_failure(run_cli("-m", "mlxgpt", "import-nanogpt", notes, tmp_path / "out"),
                         "is not a PyTorch checkpoint")
    assert not (tmp_path / "out").exists()
