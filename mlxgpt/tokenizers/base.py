"""What every tokenizer offers, so training, checkpoints and generation never
branch on the kind. Imports no mlx: tokenizers are plain Python.
"""

from __future__ import annotations

import codecs
from abc import ABC, abstractmethod
from pathlib import Path
from typing import ClassVar

from mlxgpt.errors import MlxgptError


class UnknownCharactersError(MlxgptError):
    """Text contains characters the tokenizer has no id for."""


class IncrementalDecoder:
    """Turns a stream of token ids into a stream of text pieces, in O(1) per token.

    Streaming is not just decode([id]) per token: a SentencePiece byte-fallback
    character may span several tokens (e.g. "é" = <0xC3> <0xA9>), so the decoder
    feeds each token's bytes to an incremental UTF-8 decoder, which holds back an
    incomplete character until its last byte arrives. The concatenated pieces
    (add() for each id, then flush()) always equal decode(ids), because every
    tokenizer's decode is defined by the same bytes (see Tokenizer.token_bytes).
    """

    def __init__(self, tokenizer: "Tokenizer") -> None:
        self.tokenizer = tokenizer
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def add(self, token_id: int) -> str:
        """Add one token; return the newly completed text (maybe "")."""
        return self._utf8.decode(self.tokenizer.token_bytes(token_id))

    def flush(self) -> str:
        """Return whatever is still held back (at the end of generation): an
        incomplete character can no longer be completed, so it becomes U+FFFD."""
        return self._utf8.decode(b"", final=True)


class Tokenizer(ABC):
    """encode/decode between text and ids, plus what checkpoints and streaming need.

    The contract that makes streaming exact: for any ids,
        decode(ids) == b"".join(token_bytes(i) for i in ids).decode("utf-8", "replace")
    and for any text, decode(encode(text)) == text.
    """

    kind: ClassVar[str]

    @classmethod
    @abstractmethod
    def train(cls, text: str, **options) -> "Tokenizer":
        """Learn a tokenizer from (the training split of) a text; options come from the CLI."""

    @property
    @abstractmethod
    def vocab_size(self) -> int: ...

    @abstractmethod
    def encode(self, text: str) -> list[int]: ...

    @abstractmethod
    def decode(self, ids: list[int]) -> str: ...

    @abstractmethod
    def save(self, directory: Path) -> list[str]:
        """Write this tokenizer's files into directory; return their names."""

    @classmethod
    @abstractmethod
    def load(cls, directory: Path) -> "Tokenizer": ...

    @property
    def end_id(self) -> int | None:
        """The end-of-example token of the lines format: the newline, which both tokenizers
        keep as a token of its own (None if this vocabulary has no newline)."""
        try:
            ids = self.encode("\n")
        except UnknownCharactersError:
            return None
        return ids[0] if len(ids) == 1 else None

    def token_bytes(self, token_id: int) -> bytes:
        """The UTF-8 bytes one token stands for (may be part of a character).
        This default suits tokenizers whose tokens are whole characters."""
        return self.decode([token_id]).encode("utf-8")

    def decoder(self) -> IncrementalDecoder:
        return IncrementalDecoder(self)

    def token_label(self, token_id: int) -> str:
        """A visible label for one token (whitespace shown as symbols), for UIs."""
        return visible(self.decode([token_id]))


_VISIBLE = {"\n": "⏎", " ": "␣", "\t": "⇥", "\r": "␍"}


def visible(text: str) -> str:
    """Make whitespace and control characters visible: 'a b\\n' -> 'a␣b⏎'."""
    if text == "":
        return "∅"
    return "".join(_VISIBLE.get(c, c if c.isprintable() else f"\\x{ord(c):02x}") for c in text)
