"""Assemble a training run from resolved options: data, tokenizer, model, optimizer,
resume state, run directory. cli.py parses flags; training.py runs the loop;
this module is the glue between them, so both stay simple.
"""

from __future__ import annotations

import dataclasses
import hashlib
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlx.core as mx
from mlx.utils import tree_flatten

from mlxgpt.fast.blas import setup_blas
from mlxgpt.fast.device import (compute_dtype, configure_device, device_name, fit_batch_to_memory, gpu_memory_gb,
                                on_gpu)
from mlxgpt.fast.jit import first_compile
from mlxgpt.fast.streams import step_factory
from mlxgpt.checkpoint import find_checkpoint, load_checkpoint_tokenizer, load_model, load_training_state, read_config
from mlxgpt.config import FINETUNE_DEFAULTS, MODEL_FIELDS, PRESETS, TRAIN_FIELDS, ModelArgs, TrainArgs, default_preset_name
from mlxgpt.data import is_stdin, make_dataset, read_text, rereadable_path, resolve_data, tokenizer_text
from mlxgpt.distributed import World, check_same_across_ranks, init_world
from mlxgpt.errors import MlxgptError
from mlxgpt.events import EventHandler, RunFinished, RunStarted
from mlxgpt.finetune import Parent, fit_model, fit_tokenizer, freeze_layers
from mlxgpt.model import GPT, flops_per_token
from mlxgpt.plots import with_loss_picture
from mlxgpt.rundir import RunLock, check_writable, holds_run, refuse_existing_run
from mlxgpt.tokenizers import TOKENIZERS, Tokenizer
from mlxgpt.ui.metrics import MetricsWriter
from mlxgpt.training import LoopState, Run, build_optimizer, train

@dataclass
class TrainOptions:
    """What the user asked for. `overrides` holds only flags given explicitly."""

    data: str | None
    out: str | None = None
    preset: str | None = None
    tokenizer: str | None = None  # None: char for a new run, the run's own on --resume
    tokenizer_options: dict[str, Any] = field(default_factory=dict)
    resume: bool = False
    overwrite: bool = False
    overrides: dict[str, Any] = field(default_factory=dict)
    streams: int | None = None  # CPU streams per step (None: automatic)
    plain: bool = False  # the textbook step, without mlxgpt/fast
    data_format: str | None = None  # "text" | "lines" (one example per line); None: text, or the run's own
    init_from: str | None = None  # fine-tune: start from this run's (or checkpoint's) weights and tokenizer
    extend_vocab: bool = False  # fine-tune: a char model may learn the new text's new characters


def _pick_preset(name: str | None) -> tuple[str, str]:
    if name is None:
        gpu = on_gpu()
        return default_preset_name(gpu), f"default on {'GPU' if gpu else 'CPU'}; choose with --preset"
    if name not in PRESETS:
        raise MlxgptError(f"unknown --preset {name!r}: choose one of {', '.join(PRESETS)}")
    return name, "chosen with --preset"


def _run_dir(options: TrainOptions, data_name: str) -> Path:
    """--out, or out/<data-name>, skipping directories that hold another run or someone else's files."""
    if options.out:
        out = Path(options.out)
        check_writable(out)
        if not options.overwrite:
            refuse_existing_run(out)
        return out
    base = Path("out") / (data_name or "run")
    out, n = base, 1
    while True:
        try:
            check_writable(out)
            if options.overwrite or not holds_run(out):
                return out
        except MlxgptError:
            pass  # not ours: leave it alone and take the next name
        n += 1
        out = base.with_name(f"{base.name}-{n}")


def _data_record(data_path: Path, text: str) -> dict[str, Any]:
    """What config.json says about the text: a path that can be read again (null for standard input
    or a pipe such as <(cat file)), and its hash, which --resume checks."""
    again = rereadable_path(data_path)
    return {"data": str(again) if again else None, "data_sha256": _sha256(text)}


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _train_tokenizer(kind: str, text: str, options: dict[str, Any]) -> Tokenizer:
    if kind not in TOKENIZERS:
        raise MlxgptError(f"unknown --tokenizer {kind!r}: choose one of {', '.join(TOKENIZERS)}")
    return TOKENIZERS[kind].train(text, **options)


