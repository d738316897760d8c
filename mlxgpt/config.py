"""Configuration as plain dataclasses: the model's shape and the training recipe.

Presets are just dictionaries of TrainArgs/ModelArgs fields; every value can be
overridden from the command line (see cli.py), and the resolved values are
saved in each checkpoint's config.json.

What a checkpoint says about itself is checked, not trusted: `MetadataFile` reads
the JSON files mlxgpt writes (config.json, state.json, char_vocab.json) strictly
and checks them against a schema of field types (for ModelArgs and TrainArgs, the
dataclasses' own annotations), so that a damaged or forged file gives one line
naming the file and the field instead of a traceback or a silently wrong model.
"""

from __future__ import annotations

import dataclasses
import json
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

from mlxgpt.errors import MlxgptError

# Upper bounds on a model's shape: far above anything mlxgpt trains, low enough that a
# forged config.json cannot make it allocate terabytes (MAX_PARAMS bounds the total).
MODEL_LIMITS: dict[str, tuple[int, int]] = {
    "vocab_size": (1, 2**20), "block_size": (1, 2**16), "n_layer": (1, 256), "n_head": (1, 2**15), "n_embd": (1, 2**15),
}
MAX_PARAMS = 2**31  # 8 GiB of float32 weights (GPT-2 XL has 1.6e9 parameters)
MAX_JSON_BYTES = 64 * 2**20  # no metadata file mlxgpt writes comes near this


def range_problem(value: float, low: float | None, high: float | None) -> str | None:
    """'must be at least LOW' / 'must be at most HIGH', or None if value is within [low, high]."""
    if low is not None and value < low:
        return f"must be at least {low}"
    if high is not None and value > high:
        return f"must be at most {high}"
    return None


# The string-valued architecture switches and their choices (the first is the default).
SWITCH_CHOICES: dict[str, tuple[str, ...]] = {
    "pos_embedding": ("learned", "sinusoidal", "rope"), "norm": ("layernorm", "rmsnorm"),
    "mlp": ("gelu", "relu", "relu2", "swiglu"),
}
# Each ModelArgs switch and the train.py flag that sets it away from its default.
SWITCH_FLAGS: dict[str, str] = {
    "pos_embedding": "--pos-embedding", "tie_embeddings": "--untie-head", "norm": "--norm", "qk_norm": "--qk-norm",
    "mlp": "--mlp", "logit_softcap": "--logit-softcap", "zero_init_proj": "--zero-init-proj",
    "causal": "--no-causal-mask", "post_ln": "--post-ln", "attn_scale": "--no-attn-scale",
}


