"""Assemble a training run from resolved options: data, tokenizer, model, optimizer,
resume state, run directory. cli.py parses flags; training.py runs the loop;
this module is the glue between them, so both stay simple.
"""

from __future__ import annotations

import dataclasses
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlx.core as mx

from mlxgpt.backend import configure_device, device_name, on_gpu, setup_blas
from mlxgpt.checkpoint import (find_checkpoint, holds_run, load_checkpoint_tokenizer, load_model,
                               load_training_state, read_config)
from mlxgpt.config import MODEL_FIELDS, PRESETS, TRAIN_FIELDS, ModelArgs, TrainArgs, default_preset_name
from mlxgpt.data import Dataset, read_text, resolve_data, split_text
from mlxgpt.distributed import World, check_same_across_ranks, init_world
from mlxgpt.errors import MlxgptError
from mlxgpt.events import EventHandler, RunFinished, RunStarted
from mlxgpt.model import GPT, flops_per_token
from mlxgpt.tokenizers import TOKENIZERS, Tokenizer
from mlxgpt.ui.metrics import MetricsWriter
from mlxgpt.ui.picture import with_loss_picture
from mlxgpt.training import LoopState, Run, build_optimizer, train

@dataclass
class TrainOptions:
    """What the user asked for. `overrides` holds only flags given explicitly."""

    data: str | None
    out: str | None = None
    preset: str | None = None
    tokenizer: str = "char"
    tokenizer_options: dict[str, Any] = field(default_factory=dict)
    resume: bool = False
    overwrite: bool = False
    overrides: dict[str, Any] = field(default_factory=dict)
    streams: int | None = None  # CPU streams per step (None: automatic)
    argv: list[str] = field(default_factory=list)  # for the resume hint


def _pick_preset(name: str | None) -> tuple[str, str]:
    if name is None:
        gpu = on_gpu()
        return default_preset_name(gpu), f"default on {'GPU' if gpu else 'CPU'}; choose with --preset"
    if name not in PRESETS:
        raise MlxgptError(f"unknown --preset {name!r}: choose one of {', '.join(PRESETS)}")
    return name, "chosen with --preset"


def _run_dir(options: TrainOptions, data_path: Path) -> Path:
    """out/<data-name>; a new default directory never replaces an old run."""
    if options.out:
        out = Path(options.out)
        if not options.resume and not options.overwrite and holds_run(out):
            raise MlxgptError(f"{out} already holds a trained run: add --resume to continue it, "
                              "--overwrite to replace it, or choose another --out")
        return out
    base = Path("out") / (data_path.stem or "run")
    out, n = base, 1
    while not options.overwrite and holds_run(out):
        n += 1
        out = base.with_name(f"{base.name}-{n}")
    return out


def _train_tokenizer(kind: str, text: str, options: dict[str, Any]) -> Tokenizer:
    if kind not in TOKENIZERS:
        raise MlxgptError(f"unknown --tokenizer {kind!r}: choose one of {', '.join(TOKENIZERS)}")
    return TOKENIZERS[kind].train(text, **options)


def prepare_run(options: TrainOptions) -> tuple[Run, RunStarted]:
    world = init_world()
    run, started = _prepare_resume(options, world) if options.resume else _prepare_new(options)
    run.world = world
    # ranks on one machine share its cores (assume all are local: the common case; --cpu-streams overrides)
    settings = configure_device(options.streams, processes=world.size)
    run.streams = settings.streams
    started.parallelism = settings.describe() + (f", {world.size} ranks" if world.size > 1 else "")
    started.tokens_per_iter *= world.size
    started.world_size = world.size
    check_same_across_ranks(world, int(run.data.train[:100_000].sum()) + len(run.data.train), "the training data")
    return run, started


def _prepare_new(options: TrainOptions) -> tuple[Run, RunStarted]:
    if not options.data:
        raise MlxgptError("no training text: pass --data PATH (a UTF-8 text file) or --data shakespeare")
    data_path = resolve_data(options.data)
    text = read_text(data_path)
    preset, note = _pick_preset(options.preset)
    model_values, train_values = PRESETS[preset].with_overrides(options.overrides)
    train_args = TrainArgs.from_dict(train_values)
    train_args.validate()
    ModelArgs.from_dict(model_values)  # validate the shape before the (slower) tokenizer training
    tokenizer = _train_tokenizer(options.tokenizer, split_text(text)[0] if options.tokenizer != "char" else text,
                                 options.tokenizer_options)
    model_args = ModelArgs.from_dict({**model_values, "vocab_size": tokenizer.vocab_size})
    data = Dataset.from_text(text, tokenizer, model_args.block_size)
    _check_sample_prompt(train_args, tokenizer, text)
    mx.random.seed(train_args.seed)  # the initial weights depend on --seed only
    model = GPT(model_args)
    out = _run_dir(options, data_path)
    run = Run(model, build_optimizer(train_args), tokenizer, data, train_args, out,
              {"preset": preset, "data": str(data_path.resolve())}, LoopState())
    run.resume_command = _resume_command(out)
    return run, _started(run, preset, note)


