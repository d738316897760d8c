"""`mlxgpt translate train|run|eval`: the encoder-decoder's runs, through the GPT's own machinery.

Training goes through training.train (the same compiled step, evaluation, samples, checkpoints,
--resume, Ctrl-C and time budget) and runner.record_and_train (the run directory's lock,
metrics.jsonl, the dashboard or plain lines). What is the encoder-decoder's own is assembled here:
the pairs, their vocabulary, the model, and a sample that shows source -> prediction (reference).

    --pairs numbers:en-fr   numbers 1-9,999 written out in both languages by num2words, generated
                            on the fly; 10% of the numbers (seeded, fixed) held out
    --pairs FILE.tsv        a user's own `source<TAB>target` lines; 10% of the distinct sources held out
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlx.core as mx

from mlxgpt.checkpoint import (find_checkpoint, latest_run, load_checkpoint_tokenizer, load_model, read_config,
                               resolve_checkpoint)
from mlxgpt.config import TrainArgs
from mlxgpt.data import held_out, rereadable_path, resolve_data
from mlxgpt.distributed import SINGLE
from mlxgpt.errors import MlxgptError
from mlxgpt.events import EventHandler, RunFinished, RunStarted
from mlxgpt.fast.blas import setup_blas
from mlxgpt.fast.device import configure_device, device_name, on_gpu
from mlxgpt.fast.jit import first_compile
from mlxgpt.model import flops_per_token
from mlxgpt.rundir import check_writable, refuse_existing_run
from mlxgpt.runner import record_and_train, resumed_state
from mlxgpt.seq2seq.data import (LANGUAGES, Pair, PairsDataset, PairVocabulary, character_error_rate, exact_match,
                                 make_batch, needed_block_size, number_pairs, read_pairs_tsv, split_numbers)
from mlxgpt.seq2seq.model import EncoderDecoder, Seq2SeqArgs, beam_search, greedy_batch
from mlxgpt.training import LoopState, Run, build_optimizer

NUMBERS = re.compile(r"numbers:([a-z]{2})-([a-z]{2})")
DEFAULT_PAIRS = "numbers:en-fr"
NUMBER_RANGE = (1, 9999)
VAL_FRACTION = 0.1
SPLIT_SEED = 0  # the held-out split is fixed: every run (any --seed) is scored on the same pairs
# The recipe of a new run (every value a flag can override).
MODEL_DEFAULTS = dict(n_encoder_layers=2, n_decoder_layers=2, n_head=4, n_embd=128, dropout=0.0, bias=False,
                      pos_embedding="sinusoidal")
TRAIN_DEFAULTS = dict(batch_size=32, max_iters=3000, lr=2e-3, min_lr=2e-4, warmup_iters=100, eval_interval=250,
                      eval_iters=10, log_interval=25, sample_tokens=1)
MODEL_FIELDS = ("n_encoder_layers", "n_decoder_layers", "n_head", "n_embd", "dropout", "bias", "pos_embedding",
                "block_size")


@dataclass
class Pairs:
    """The training and held-out pairs of a --pairs spec, and a hash that --resume checks."""

    spec: str  # what config.json records: numbers:xx-yy, or the TSV's path
    train: list[Pair]
    val: list[Pair]
    sha256: str


def load_pairs(spec: str) -> Pairs:
    numbers = NUMBERS.fullmatch(spec)
    if numbers:
        source, target = numbers.groups()
        train_numbers, val_numbers = split_numbers(*NUMBER_RANGE, VAL_FRACTION, SPLIT_SEED)
        train, val = number_pairs(train_numbers, source, target), number_pairs(val_numbers, source, target)
    elif spec.startswith("numbers"):
        raise MlxgptError(f"--pairs {spec!r}: write numbers:SOURCE-TARGET with two of {', '.join(LANGUAGES)}, "
                          "e.g. numbers:en-fr")
    else:
        pairs = read_pairs_tsv(spec)
        hold = held_out([source for source, _ in pairs], VAL_FRACTION, SPLIT_SEED)
        train = [pair for pair, h in zip(pairs, hold) if not h]
        val = [pair for pair, h in zip(pairs, hold) if h]
        again = rereadable_path(resolve_data(spec))
        if again is None:
            raise MlxgptError("--pairs must be a file that can be read again (for --resume and eval), not a pipe")
        spec = str(again)
    text = "".join(f"{s}\t{t}\n" for s, t in train + val)
    return Pairs(spec, train, val, hashlib.sha256(text.encode("utf-8")).hexdigest())


# ---------------------------------------------------------------- train


@dataclass
class TranslateOptions:
    """What `mlxgpt translate train` was asked for; `overrides` holds only the flags given."""

    pairs: str | None = None
    out: str | None = None
    resume: bool = False
    overwrite: bool = False
    overrides: dict[str, Any] = field(default_factory=dict)


def translation_sample(reference: Pair, vocab: PairVocabulary):
    """The eval-time sample: one held-out source translated greedily, beside its reference."""
    def sample(run: Run) -> str:
        src = mx.array(make_batch([reference], vocab, run.model.args.block_size)[0])
        predicted = vocab.decode(greedy_batch(run.model, src, vocab.bos_id, vocab.eos_id, run.model.args.block_size)[0])
        mark = "✓" if predicted == reference[1] else "✗"
        return f" → {predicted}   {mark} reference: {reference[1]}"
    return sample


def prepare(options: TranslateOptions) -> tuple[Run, RunStarted]:
    model_given = {k: v for k, v in options.overrides.items() if k in MODEL_FIELDS}
    train_given = {k: v for k, v in options.overrides.items() if k not in MODEL_FIELDS}
    if options.resume:
        return _prepare_resume(options, model_given, train_given)
    if not options.out:
        raise MlxgptError("--out is required: the run directory to write, e.g. --out out/numbers")
    out = Path(options.out)
    check_writable(out)
    if not options.overwrite:
        refuse_existing_run(out, how="add --resume to continue it, --overwrite to replace it")
    train_args = TrainArgs.from_dict({**TRAIN_DEFAULTS, **train_given})
    train_args.validate()
    pairs = load_pairs(options.pairs or DEFAULT_PAIRS)
    vocab = PairVocabulary.from_pairs(pairs.train + pairs.val)
    block_size = model_given.pop("block_size", None) or needed_block_size(pairs.train + pairs.val)
    args = Seq2SeqArgs(vocab_size=vocab.vocab_size, block_size=block_size, **{**MODEL_DEFAULTS, **model_given})
    data = PairsDataset.from_pairs(pairs.train, pairs.val, vocab, block_size)
    mx.random.seed(train_args.seed)  # the initial weights depend on --seed only
    model = EncoderDecoder(args)
    train_args.sample_prompt = pairs.val[0][0]
    run = Run(model, build_optimizer(train_args), vocab, data, train_args, out, _record(pairs), LoopState(),
              sample=translation_sample(pairs.val[0], vocab))
    return _ready(run, "new run")


def _record(pairs: Pairs) -> dict[str, Any]:
    return {"preset": "translate", "data": pairs.spec, "data_sha256": pairs.sha256, "data_format": "pairs"}


def _prepare_resume(options: TranslateOptions, model_given: dict, train_given: dict) -> tuple[Run, RunStarted]:
    if not options.out:
        raise MlxgptError("--resume needs the run directory: pass --out RUN_DIR")
    if options.overwrite:
        raise MlxgptError("--resume continues a run and --overwrite replaces it: pass one of them")
    if model_given:
        raise MlxgptError(f"cannot change the model's shape when resuming ({', '.join(model_given)}): drop those flags")
    out = Path(options.out)
    check_writable(out)
    checkpoint_dir = find_checkpoint(out, "latest")
    if checkpoint_dir is None:
        raise MlxgptError(f"nothing to resume in {out}: it has no latest/ checkpoint (train without --resume first)")
    config = read_config(checkpoint_dir, "encoder-decoder")
    if options.pairs and options.pairs != config["data"]:
        raise MlxgptError(f"{out} was trained on --pairs {config['data']}: resume with those, or start a new run")
    pairs = load_pairs(config["data"])
    if pairs.sha256 != config.get("data_sha256"):
        raise MlxgptError(f"the pairs of {config['data']} are not the ones {out} was trained on (their SHA-256 "
                          "differs; for numbers: another num2words version): start a new run")
    vocab = load_checkpoint_tokenizer(checkpoint_dir, config)
    train_args = TrainArgs.from_dict({**config["train"], **train_given})
    train_args.validate()
    model = load_model(checkpoint_dir, config)
    model.train()
    state, optimizer = resumed_state(model, train_args, checkpoint_dir, SINGLE)
    data = PairsDataset.from_pairs(pairs.train, pairs.val, vocab, model.args.block_size)
    run = Run(model, optimizer, vocab, data, train_args, out, _record(pairs), LoopState.from_dict(state),
              sample=translation_sample(pairs.val[0], vocab))
    return _ready(run, "resumed")


def _ready(run: Run, note: str) -> tuple[Run, RunStarted]:
    """Device settings (the plain compiled step: mlxgpt/fast's CPU streams split the GPT's (B, T)
    batches), the resume command, and the RunStarted event the renderers show."""
    settings = configure_device(1)
    run.resume_command = f"python -m mlxgpt translate train --resume --out {shlex.quote(str(run.out_dir))}"
    args, train_args = run.model.args, run.args
    n_params = run.model.num_params()
    shape = {**dataclasses.asdict(args), "n_layer": args.n_encoder_layers + args.n_decoder_layers}
    started = RunStarted(out_dir=str(run.out_dir), preset="translate",
                         preset_note=f"{note}; encoder-decoder, {args.n_encoder_layers} encoder + "
                                     f"{args.n_decoder_layers} decoder layers; pairs {run.config_extra['data']}",
                         device=device_name(), blas="" if on_gpu() else setup_blas().describe(),
                         parallelism=settings.describe(), model_args=shape,
                         train_args=dataclasses.asdict(train_args), tokenizer=run.tokenizer.kind,
                         vocab_size=run.tokenizer.vocab_size, n_params=n_params, n_params_total=n_params,
                         train_tokens=run.data.target_tokens("train"), val_tokens=run.data.target_tokens("val"),
                         start_iter=run.state.iter, tokens_per_iter=train_args.batch_size * args.block_size,
                         flops_per_token=flops_per_token(args.to_model_args(), n_params),
                         compiling_kernels=first_compile())
    return run, started


def train_translation(options: TranslateOptions, renderer: EventHandler) -> RunFinished:
    run, started = prepare(options)
    finished = record_and_train(run, started, renderer, resume=options.resume, overwrite=options.overwrite)
    if finished.reason in ("completed", "time budget", "early stop"):
        model, vocab = load_translator(run.out_dir)
        print(held_out_scores(model, vocab, load_pairs(run.config_extra["data"]).val)[1])
    return finished


# ---------------------------------------------------------------- translate, score


def load_translator(path: str | Path | None) -> tuple[EncoderDecoder, PairVocabulary]:
    directory = resolve_checkpoint(path or latest_run())
    config = read_config(directory, "encoder-decoder")
    model = load_model(directory, config)
    model.eval()
    return model, load_checkpoint_tokenizer(directory, config)


def translate(model: EncoderDecoder, vocab: PairVocabulary, sources: list[str], beam: int = 1,
              batch_size: int = 256) -> list[str]:
    """Each source's translation: greedy (beam 1) in batches, or beam search one source at a time."""
    block = model.args.block_size
    for source in sources:
        ids = vocab.encode(source)  # unknown characters: one line naming them
        if len(ids) > block:
            raise MlxgptError(f"the source {source[:40]!r} has {len(ids)} characters, more than the model's "
                              f"block_size ({block}): shorten it")
    if beam > 1:
        return [vocab.decode(beam_search(model, vocab.encode(s), vocab.bos_id, vocab.eos_id, block, beam))
                for s in sources]
    out: list[str] = []
    for start in range(0, len(sources), batch_size):
        chunk = [(s, "") for s in sources[start:start + batch_size]]
        src = mx.array(make_batch(chunk, vocab, block)[0])
        out += [vocab.decode(ids) for ids in greedy_batch(model, src, vocab.bos_id, vocab.eos_id, block)]
    return out