def prepare_run(options: TrainOptions) -> tuple[Run, RunStarted]:
    world = init_world()
    if world.size > 1 and options.data and is_stdin(options.data):
        raise MlxgptError("--data - reads standard input, which only one process of `mlxgpt launch` has: "
                          "save the text to a file and pass its path")
    run, started = _prepare_resume(options, world) if options.resume else _prepare_new(options)
    run.world = world
    if options.plain:
        run.plain, parallelism = True, "plain: the textbook step, no mlxgpt/fast"
    else:
        # ranks on one machine share its cores (assume all are local: the common case; --cpu-streams overrides)
        settings = configure_device(options.streams, processes=world.size)
        run.make_step, parallelism = step_factory(settings.streams), settings.describe()
    run.dtype = compute_dtype(run.args.dtype)
    notes = [parallelism] if parallelism else []
    if run.dtype != mx.float32:
        notes.append(f"{str(run.dtype).removeprefix('mlx.core.')} compute (float32 weights)")
    if world.size > 1:
        notes.append(f"{world.size} ranks")
    started.parallelism = ", ".join(notes)
    started.compiling_kernels = first_compile()
    started.tokens_per_iter *= world.size
    started.world_size = world.size
    check_same_across_ranks(world, int(run.data.train[:100_000].sum()) + len(run.data.train), "the training data")
    return run, started


def _prepare_new(options: TrainOptions) -> tuple[Run, RunStarted]:
    if not options.data:
        raise MlxgptError("no training text: pass --data PATH (a UTF-8 text file) or --data shakespeare")
    data_path = resolve_data(options.data)
    text = read_text(data_path)
    out = _run_dir(options, data_path.stem if rereadable_path(data_path) else "stdin")
    if options.init_from:
        return _prepare_finetune(options, data_path, text, out)
    preset, note = _pick_preset(options.preset)
    model_values, train_values = PRESETS[preset].with_overrides(options.overrides)
    smaller = fit_batch_to_memory(train_values, set(options.overrides), gpu_memory_gb())
    note += f"; {smaller}" if smaller else ""
    train_args = TrainArgs.from_dict(train_values)
    train_args.validate()
    ModelArgs.from_dict(model_values)  # validate the shape before the (slower) tokenizer training
    kind = options.tokenizer or "char"
    data_format = options.data_format or "text"
    tokenizer = _train_tokenizer(kind, tokenizer_text(text, data_format, training_split_only=kind != "char"),
                                 options.tokenizer_options)
    model_args = ModelArgs.from_dict({**model_values, "vocab_size": tokenizer.vocab_size})
    if not model_args.causal and train_args.sample_tokens:
        train_args.sample_tokens = 0
        note += "; no samples: a model without the causal mask cannot generate"
    data = make_dataset(text, tokenizer, model_args.block_size, data_format)
    _check_sample_prompt(train_args, tokenizer, text, given="sample_prompt" in options.overrides)
    mx.random.seed(train_args.seed)  # the initial weights depend on --seed only
    model = GPT(model_args)
    return _new_run(model, tokenizer, data, train_args, out, data_path, text,
                    {"preset": preset, "data_format": data_format}, note)


def _prepare_finetune(options: TrainOptions, data_path: Path, text: str, out: Path) -> tuple[Run, RunStarted]:
    """--init-from: the parent's weights, shape and tokenizer; a fresh optimizer and schedule."""
    shape = sorted(k for k in options.overrides if k in MODEL_FIELDS and k != "dropout")
    if shape or options.preset or options.tokenizer or options.tokenizer_options:
        given = ", ".join([*shape, *(["preset"] if options.preset else []),
                           *(["tokenizer"] if options.tokenizer or options.tokenizer_options else [])])
        raise MlxgptError(f"--init-from keeps the parent's model shape and tokenizer, so {given} cannot be given: "
                          "drop them (only --dropout may change), or start a new run without --init-from")
    parent = Parent.load(options.init_from)
    data_format = options.data_format or parent.config.get("data_format", "text")
    train_values = {**parent.config["train"], **FINETUNE_DEFAULTS,
                    **{k: v for k, v in options.overrides.items() if k in TRAIN_FIELDS}}
    if "max_iters" in options.overrides and "lr_decay_iters" not in options.overrides:
        train_values["lr_decay_iters"] = options.overrides["max_iters"]
    train_args = TrainArgs.from_dict(train_values)
    train_args.validate()
    tokenizer = fit_tokenizer(parent, tokenizer_text(text, data_format, training_split_only=False),
                              options.extend_vocab)
    if tokenizer.vocab_size > parent.tokenizer.vocab_size and train_args.freeze_layers:
        raise MlxgptError("--freeze-layers keeps the embeddings as they are, so the rows --extend-vocab adds would "
                          "never learn: drop one of the two")
    mx.random.seed(train_args.seed)  # new embedding rows (--extend-vocab) depend on --seed
    model = fit_model(parent, tokenizer.vocab_size, options.overrides.get("dropout"))
    data = make_dataset(text, tokenizer, model.args.block_size, data_format)
    _check_sample_prompt(train_args, tokenizer, text, given="sample_prompt" in options.overrides)
    freeze_layers(model, train_args.freeze_layers)
    return _new_run(model, tokenizer, data, train_args, out, data_path, text,
                    {"preset": parent.config.get("preset", "?"), "data_format": data_format,
                     "init_from": parent.record()}, f"fine-tuning {parent.checkpoint}")