def _prepare_resume(options: TrainOptions, world: World) -> tuple[Run, RunStarted]:
    if not options.out:
        raise MlxgptError("--resume needs the run directory: pass --out RUN_DIR (e.g. --out out/shakespeare)")
    out = Path(options.out)
    checkpoint_dir = find_checkpoint(out, "latest")
    if checkpoint_dir is None:
        raise MlxgptError(f"nothing to resume in {out}: it has no latest/ checkpoint (train without --resume first)")
    config = read_config(checkpoint_dir)
    changed = {k: v for k, v in options.overrides.items() if k in MODEL_FIELDS and config["model"].get(k) != v}
    if changed:
        raise MlxgptError(f"cannot change the model's shape when resuming ({', '.join(changed)}): "
                          "drop those flags, or start a new run with another --out")
    saved_tokenizer = config["tokenizer"]["kind"]
    if options.tokenizer_options or (options.tokenizer != "char" and options.tokenizer != saved_tokenizer):
        raise MlxgptError(f"cannot change the tokenizer when resuming (the run uses {saved_tokenizer})")
    data_path = resolve_data(options.data) if options.data else Path(config["data"])
    text = read_text(data_path)
    tokenizer = load_checkpoint_tokenizer(checkpoint_dir, config)
    if saved_tokenizer == "char" and TOKENIZERS["char"].train(text).chars != tokenizer.chars:
        raise MlxgptError(f"--resume with a different vocabulary: {data_path} does not have the characters the run "
                          f"was trained on; resume with the original text ({config['data']}) or start a new run")
    train_values = {**config["train"], **{k: v for k, v in options.overrides.items() if k in TRAIN_FIELDS}}
    train_args = TrainArgs.from_dict(train_values)
    train_args.validate()
    model = load_model(checkpoint_dir, config)
    model.train()
    state, optimizer_state = load_training_state(checkpoint_dir)
    if state.get("world_size", 1) != world.size:
        raise MlxgptError(f"{out} was trained with {state.get('world_size', 1)} rank(s) but this run has {world.size}: "
                          "resume with the same number (mlxgpt launch -n N), or start a new run")
    optimizer = build_optimizer(train_args)
    optimizer.init(model.trainable_parameters())
    try:
        optimizer.state = optimizer_state
    except ValueError:
        raise MlxgptError(f"{checkpoint_dir} has an optimizer state this version cannot use: start a new run") from None
    data = Dataset.from_text(text, tokenizer, model.args.block_size)
    run = Run(model, optimizer, tokenizer, data, train_args, out,
              {"preset": config.get("preset", "?"), "data": str(data_path.resolve())}, LoopState.from_dict(state))
    run.resume_command = _resume_command(out)
    return run, _started(run, config.get("preset", "?"), "resumed")


def _check_sample_prompt(args: TrainArgs, tokenizer: Tokenizer, text: str) -> None:
    try:
        tokenizer.encode(args.sample_prompt)
    except MlxgptError:
        args.sample_prompt = text[0]  # the text has no newline: start samples from its first character


def _resume_command(out: Path) -> str:
    return f"python train.py --resume --out {shlex.quote(str(out))}"


def _started(run: Run, preset: str, note: str) -> RunStarted:
    model, args = run.model, run.args
    n_params = model.num_params()
    return RunStarted(str(run.out_dir), preset, note, device_name(), setup_blas().describe(), "",
                      vars(model.args).copy(), dataclasses.asdict(args), run.tokenizer.kind,
                      run.tokenizer.vocab_size, n_params, model.num_params(non_embedding=False),
                      len(run.data.train), len(run.data.val), run.state.iter,
                      args.batch_size * args.grad_accum * model.args.block_size,
                      flops_per_token(model.args, n_params))


def run_training(options: TrainOptions, renderer: EventHandler) -> RunFinished:
    """Prepare, announce, train; every event goes to metrics.jsonl and to the renderer."""
    run, started = prepare_run(options)
    if not run.world.is_main:
        return train(run, lambda event: None)  # rank 0 reports for everyone
    try:
        metrics = MetricsWriter(run.out_dir / "metrics.jsonl", append=options.resume)
    except OSError as exc:  # --out is a file, or in a place we may not write
        raise MlxgptError(f"cannot write the run directory {run.out_dir} ({exc.strerror or exc}): "
                          "choose another --out") from None

    def on_event(event) -> None:
        if isinstance(event, RunFinished):  # draw the loss picture before anyone reports the end
            event = with_loss_picture(event, metrics.path)
        metrics(event)
        renderer(event)

    try:
        on_event(started)
        return train(run, on_event)
    finally:
        metrics.close()
        sys.stdout.flush()