@dataclass
class ModelArgs:
    """The shape of a GPT. Defaults are nanoGPT's shakespeare-char model."""

    vocab_size: int = 65
    block_size: int = 256  # the longest context the model ever sees
    n_layer: int = 6
    n_head: int = 6
    n_embd: int = 384
    dropout: float = 0.0
    bias: bool = False  # biases in Linear and LayerNorm (nanoGPT's train.py: False)
    pos_embedding: str = "learned"  # "learned" | "sinusoidal" | "rope" (rotary, inside attention)
    tie_embeddings: bool = True  # unembedding = embedding matrix transposed
    # Architecture switches (model.py says what each does and where it comes from). The defaults
    # are nanoGPT's GPT-2; checkpoints written before a switch existed lack it and get its default.
    norm: str = "layernorm"  # "layernorm" | "rmsnorm"
    qk_norm: bool = False  # RMS-normalise queries and keys per head before their dot product
    mlp: str = "gelu"  # the MLP's nonlinearity: "gelu" | "relu" | "relu2" | "swiglu"
    logit_softcap: float = 0.0  # > 0: logits = cap * tanh(logits / cap); 0: off
    zero_init_proj: bool = False  # residual projections (c_proj) start at zero
    causal: bool = True  # False: every position also sees later ones (to show why the mask matters)
    post_ln: bool = False  # True: the original paper's x = LayerNorm(x + sublayer(x)), no final norm
    attn_scale: bool = True  # False: scores q·k without the 1/sqrt(head size)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        for name, (low, high) in MODEL_LIMITS.items():  # first: the checks below divide by n_head
            problem = range_problem(getattr(self, name), low, high)
            if problem:
                raise MlxgptError(f"{name} {problem}, got {getattr(self, name)}")
        if self.n_embd % self.n_head != 0:
            raise MlxgptError(
                f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head}): "
                f"pick e.g. --n-embd {self.n_head * max(1, round(self.n_embd / self.n_head))}")
        for name, choices in SWITCH_CHOICES.items():
            if getattr(self, name) not in choices:
                raise MlxgptError(f"unknown --{name.replace('_', '-')} {getattr(self, name)!r}: use {' or '.join(choices)}")
        if self.pos_embedding == "sinusoidal" and self.n_embd % 2:
            raise MlxgptError("sinusoidal positions need an even --n-embd")
        if self.pos_embedding == "rope" and self.head_dim % 2:
            raise MlxgptError(f"rotary positions rotate pairs of channels: the head size (n_embd / n_head = "
                              f"{self.head_dim}) must be even")
        if not (self.logit_softcap == 0 or 0 < self.logit_softcap < math.inf):
            raise MlxgptError(f"--logit-softcap must be a positive number (or 0: off), got {self.logit_softcap}")
        if not 0.0 <= self.dropout < 1.0:
            raise MlxgptError(f"--dropout must be in [0, 1), got {self.dropout}")
        if self.parameter_count() > MAX_PARAMS:
            raise MlxgptError(f"n_layer {self.n_layer}, n_embd {self.n_embd}, vocab_size {self.vocab_size} and "
                              f"block_size {self.block_size} make {self.parameter_count():,} parameters, more than "
                              f"mlxgpt's limit of {MAX_PARAMS:,}")

    def parameter_count(self) -> int:
        """The number of weights GPT(self) has, from the shape alone: a shape is
        refused before anything is allocated (GPT.num_params counts the built arrays)."""
        C, V, H = self.n_embd, self.vocab_size, self.mlp_hidden
        norm = (2 if self.bias and self.norm == "layernorm" else 1) * C  # a gain (+ a bias)
        mlp_matrices = 3 if self.mlp == "swiglu" else 2  # swiglu: a gate beside the up projection
        per_layer = (4 * C * C + mlp_matrices * C * H + 2 * norm + (2 * self.head_dim if self.qk_norm else 0)
                     + ((4 * C + (mlp_matrices - 1) * H + C) if self.bias else 0))  # attention, MLP, norms, biases
        return (V * C + (self.block_size * C if self.pos_embedding == "learned" else 0) + self.n_layer * per_layer
                + (0 if self.post_ln else norm) + (0 if self.tie_embeddings else V * C))

    @property
    def mlp_hidden(self) -> int:
        """Width of the MLP's hidden layer: 4 * n_embd, or for SwiGLU 8/3 * n_embd (rounded up to
        a multiple of 8), so that its three matrices hold as many weights as the others' two."""
        if self.mlp == "swiglu":
            return 8 * math.ceil(8 * self.n_embd / 3 / 8)
        return 4 * self.n_embd

    def switches(self) -> list[str]:
        """The architecture switches set away from nanoGPT's defaults, as the flags that set them."""
        return switch_flags(vars(self))

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "ModelArgs":
        """Build from a dict, ignoring unknown keys (like mlx-lm's ModelArgs)."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in names})

    @classmethod
    def from_saved(cls, values: Any, file: "MetadataFile") -> "ModelArgs":
        """The `model` section of a checkpoint's config.json: every field present, of
        exactly its annotated type, and a shape within MODEL_LIMITS and MAX_PARAMS."""
        schema = field_types(cls)
        # checkpoints from before the architecture switches lack them: those models had the defaults
        required = [name for name in schema if name not in SWITCH_FLAGS or name in ("pos_embedding", "tie_embeddings")]
        checked = file.check(values, schema, section="model", required=required)
        try:
            return cls(**checked)
        except MlxgptError as exc:
            raise file.error(f"model: {exc}") from None


@dataclass
class TrainArgs:
    """How to train: optimisation, schedule, evaluation and bookkeeping."""

    batch_size: int = 12
    grad_accum: int = 1  # micro-batches per optimizer step
    max_iters: int = 2000
    lr: float = 1e-3
    min_lr: float = 1e-4
    warmup_iters: int = 100
    lr_decay_iters: int | None = None  # None: same as max_iters
    beta1: float = 0.9
    beta2: float = 0.99
    weight_decay: float = 0.1
    grad_clip: float = 1.0  # 0 disables clipping
    eval_interval: int = 250
    eval_iters: int = 20
    log_interval: int = 10
    seed: int = 1337
    time_budget: float | None = None  # seconds of training before stopping early
    sample_prompt: str = "\n"
    sample_tokens: int = 200
    early_stop_evals: int | None = None  # stop once val loss has not improved for this many evaluations
    freeze_layers: int = 0  # fine-tuning: keep the embeddings and the first N blocks as they are
    dtype: str = "auto"  # precision of forward and backward: auto, float32, bfloat16, float16 (weights stay float32)
    optimizer: str = "adamw"  # adamw, or muon: the blocks' matrices on Muon, the rest on AdamW
    muon_lr: float = 0.02  # Muon's peak learning rate (its schedule has lr's shape)

    def validate(self) -> None:
        for name, value in vars(self).items():  # a NaN passes every comparison below, so check first
            if isinstance(value, float) and not math.isfinite(value):
                raise MlxgptError(f"--{name.replace('_', '-')} must be a finite number, got {value}")
        positive = ("batch_size", "grad_accum", "max_iters", "eval_interval", "eval_iters", "log_interval")
        for name in positive:
            if getattr(self, name) < 1:
                raise MlxgptError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if self.lr <= 0 or self.min_lr < 0 or self.min_lr > self.lr:
            raise MlxgptError(f"need 0 <= --min-lr <= --lr and --lr > 0 (got lr={self.lr}, min_lr={self.min_lr})")
        if self.warmup_iters < 0:
            raise MlxgptError("--warmup-iters must be >= 0")
        if not (0 <= self.beta1 < 1 and 0 <= self.beta2 < 1):
            raise MlxgptError(f"AdamW betas must be in [0, 1), got beta1={self.beta1}, --beta2 {self.beta2}")
        if self.weight_decay < 0 or self.grad_clip < 0:
            raise MlxgptError("--weight-decay and --grad-clip must be >= 0 (--grad-clip 0 turns clipping off)")
        if self.time_budget is not None and self.time_budget <= 0:
            raise MlxgptError(f"--time-budget must be a positive number of seconds, got {self.time_budget}")
        if self.early_stop_evals is not None and self.early_stop_evals < 1:
            raise MlxgptError(f"--early-stop-evals must be at least 1, got {self.early_stop_evals}")
        if self.freeze_layers < 0:
            raise MlxgptError(f"--freeze-layers must be 0 or more, got {self.freeze_layers}")
        if self.optimizer not in ("adamw", "muon"):
            raise MlxgptError(f"--optimizer must be adamw or muon, got {self.optimizer!r}")
        if self.muon_lr <= 0:
            raise MlxgptError(f"--muon-lr must be a positive number, got {self.muon_lr}")
        if self.dtype not in ("auto", "float32", "bfloat16", "float16"):
            raise MlxgptError(f"--dtype must be auto, float32, bfloat16 or float16, got {self.dtype!r}")
        if self.sample_tokens < 0:
            raise MlxgptError(f"--sample-tokens must be >= 0, got {self.sample_tokens}")
        check_seed(self.seed)

    @property
    def decay_iters(self) -> int:
        return self.lr_decay_iters if self.lr_decay_iters is not None else self.max_iters

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "TrainArgs":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in names})

    @classmethod
    def from_saved(cls, values: Any, file: "MetadataFile") -> dict[str, Any]:
        """The `train` section of a checkpoint's config.json, checked: the fields it has
        (missing ones take their defaults when used), of their annotated types, valid together."""
        checked = file.check(values, field_types(cls), section="train")
        try:
            cls(**checked).validate()
        except MlxgptError as exc:
            raise file.error(f"train: {exc}") from None
        return checked


def switch_flags(model_values: Mapping[str, Any]) -> list[str]:
    """The flags that set a model's architecture switches away from their defaults, from its
    config values (a saved config, an event's model_args): e.g. ["--pos-embedding rope", "--qk-norm"]."""
    flags = []
    for f in dataclasses.fields(ModelArgs):
        value = model_values.get(f.name, f.default)
        if f.name not in SWITCH_FLAGS or value == f.default:
            continue
        flag = SWITCH_FLAGS[f.name]
        flags.append(flag if isinstance(value, bool) else f"{flag} {value:g}" if isinstance(value, float)
                     else f"{flag} {value}")
    return flags


def field_types(cls: type) -> dict[str, Any]:
    """A dataclass's fields and their annotated types (int, float | None, ...): the schema of its JSON form."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


# Fine-tuning a trained model (train.py --init-from): GPT-1's recipe of a small learning rate,
# a short warmup and few steps, here with early stopping on the val loss. Flags override these.
FINETUNE_DEFAULTS: dict[str, Any] = dict(lr=1e-4, min_lr=1e-5, warmup_iters=20, max_iters=500, lr_decay_iters=500,
                                         eval_interval=50, early_stop_evals=4,
                                         optimizer="adamw")  # small steps: not Muon's (its lr is its own)

MODEL_FIELDS = {f.name for f in dataclasses.fields(ModelArgs)}
TRAIN_FIELDS = {f.name for f in dataclasses.fields(TrainArgs)}


def check_seed(seed: int | None) -> None:
    """MLX's RNG takes seeds in [0, 2**64)."""
    if seed is not None and not 0 <= seed < 2**64:
        raise MlxgptError(f"--seed must be between 0 and 2**64 - 1, got {seed}")


# ---------------------------------------------------------------- metadata files

_TYPE_NAMES = {bool: "true or false", int: "an integer", float: "a finite number", str: "a string",
               list: "a list", dict: "an object", type(None): "null"}


def _type_name(tp: Any) -> str:
    """'an integer', 'a finite number or null', 'a list of strings', ..."""
    if typing.get_origin(tp) is list:
        return f"a list of {_type_name(typing.get_args(tp)[0]).split(' ', 1)[1]}s"
    if typing.get_args(tp):  # a union such as `float | None`
        return " or ".join(_type_name(t) for t in typing.get_args(tp))
    return _TYPE_NAMES[tp]


def _typed(value: Any, tp: Any) -> tuple[bool, Any]:
    """(whether value is of type tp, the value as that type). Exact: bool is not int
    and int is not bool; a float must be finite (an integer is accepted as a float)."""
    if typing.get_origin(tp) is list:  # list[X]: a list whose every item is an X
        if not isinstance(value, list):
            return False, value
        items = [_typed(item, typing.get_args(tp)[0]) for item in value]
        return all(ok for ok, _ in items), [typed for _, typed in items]
    if typing.get_args(tp):  # a union such as `float | None`: the first member that fits
        for member in typing.get_args(tp):
            ok, typed = _typed(value, member)
            if ok:
                return True, typed
        return False, value
    if tp is float:
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) <= 2**53:
            return True, float(value)
        return isinstance(value, float) and math.isfinite(value), value
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    return isinstance(value, tp), value