def held_out_scores(model: EncoderDecoder, vocab: PairVocabulary, pairs: list[Pair], beam: int = 1,
                    limit: int | None = None) -> tuple[dict[str, Any], str]:
    """Exact match and character error rate on the held-out pairs: (the numbers, a report that
    shows them with a few translations, the wrong ones first)."""
    pairs = pairs[:limit] if limit else pairs
    predicted = translate(model, vocab, [s for s, _ in pairs], beam)
    references = [t for _, t in pairs]
    numbers = {"pairs": len(pairs), "decoding": "greedy" if beam == 1 else f"beam {beam}",
               "exact_match": exact_match(predicted, references),
               "character_error_rate": character_error_rate(predicted, references)}
    lines = [f"held-out ({len(pairs):,} pairs, {numbers['decoding']}): exact match {numbers['exact_match']:.1%}, "
             f"character error rate {numbers['character_error_rate']:.2%}"]
    wrong = [i for i, (p, r) in enumerate(zip(predicted, references)) if p != r]
    for i in sorted(set(wrong[:3]) | set(range(min(3, len(pairs))))):
        miss = "" if predicted[i] == references[i] else f"   ✗ reference: {references[i]}"
        lines.append(f"  {pairs[i][0]} → {predicted[i]}{miss}")
    return numbers, "\n".join(lines)