def _new_run(model: GPT, tokenizer: Tokenizer, data, train_args: TrainArgs, out: Path, data_path: Path, text: str,
             extra: dict[str, Any], note: str) -> tuple[Run, RunStarted]:
    run = Run(model, build_optimizer(train_args), tokenizer, data, train_args, out,
              {**extra, **_data_record(data_path, text)}, LoopState())
    run.resume_command = _resume_command(out)
    return run, _started(run, extra["preset"], note)


def _prepare_resume(options: TrainOptions, world: World) -> tuple[Run, RunStarted]:
    if not options.out:
        raise MlxgptError("--resume needs the run directory: pass --out RUN_DIR (e.g. --out out/shakespeare)")
    if options.overwrite:
        raise MlxgptError("--resume continues a run and --overwrite replaces it: pass one of them")
    out = Path(options.out)
    check_writable(out)
    checkpoint_dir = find_checkpoint(out, "latest")
    if checkpoint_dir is None:
        raise MlxgptError(f"nothing to resume in {out}: it has no latest/ checkpoint (train without --resume first)")
    config = read_config(checkpoint_dir)
    changed = {k: v for k, v in options.overrides.items() if k in MODEL_FIELDS and config["model"].get(k) != v}
    if changed:
        raise MlxgptError(f"cannot change the model's shape when resuming ({', '.join(changed)}): "
                          "drop those flags, or start a new run with another --out")
    saved_tokenizer, saved_preset = config["tokenizer"]["kind"], config.get("preset")
    if options.tokenizer_options or (options.tokenizer and options.tokenizer != saved_tokenizer):
        raise MlxgptError(f"cannot change the tokenizer when resuming (the run uses {saved_tokenizer}): drop "
                          "--tokenizer/--vocab-size/--sp-model-type, or start a new run with another --out")
    saved_format = config.get("data_format", "text")
    if options.data_format and options.data_format != saved_format:
        raise MlxgptError(f"cannot change --format when resuming (the run uses {saved_format}): drop --format, "
                          "or start a new run with another --out")
    if options.preset and options.preset != saved_preset:
        raise MlxgptError(f"cannot change the preset when resuming (the run uses {saved_preset}): drop --preset "
                          "(training flags such as --max-iters still apply), or start a new run")
    spec = options.data or config.get("data")
    if not spec:
        raise MlxgptError(f"{out} was trained on text that cannot be read again (standard input): "
                          "pass the same text with --data")
    data_path = resolve_data(spec)
    text = read_text(data_path)
    tokenizer = load_checkpoint_tokenizer(checkpoint_dir, config)
    saved_hash = config.get("data_sha256")
    if saved_hash and _sha256(text) != saved_hash:
        raise MlxgptError(f"{data_path} is not the text {out} was trained on (its SHA-256 differs), so the "
                          "validation split and best/ would change meaning: resume with the original text, or "
                          "start a new run (fine-tuning a trained model on new text is not supported yet)")
    elif not saved_hash and saved_tokenizer == "char" and TOKENIZERS["char"].train(text).chars != tokenizer.chars:
        # a run from before the hash was recorded: at least the vocabulary must match
        raise MlxgptError(f"--resume with a different vocabulary: {data_path} does not have the characters the run "
                          f"was trained on; resume with the original text ({config['data']}) or start a new run")
    train_values = {**config["train"], **{k: v for k, v in options.overrides.items() if k in TRAIN_FIELDS}}
    train_args = TrainArgs.from_dict(train_values)
    train_args.validate()
    _check_sample_prompt(train_args, tokenizer, text, given="sample_prompt" in options.overrides)
    model = load_model(checkpoint_dir, config)
    model.train()
    freeze_layers(model, train_args.freeze_layers)
    state, optimizer = resumed_state(model, train_args, checkpoint_dir, world)
    data = make_dataset(text, tokenizer, model.args.block_size, saved_format)
    run = Run(model, optimizer, tokenizer, data, train_args, out,
              {"preset": config.get("preset", "?"), "data_format": saved_format, **_data_record(data_path, text),
               **({"init_from": config["init_from"]} if "init_from" in config else {})},
              LoopState.from_dict(state))
    run.resume_command = _resume_command(out)
    return run, _started(run, config.get("preset", "?"), "resumed")


