"""What every tokenizer offers, so training, checkpoints and generation never
branch on the kind. Imports no mlx: tokenizers are plain Python.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import ClassVar

from mlxgpt.errors import MlxgptError


class UnknownCharactersError(MlxgptError):
    """Text contains characters the tokenizer has no id for."""


class IncrementalDecoder:
    """Turns a stream of token ids into a stream of text pieces.

    Streaming is not just decode([id]) per token: a SentencePiece byte-fallback
    character may span several tokens, so a decoder may hold bytes back until
    they form whole characters. The concatenated pieces always equal decode(ids).
    """

    def __init__(self, tokenizer: "Tokenizer") -> None:
        self.tokenizer = tokenizer
        self.ids: list[int] = []
        self.emitted = ""  # text already returned

    def add(self, token_id: int) -> str:
        """Add one token; return the newly completed text (maybe "")."""
        self.ids.append(token_id)
        text = self.tokenizer.decode(self.ids)
        if text.endswith("\ufffd"):  # an incomplete UTF-8 sequence: wait for more bytes
            return ""
        piece = text[len(self.emitted):] if text.startswith(self.emitted) else text
        self.emitted = text
        return piece

    def flush(self) -> str:
        """Return whatever is still held back (at the end of generation)."""
        text = self.tokenizer.decode(self.ids)
        piece = text[len(self.emitted):] if text.startswith(self.emitted) else ""
        self.emitted = text
        return piece


class Tokenizer(ABC):
    kind: ClassVar[str]

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
