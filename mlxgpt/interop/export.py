"""`mlxgpt export --to mlx-lm|hf RUN OUT_DIR`: a trained model as a standard model directory.

    OUT_DIR/
      config.json            the architecture, in the other library's own words
      model.safetensors      float32 weights under that library's parameter names and layouts
      tokenizer.json         our tokenizer in Hugging Face `tokenizers` format (hf_tokenizer.py):
      tokenizer_config.json  the same ids and the same text back as mlxgpt's own
      README.md              where it came from and how to load it

mlxgpt's default model is nanoGPT's, which is GPT-2's architecture: learned positions, pre-LayerNorm
blocks, a 4x MLP, tied embeddings. Two details decide which of the other libraries' classes can
hold it *exactly* (the same logits to float32 rounding, not "close"):

- the GELU: nanoGPT (and so mlxgpt) uses the exact x * Phi(x); OpenAI's GPT-2 used the tanh
  approximation, which differs by up to 4.7e-4 per activation (at x = ±2.7). Hugging Face's GPT2 takes either
  (`activation_function`), mlx-lm's `gpt2` hard-codes the approximation. mlx-lm's `gpt_bigcode`
  (StarCoder's GPT-2, with `multi_query: false`) is GPT-2 with the exact GELU, nn.Linear
  layouts, optional biases and an optional untied head: `--to mlx-lm` writes that.
- the weight layout: Hugging Face's GPT2 keeps OpenAI's Conv1D, a Linear's weight transposed
  (in, out): `--to hf` transposes the four matrices of each block. GPT-2 always has biases:
  a model trained without them (`--no-bias`, nanoGPT's default) gets zero biases, which add nothing.

Anything else the architecture switches can do (rotary or sinusoidal positions, RMSNorm, QK-norm,
SwiGLU, soft-capping, post-LN, no causal mask) has no slot in these configs and is refused in one
line before anything is written.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import mlx.core as mx
from mlx.utils import tree_flatten

import mlxgpt
from mlxgpt.checkpoint import load_checkpoint_tokenizer, load_model, read_config, resolve_checkpoint
from mlxgpt.config import SWITCH_FLAGS, ModelArgs
from mlxgpt.errors import MlxgptError
from mlxgpt.files import fsync_dir
from mlxgpt.model import GPT
from mlxgpt.tokenizers import Tokenizer

FORMATS = ("mlx-lm", "hf")
LAYER_NORM_EPSILON = 1e-5  # mlx.nn.LayerNorm's default, and GPT-2's
# the files an export writes: the only ones --overwrite replaces
EXPORT_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
                "special_tokens_map.json", "README.md")
# GPT2's activation_function names for our MLP nonlinearities (Hugging Face's ACT2FN)
HF_ACTIVATIONS = {"gelu": "gelu", "relu": "relu", "relu2": "relu2"}


def unsupported(args: ModelArgs, to: str) -> list[str]:
    """The train.py flags of this model that the `to` format cannot express (empty: exportable)."""
    defaults = ModelArgs()
    expressible = {"zero_init_proj", "tie_embeddings"}  # an initialisation; an lm_head both formats have
    if to == "hf":
        expressible |= {"attn_scale"}  # GPT2Config.scale_attn_weights
        if args.mlp in HF_ACTIVATIONS:
            expressible |= {"mlp"}
    return [f"{SWITCH_FLAGS[name]}" + (f" {getattr(args, name)}" if isinstance(getattr(args, name), str) else "")
            for name in SWITCH_FLAGS
            if name not in expressible and getattr(args, name) != getattr(defaults, name)]


# the train.py flags that put each switch back to GPT-2's choice (a preset may have set it: cpu-speedrun's
# rotary positions and RMSNorm)
GPT2_FLAGS = {"pos_embedding": "--pos learned", "norm": "--norm layernorm", "mlp": "--mlp gelu",
              "qk_norm": "--no-qk-norm", "logit_softcap": "--logit-softcap 0", "post_ln": "--no-post-ln",
              "causal": "", "attn_scale": ""}  # "": no flag; leave out --no-causal-mask, --no-attn-scale


def check_exportable(args: ModelArgs, to: str) -> None:
    problems = unsupported(args, to)
    if problems:
        target = ("mlx-lm's gpt_bigcode (GPT-2 with the exact GELU)" if to == "mlx-lm"
                  else "Hugging Face's GPT2LMHeadModel")
        hint = "; --to hf can express it" if not unsupported(args, "hf") else ""
        named = [name for name in GPT2_FLAGS if any(problem.split()[0] == SWITCH_FLAGS[name] for problem in problems)]
        fixes = " ".join(GPT2_FLAGS[name] for name in named if GPT2_FLAGS[name])
        dropped = " ".join(SWITCH_FLAGS[name] for name in named if not GPT2_FLAGS[name])
        how = " and ".join(part for part in (f"with {fixes}" if fixes else "", f"without {dropped}" if dropped else "")
                           if part)
        raise MlxgptError(f"this model was trained with {', '.join(problems)}, which {target} cannot express{hint}: "
                          f"to export one, train it {how} (GPT-2's choices)")


# ---------------------------------------------------------------- weights


def gpt2_weights(model: GPT, to: str) -> dict[str, mx.array]:
    """Our parameters under the other library's names: `transformer.` + ours (`lm_head.weight`
    stays), with Hugging Face's Conv1D layout and zero biases for `to == "hf"`, and zero
    LayerNorm biases for both when the model has none (their LayerNorms always carry one)."""
    ours = dict(tree_flatten(model.parameters()))
    out: dict[str, mx.array] = {}
    for name, w in ours.items():
        if name == "lm_head.weight":
            out[name] = w  # an nn.Linear (out, in) in both libraries
            continue
        if to == "hf" and w.ndim == 2 and name.startswith("h."):  # c_attn, c_proj, c_fc: (out, in) -> (in, out)
            w = w.T
        out[f"transformer.{name}"] = w
        bias = name.replace(".weight", ".bias")
        is_norm, is_linear = w.ndim == 1, w.ndim == 2 and name.startswith("h.")
        if bias not in ours and (is_norm or (to == "hf" and is_linear)):
            out[f"transformer.{bias}"] = mx.zeros(w.shape[-1], w.dtype)  # (out,) of a (in, out) Conv1D
    return {name: w.astype(mx.float32) for name, w in out.items()}


# ---------------------------------------------------------------- config.json


def gpt2_config(args: ModelArgs, to: str, eos_id: int | None) -> dict[str, Any]:
    """config.json for mlx-lm's gpt_bigcode or Hugging Face's gpt2."""
    shape = {"vocab_size": args.vocab_size, "n_positions": args.block_size, "n_embd": args.n_embd,
             "n_layer": args.n_layer, "n_head": args.n_head, "n_inner": args.mlp_hidden,
             "layer_norm_epsilon": LAYER_NORM_EPSILON, "tie_word_embeddings": args.tie_embeddings,
             "bos_token_id": eos_id, "eos_token_id": eos_id, "torch_dtype": "float32"}
    if to == "mlx-lm":
        return {"model_type": "gpt_bigcode", **shape, "multi_query": False,  # every head its own keys and values
                "attention_bias": args.bias, "mlp_bias": args.bias}
    return {"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"], **shape, "n_ctx": args.block_size,
            "activation_function": HF_ACTIVATIONS[args.mlp], "scale_attn_weights": args.attn_scale,
            "resid_pdrop": args.dropout, "embd_pdrop": args.dropout, "attn_pdrop": args.dropout,
            "initializer_range": 0.02, "use_cache": True}


def usage(out: Path, to: str, block_size: int) -> list[str]:
    """How to load the export, and the one way it behaves unlike generate.py."""
    if to == "mlx-lm":
        lines = [f'mlx_lm.generate --model {out} --prompt "..." --temp 0 --max-tokens N',
                 f'python -c "from mlx_lm import load; model, tokenizer = load(\'{out}\')"']
    else:
        lines = [f"python -c \"from transformers import pipeline; print(pipeline('text-generation', '{out}')"
                 f"('...', do_sample=False, max_new_tokens=N)[0]['generated_text'])\""]
    return lines + [f"# the prompt and N new tokens must fit in the model's context of {block_size} tokens: "
                    "unlike generate.py, these libraries do not slide the window past it"]


def model_card(source: Path, args: ModelArgs, to: str, tokenizer: Tokenizer, out: Path) -> str:
    """README.md: what this directory holds and the commands that load it."""
    kind = "mlx-lm's `gpt_bigcode` (GPT-2 with the exact GELU)" if to == "mlx-lm" else "Hugging Face's `gpt2`"
    how = "\n".join(usage(out, to, args.block_size))
    return (f"# A GPT trained with mlxgpt\n\nExported by mlxgpt {mlxgpt.__version__} from `{source}` as {kind}: "
            f"{args.n_layer} layers, {args.n_head} heads, {args.n_embd} channels, a context of {args.block_size} "
            f"tokens, {args.parameter_count():,} parameters, a {tokenizer.kind} tokenizer of {tokenizer.vocab_size} "
            f"tokens (the same ids as mlxgpt's).\n\n```bash\n{how}\n```\n")


# ---------------------------------------------------------------- the directory


def check_out_dir(out: Path, overwrite: bool) -> None:
    """Write only into a new or empty directory, or (with --overwrite) over an earlier export."""
    if not out.exists():
        return
    if not out.is_dir():
        raise MlxgptError(f"{out} is a file, not a directory: choose another OUT_DIR")
    entries = sorted(p.name for p in out.iterdir())
    if not entries:
        return
    foreign = [name for name in entries if name not in EXPORT_FILES]
    if foreign:
        shown = ", ".join(foreign[:3]) + (", ..." if len(foreign) > 3 else "")
        raise MlxgptError(f"{out} holds files an export does not write ({shown}): choose a new or empty OUT_DIR")
    if not overwrite:
        raise MlxgptError(f"{out} already holds an exported model: add --overwrite to replace it, "
                          "or choose another OUT_DIR")


def export_run(run: str | Path, out: str | Path, to: str, *, overwrite: bool = False) -> Path:
    """Write the run's model (its best checkpoint) into `out` in the `to` format; atomically:
    a crash leaves the old directory (or none), never half an export."""
    if to not in FORMATS:
        raise MlxgptError(f"unknown --to {to!r}: choose one of {', '.join(FORMATS)}")
    from mlxgpt.interop.hf_tokenizer import write_hf_tokenizer  # needs the `tokenizers` library

    if not Path(run).exists():
        raise MlxgptError(f"run {run} does not exist: pass a run directory that train.py wrote, e.g. out/shakespeare")
    source = resolve_checkpoint(run)
    config = read_config(source)
    args = ModelArgs.from_dict(config["model"])
    check_exportable(args, to)
    out = Path(out)
    check_out_dir(out, overwrite)
    model, tokenizer = load_model(source, config), load_checkpoint_tokenizer(source, config)
    lines = config.get("data_format") == "lines"  # one example per line: the newline ends an example
    eos_id = tokenizer.end_id if lines else None

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        end = tokenizer.decode([eos_id]) if eos_id is not None else None  # a lines model starts and ends with it
        files = write_hf_tokenizer(tokenizer, tmp, model_max_length=args.block_size, eos_token=end, bos_token=end)
        mx.save_safetensors(str(tmp / "model.safetensors"), gpt2_weights(model, to), metadata={"format": "pt"})
        (tmp / "config.json").write_text(json.dumps(gpt2_config(args, to, eos_id), indent=2) + "\n", encoding="utf-8")
        (tmp / "README.md").write_text(model_card(source, args, to, tokenizer, out), encoding="utf-8")
        for path in tmp.iterdir():
            with open(path, "rb") as f:
                os.fsync(f.fileno())
        fsync_dir(tmp)
        if out.exists():
            shutil.rmtree(out)  # check_out_dir allowed it: empty, or an earlier export with --overwrite
        os.replace(tmp, out)
        fsync_dir(out.parent)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    written = ["config.json", "model.safetensors", *files, "README.md"]
    print(f"exported {source} to {out} for {'mlx-lm' if to == 'mlx-lm' else 'Hugging Face transformers'} "
          f"({', '.join(written)})")
    print("try:", *usage(out, to, args.block_size), sep="\n  ")
    return out
