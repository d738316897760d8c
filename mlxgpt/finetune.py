"""Fine-tuning a trained model on new text: `train.py --init-from RUN --data new.txt`.

GPT-1's recipe (Radford et al., 2018): pre-train on lots of unlabelled text, then
continue from those weights on the task's text, with a fresh optimizer, a small
learning rate and few steps (config.FINETUNE_DEFAULTS), stopping once the
validation loss stops improving. The model keeps its shape and its tokenizer: a
token id means the same thing before and after. A char model may learn new
characters only when asked (`--extend-vocab`): their embedding rows start as a new
model's do, N(0, 0.02). `--freeze-layers N` keeps the embeddings and the first N
blocks as they are and trains the rest.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlx.core as mx

from mlxgpt.checkpoint import load_checkpoint_tokenizer, load_model, read_config, resolve_checkpoint
from mlxgpt.config import ModelArgs
from mlxgpt.errors import MlxgptError
from mlxgpt.model import GPT
from mlxgpt.tokenizers import CharTokenizer, Tokenizer, UnknownCharactersError

EMBEDDING_STD = 0.02  # GPT._init_weights's


@dataclass
class Parent:
    """The trained model a fine-tuning run starts from."""

    checkpoint: Path
    config: dict[str, Any]
    model: GPT
    tokenizer: Tokenizer

    @classmethod
    def load(cls, path: str) -> "Parent":
        checkpoint = resolve_checkpoint(path)  # one line if `path` is not a run or a checkpoint
        config = read_config(checkpoint)
        return cls(checkpoint, config, load_model(checkpoint, config), load_checkpoint_tokenizer(checkpoint, config))

    def record(self) -> dict[str, Any]:
        """What the new run's config.json says about where it started."""
        return {"checkpoint": str(self.checkpoint.resolve()), "data": self.config.get("data"),
                "data_sha256": self.config.get("data_sha256"), "preset": self.config.get("preset")}


def fit_tokenizer(parent: Parent, text: str, extend: bool) -> Tokenizer:
    """The parent's tokenizer, checked against the new text; with `extend`, a char tokenizer
    grows by the text's new characters (appended, so every old id keeps its meaning)."""
    tokenizer = parent.tokenizer
    try:
        tokenizer.encode(text)
        return tokenizer
    except UnknownCharactersError as exc:
        if not extend or not isinstance(tokenizer, CharTokenizer):
            hint = ("add --extend-vocab to give the model new embedding rows for them"
                    if isinstance(tokenizer, CharTokenizer) else
                    "a SentencePiece vocabulary cannot grow: remove them, or start a new run")
            raise MlxgptError(f"the new text does not fit {parent.checkpoint}'s tokenizer: {exc}; or {hint}") from None
    new = sorted(set(text) - set(tokenizer.chars))
    return CharTokenizer(tokenizer.chars + new)


def fit_model(parent: Parent, vocab_size: int, dropout: float | None) -> GPT:
    """The parent's weights in a model with `vocab_size` rows (new rows drawn as at init) and,
    if given, another dropout (the only part of the shape a fine-tuning run may change)."""
    old = parent.model.args
    if vocab_size == old.vocab_size and dropout in (None, old.dropout):
        parent.model.train()
        return parent.model
    args = ModelArgs.from_dict({**vars(old), "vocab_size": vocab_size,
                                "dropout": old.dropout if dropout is None else dropout})
    model = GPT(args)
    weights = dict(parent.model.parameters())
    extra = vocab_size - old.vocab_size
    weights["wte"] = {"weight": _grow_rows(parent.model.wte.weight, extra)}
    if not old.tie_embeddings:
        weights["lm_head"] = {"weight": _grow_rows(parent.model.lm_head.weight, extra)}
    model.update(weights)
    model.train()
    return model


def _grow_rows(matrix: mx.array, extra: int) -> mx.array:
    if extra == 0:
        return matrix
    new = mx.random.normal((extra, matrix.shape[1]), scale=EMBEDDING_STD, dtype=matrix.dtype)
    return mx.concatenate([matrix, new], axis=0)


def freeze_layers(model: GPT, layers: int) -> None:
    """Train only what comes after the first `layers` blocks: the token and position
    embeddings and those blocks keep their weights (their gradients are never computed)."""
    if layers == 0:
        return
    if layers > len(model.h):
        raise MlxgptError(f"--freeze-layers {layers} is more than the model's {len(model.h)} blocks")
    model.wte.freeze()  # tied: the unembedding is this same matrix, so it stays too
    if "wpe" in model:
        model.wpe.freeze()
    for block in model.h[:layers]:
        block.freeze()
