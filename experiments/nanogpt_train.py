"""nanoGPT's training procedure, step for step, in PyTorch: the yardstick for mlxgpt's runs.

    python -m experiments.nanogpt_train --data shakespeare --preset baby --seed 1337 --out out/nanogpt

It trains mlxgpt's preset with nanoGPT's model (`mlxgpt/bench/torch_ref.py`) and
nanoGPT's train.py loop, on PyTorch's RNG: `torch.manual_seed(seed)`, nanoGPT's
init, `torch.randint` windows, and `estimate_loss` on *fresh* random batches at
every eval (mlxgpt's fixed eval batches are the one deliberate difference in
mlxgpt's own loop). It writes OUT/weights.npz (float32 arrays by mlxgpt's
parameter names, read back with allow_pickle=False) and OUT/result.json (the
last val estimate, time, tokens/s), so mlxgpt's tools can score the model.

PyTorch runs in a process that loads no BLAS of mlxgpt's (MLXGPT_BLAS=reference;
the command restarts itself with it): mlxgpt's OpenBLAS, loaded globally for MLX,
would also take over PyTorch's matmuls and make them ~3x slower (see
mlxgpt/bench/torch_worker.py).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

from mlxgpt.config import PRESETS, ModelArgs, TrainArgs
from mlxgpt.errors import MlxgptError
from mlxgpt.files import write_atomic
from mlxgpt.flags import (add_batch_size_argument, add_data_argument, add_model_shape_arguments, add_preset_argument,
                          add_seed_argument)


def train(train_ids: np.ndarray, val_ids: np.ndarray, model_args, train_args, seed: int):
    """nanoGPT's loop; returns (report, trained torch model).

    The RNG is consumed in nanoGPT's order: init, the first batch, then per step an
    eval every eval_interval (eval_iters fresh batches of train, then of val), the
    forward pass (dropout), the next batch."""
    import torch

    from mlxgpt.fast.blas import setup_blas
    from mlxgpt.bench import torch_ref

    torch.manual_seed(seed)
    model = torch_ref.GPT(model_args)
    trainer = torch_ref.Trainer(model, train_args)
    splits = {"train": torch.from_numpy(train_ids.astype(np.int64)), "val": torch.from_numpy(val_ids.astype(np.int64))}
    block, batch = model_args.block_size, train_args.batch_size

    def get_batch(split: str) -> tuple[torch.Tensor, torch.Tensor]:
        data = splits[split]
        ix = torch.randint(len(data) - block, (batch,))
        return torch.stack([data[i:i + block] for i in ix]), torch.stack([data[i + 1:i + 1 + block] for i in ix])

    @torch.no_grad()
    def estimate_loss() -> dict[str, float]:
        model.eval()
        losses = {split: float(np.mean([model(*get_batch(split))[1].item() for _ in range(train_args.eval_iters)]))
                  for split in splits}
        model.train()
        return losses

    started = time.perf_counter()
    x, y = get_batch("train")
    losses = {"train": math.nan, "val": math.nan}
    for it in range(train_args.max_iters + 1):
        if it % train_args.eval_interval == 0 or it == train_args.max_iters:
            losses = estimate_loss()
        if it == train_args.max_iters:
            break  # nanoGPT takes one more step after its last eval; the loss it reports is this one
        trainer.step(x[None], y[None])
        x, y = get_batch("train")
    seconds = time.perf_counter() - started
    tokens = train_args.max_iters * batch * block
    report = dict(iter=train_args.max_iters, train_estimate=losses["train"], val_estimate=losses["val"],
                  train_seconds=seconds, tokens_per_s=tokens / seconds, torch=torch.__version__,
                  threads=torch.get_num_threads(), mlxgpt_blas=setup_blas().name)  # "reference": none of ours
    return report, model


SETTING_FIELDS = ("n_layer", "n_head", "n_embd", "block_size", "dropout", "bias", "batch_size", "max_iters")


def add_setting_arguments(p: argparse.ArgumentParser) -> None:
    """The preset and the overrides this procedure and `mlxgpt train` share (train.py's flags)."""
    add_preset_argument(p, "starting configuration (as train.py's)", default="baby")
    g = p.add_argument_group("override the preset (default: the preset's)")
    add_model_shape_arguments(g)
    add_batch_size_argument(g, "sequences per batch")
    g.add_argument("--max-iters", type=int, help="optimizer steps (the cosine decays over as many)")


def setting_flags(args: argparse.Namespace) -> list[str]:
    """The overrides in `args` as train.py flags, to pass the same setting on."""
    flags = []
    for name in SETTING_FIELDS:
        value, flag = getattr(args, name), "--" + name.replace("_", "-")
        if isinstance(value, bool):
            flags.append(flag if value else f"--no-{flag[2:]}")
        elif value is not None:
            flags += [flag, str(value)]
    return flags


def setting(args: argparse.Namespace, vocab_size: int):
    """(ModelArgs, TrainArgs): the preset with the overrides, as train.py resolves them."""
    overrides = {name: getattr(args, name) for name in SETTING_FIELDS if getattr(args, name) is not None}
    model_values, train_values = PRESETS[args.preset].with_overrides(overrides)
    train_args = TrainArgs.from_dict(train_values)
    train_args.validate()
    return ModelArgs.from_dict({**model_values, "vocab_size": vocab_size}), train_args


def prepare(args: argparse.Namespace):
    """(ModelArgs, TrainArgs, train ids, val ids, val characters): what train.py builds
    from the same flags, for a char model (every character of the file; 90/10 split)."""
    from mlxgpt.data import read_text, split_text
    from mlxgpt.tokenizers import CharTokenizer

    text = read_text(args.data)
    tokenizer = CharTokenizer.train(text)
    model_args, train_args = setting(args, tokenizer.vocab_size)
    train_text, val_text = split_text(text)
    train_ids, val_ids = (np.asarray(tokenizer.encode(part), dtype=np.int32) for part in (train_text, val_text))
    return model_args, train_args, train_ids, val_ids, len(val_text)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(prog="python -m experiments.nanogpt_train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_argument(p, "UTF-8 text file, or shakespeare (a char model, split 90/10)", required=True)
    add_seed_argument(p, "PyTorch's seed: initial weights, batches, dropout", default=TrainArgs.seed)
    p.add_argument("--out", type=Path, required=True, help="directory for weights.npz and result.json")
    add_setting_arguments(p)
    args = p.parse_args(argv)
    if os.environ.get("MLXGPT_BLAS") != "reference":  # see the module docstring
        env = {**os.environ, "MLXGPT_BLAS": "reference"}
        os.execve(sys.executable, [sys.executable, "-m", "experiments.nanogpt_train", *argv], env)

    from mlxgpt.bench.torch_ref import torch_weights

    try:
        model_args, train_args, train_ids, val_ids, _ = prepare(args)
    except MlxgptError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    report, model = train(train_ids, val_ids, model_args, train_args, args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    np.savez(args.out / "weights.npz", **torch_weights(model))
    result = {**report, "seed": args.seed, "model": vars(model_args)}
    write_atomic(args.out / "result.json", json.dumps(result, indent=2))
    print(f"nanoGPT's procedure, seed {args.seed}: val {report['val_estimate']:.4f} at iter {report['iter']} "
          f"(estimate on {train_args.eval_iters} random batches), {report['train_seconds']:.0f} s, "
          f"{report['tokens_per_s']:,.0f} tok/s; {args.out / 'weights.npz'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