def _shown(value: Any) -> str:
    """A JSON value as it appears in the file, shortened for a one-line message."""
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 40 else text[:37] + "..."


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [key for key, _ in pairs]
    if len(set(keys)) != len(keys):
        raise ValueError(f"key {next(k for k in keys if keys.count(k) > 1)!r} appears twice")
    return dict(pairs)


def parse_json(text: str | bytes) -> Any:
    """Strict JSON: no NaN or Infinity (Python's json accepts them; the JSON standard does not,
    and a NaN loss would poison every comparison) and no repeated keys (which would be ambiguous)."""
    return json.loads(text, parse_constant=_reject_constant, object_pairs_hook=_unique_keys)


@dataclass(frozen=True)
class MetadataFile:
    """A JSON file that mlxgpt wrote and now reads back, checked rather than trusted.

    Every problem is one MlxgptError line that names the file and the field and
    says what to do (`fix`)."""

    path: Path
    fix: str  # what the user can do, e.g. "retrain, or restore it from a backup"
    label: str = ""  # how messages introduce the file, e.g. "tokenizer file"
    unreadable: str = "is corrupt"  # how messages describe a file that is not JSON at all

    @property
    def name(self) -> str:
        return f"{self.label} {self.path}" if self.label else str(self.path)

    def error(self, problem: str) -> MlxgptError:
        return MlxgptError(f"{self.name} is corrupt: {problem}; {self.fix}")

    def read(self) -> Any:
        """The file's strictly parsed JSON."""
        try:
            if self.path.is_dir():
                raise self.error("it is a directory, not a file")
            if self.path.stat().st_size > MAX_JSON_BYTES:
                raise self.error(f"it has {self.path.stat().st_size:,} bytes, more than mlxgpt ever writes there")
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise MlxgptError(f"{self.name} is missing: the checkpoint is incomplete; {self.fix}") from None
        except OSError as exc:
            raise MlxgptError(f"{self.name} cannot be read ({exc.strerror}): check its permissions") from None
        except UnicodeDecodeError:
            raise MlxgptError(f"{self.name} {self.unreadable} (it is not UTF-8 text); {self.fix}") from None
        try:
            return parse_json(text)
        except (ValueError, RecursionError) as exc:  # JSONDecodeError is a ValueError; so are NaN and huge ints
            reason = str(exc).splitlines()[0] if str(exc) else "nested too deeply"
            raise MlxgptError(f"{self.name} {self.unreadable} (not valid JSON: {reason}); {self.fix}") from None

    def check(self, values: Any, schema: Mapping[str, Any], *, section: str = "", required: Iterable[str] = (),
              limits: Mapping[str, tuple[float | None, float | None]] | None = None) -> dict[str, Any]:
        """The fields of `values` (a JSON object) that `schema` names, each checked to be of exactly
        its type (see _typed) and within `limits` (low, high); the `required` ones must be present.
        Other keys are left out: what is not in the schema is never used."""
        prefix = f"{section}." if section else ""
        if not isinstance(values, dict):
            raise self.error(f"{section or 'the file'} must be an object, got {_shown(values)}")
        missing = [key for key in required if key not in values]
        if missing:
            raise self.error(f"{prefix}{missing[0]} is missing")
        checked = {}
        for key, tp in schema.items():
            if key not in values:
                continue
            ok, value = _typed(values[key], tp)
            if not ok:
                raise self.error(f"{prefix}{key} must be {_type_name(tp)}, got {_shown(values[key])}")
            low, high = (limits or {}).get(key, (None, None))
            problem = range_problem(value, low, high) if value is not None else None
            if problem:
                raise self.error(f"{prefix}{key} {problem}, got {_shown(value)}")
            checked[key] = value
        return checked


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    model: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)

    def with_overrides(self, overrides: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """(model values, train values): the preset's, with the flags given on top."""
        model_values = {**self.model, **{k: v for k, v in overrides.items() if k in MODEL_FIELDS}}
        train_values = {**self.train, **{k: v for k, v in overrides.items() if k in TRAIN_FIELDS}}
        if "max_iters" in overrides and "lr_decay_iters" not in overrides:
            train_values["lr_decay_iters"] = overrides["max_iters"]  # decay over the run you asked for
        return model_values, train_values


PRESETS: dict[str, Preset] = {
    "baby": Preset(
        "baby",
        "nanoGPT's CPU setting: 4 layers, 4 heads, 128 embd, block 64, batch 12, 2000 iters",
        model=dict(n_layer=4, n_head=4, n_embd=128, block_size=64, dropout=0.0),
        train=dict(batch_size=12, max_iters=2000, lr=1e-3, min_lr=1e-4, lr_decay_iters=2000,
                   warmup_iters=100, beta2=0.99, weight_decay=0.1, grad_clip=1.0,
                   eval_interval=250, eval_iters=20, log_interval=10),
    ),
    "shakespeare-char": Preset(
        "shakespeare-char",
        "nanoGPT's train_shakespeare_char.py: 6 layers, 6 heads, 384 embd, block 256, batch 64, 5000 iters",
        model=dict(n_layer=6, n_head=6, n_embd=384, block_size=256, dropout=0.2),
        train=dict(batch_size=64, max_iters=5000, lr=1e-3, min_lr=1e-4, lr_decay_iters=5000,
                   warmup_iters=100, beta2=0.99, weight_decay=0.1, grad_clip=1.0,
                   eval_interval=250, eval_iters=200, log_interval=10),
    ),
    "cpu-speedrun": Preset(
        "cpu-speedrun",
        "the best model in two minutes on 2 CPU cores (the CPU default): 4 layers, 4 heads, 96 embd, "
        "block 64, batch 24, rotary positions, RMSNorm, Muon (lr 0.02) + AdamW (lr 6e-3), 120 s by the clock",
        # Found by timed runs on a 2-core x86 VM (docs/benchmarks.md, "CPU speed-run"): in a
        # fixed time a narrower model (96 vs 128) sees ~50% more tokens, and a 6x higher
        # learning rate than baby's with a short warm-up is still stable at this size. The
        # switches are the ones that helped in the 120-s ablation (docs/how-it-works.md, "Since
        # GPT-2"; experiments/ablate.py): Muon on the blocks' matrices (-0.13 nats), rotary
        # positions (-0.05), RMSNorm (-0.015); the others were within noise or hurt. The run
        # trains for the whole --time-budget: the schedule follows the clock
        # (training.clock_learning_rate) and ends at min_lr as the budget does, on any machine;
        # max_iters only caps a machine fast enough to take more steps than that in 120 s.
        model=dict(n_layer=4, n_head=4, n_embd=96, block_size=64, dropout=0.0, pos_embedding="rope",
                   norm="rmsnorm"),
        train=dict(batch_size=24, max_iters=5000, lr=6e-3, min_lr=1e-4, lr_decay_iters=5000,
                   warmup_iters=50, beta2=0.99, weight_decay=0.1, grad_clip=1.0,
                   eval_interval=1000, eval_iters=20, log_interval=10, time_budget=120.0,
                   optimizer="muon", muon_lr=0.02),
    ),
}


def default_preset_name(gpu: bool) -> str:
    """shakespeare-char is hours on a CPU; cpu-speedrun is two minutes, and beats baby's
    (nanoGPT's CPU config) val loss in less time (docs/benchmarks.md, "The first two minutes")."""
    return "shakespeare-char" if gpu else "cpu-speedrun"