def resumed_state(model, train_args: TrainArgs, checkpoint_dir: Path, world: World) -> tuple[dict[str, Any], Any]:
    """(state.json's loop state, the optimizer with its saved moments) to continue a run, checked."""
    state, optimizer_state = load_training_state(checkpoint_dir)
    if state.get("world_size", 1) != world.size:
        raise MlxgptError(f"{checkpoint_dir.parent} was trained with {state.get('world_size', 1)} rank(s) but this run "
                          f"has {world.size}: resume with the same number (mlxgpt launch -n N), or start a new run")
    optimizer = build_optimizer(train_args)
    optimizer.init(model.trainable_parameters())
    expected = {name: (array.shape, array.dtype) for name, array in tree_flatten(optimizer.state)}
    saved = {name: (array.shape, array.dtype) for name, array in tree_flatten(optimizer_state)}
    wrong = [name for name, spec in saved.items() if expected.get(name) != spec]  # missing ones start at zero
    if wrong:  # (a checkpoint saved before the first step holds no moments yet)
        raise MlxgptError(f"{checkpoint_dir / 'optimizer.safetensors'} does not fit the model (tensor {wrong[0]} "
                          "is unknown or of another shape or dtype): the checkpoint is damaged; start a new run")
    optimizer.state = optimizer_state
    return state, optimizer


def _check_sample_prompt(args: TrainArgs, tokenizer: Tokenizer, text: str, given: bool) -> None:
    """A --sample-prompt the model cannot read is refused; the default newline falls back to the text's start."""
    try:
        tokenizer.encode(args.sample_prompt)
    except MlxgptError as exc:
        if given:
            raise MlxgptError(f"--sample-prompt: {exc}") from None
        args.sample_prompt = text[0]  # the text has no newline: start samples from its first character


def _resume_command(out: Path) -> str:
    return f"python train.py --resume --out {shlex.quote(str(out))}"


def _started(run: Run, preset: str, note: str) -> RunStarted:
    model, args = run.model, run.args
    n_params = model.num_params()
    return RunStarted(out_dir=str(run.out_dir), preset=preset, preset_note=note, device=device_name(),
                      blas="" if on_gpu() else setup_blas().describe(), parallelism="",  # no CPU BLAS on a GPU
                      model_args=vars(model.args).copy(),
                      train_args=dataclasses.asdict(args), tokenizer=run.tokenizer.kind,
                      vocab_size=run.tokenizer.vocab_size, n_params=n_params,
                      n_params_total=model.num_params(non_embedding=False), train_tokens=run.data.target_tokens("train"),
                      val_tokens=run.data.target_tokens("val"), start_iter=run.state.iter,
                      tokens_per_iter=args.batch_size * args.grad_accum * model.args.block_size,
                      flops_per_token=flops_per_token(model.args, n_params))


def run_training(options: TrainOptions, renderer: EventHandler) -> RunFinished:
    """Prepare, announce, train; every event goes to metrics.jsonl and to the renderer."""
    run, started = prepare_run(options)
    return record_and_train(run, started, renderer, resume=options.resume, overwrite=options.overwrite)


def record_and_train(run: Run, started: RunStarted, renderer: EventHandler, *, resume: bool,
                     overwrite: bool) -> RunFinished:
    """Train a prepared run while holding its directory's lock; every event goes to metrics.jsonl
    and to the renderer (the GPT's runs and the encoder-decoder's, mlxgpt/seq2seq/runner.py)."""
    if not run.world.is_main:
        return train(run, lambda event: None)  # rank 0 reports and writes for everyone
    with RunLock(run.out_dir).claim(replace=overwrite):
        if not resume and not overwrite:
            refuse_existing_run(run.out_dir)  # one may have been saved since _run_dir looked
        try:
            metrics = MetricsWriter(run.out_dir / "metrics.jsonl", append=resume)
        except OSError as exc:  # a place we may not write
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
