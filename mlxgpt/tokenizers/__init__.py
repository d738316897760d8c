"""Tokenizers: text <-> token ids. Plain Python, no mlx.

Every kind implements `Tokenizer` (base.py); `TOKENIZERS` maps the names used by
`--tokenizer` and config.json to classes.
"""

from __future__ import annotations

from pathlib import Path

from mlxgpt.errors import MlxgptError
from mlxgpt.tokenizers.base import IncrementalDecoder, Tokenizer, UnknownCharactersError, visible
from mlxgpt.tokenizers.char import CharTokenizer
from mlxgpt.tokenizers.sentencepiece import SentencePieceTokenizer

TOKENIZERS: dict[str, type[Tokenizer]] = {"char": CharTokenizer, "sentencepiece": SentencePieceTokenizer}

__all__ = ["TOKENIZERS", "CharTokenizer", "IncrementalDecoder", "SentencePieceTokenizer", "Tokenizer",
           "UnknownCharactersError", "load_tokenizer", "visible"]


def load_tokenizer(kind: str, directory: Path) -> Tokenizer:
    if kind not in TOKENIZERS:
        raise MlxgptError(f"checkpoint uses tokenizer {kind!r}, which this mlxgpt does not know: upgrade mlxgpt")
    return TOKENIZERS[kind].load(Path(directory))
