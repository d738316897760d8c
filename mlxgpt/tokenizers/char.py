"""One token per character, as in Karpathy's lecture and nanoGPT's shakespeare_char."""

from __future__ import annotations

import json
from pathlib import Path

from mlxgpt.config import MetadataFile
from mlxgpt.tokenizers.base import Tokenizer, UnknownCharactersError, visible

FILENAME = "char_vocab.json"


class CharTokenizer(Tokenizer):
    kind = "char"

    def __init__(self, chars: list[str]) -> None:
        self.chars = list(chars)
        self.index = {c: i for i, c in enumerate(self.chars)}

    @classmethod
    def train(cls, text: str) -> "CharTokenizer":
        # sorted, so ids are the same in every run (a set's order is not)
        return cls(sorted(set(text)))

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> list[int]:
        return encode_characters(self.index, text, "the model's vocabulary",
                                 "a char model knows only the characters of its training text")

    def decode(self, ids: list[int]) -> str:
        return "".join(self.chars[i] for i in ids)

    def token_label(self, token_id: int) -> str:
        return visible(self.chars[token_id])

    def save(self, directory: Path) -> list[str]:
        (Path(directory) / FILENAME).write_text(json.dumps({"chars": self.chars}, ensure_ascii=False))
        return [FILENAME]

    @classmethod
    def load(cls, directory: Path) -> "CharTokenizer":
        """The vocabulary, checked: distinct single characters (a repeated one would
        give two ids one character, and decode(encode(text)) would change the text)."""
        file = MetadataFile(Path(directory) / FILENAME, "retrain, or restore it from a backup", label="tokenizer file")
        return cls(check_characters(file.check(file.read(), {"chars": list[str]}, required=["chars"])["chars"], file))


def encode_characters(index: dict[str, int], text: str, vocabulary: str, why: str) -> list[int]:
    """Characters -> ids through `index`; unknown characters are one error that lists them
    (`vocabulary` names it, `why` says what it knows)."""
    try:
        return [index[c] for c in text]
    except KeyError:
        unknown = sorted({c for c in text if c not in index})
        shown = " ".join(repr(c) for c in unknown[:10]) + (" ..." if len(unknown) > 10 else "")
        raise UnknownCharactersError(f"{len(unknown)} character(s) not in {vocabulary}: {shown}; remove them ({why})"
                                     ) from None


def check_characters(chars: list[str], file: MetadataFile) -> list[str]:
    """A saved character list, checked: distinct single characters (a repeated one would give two
    ids one character, and decode(encode(text)) would change the text)."""
    first: dict[str, int] = {}
    for i, c in enumerate(chars):
        if len(c) != 1 or "\ud800" <= c <= "\udfff":  # a lone surrogate cannot be printed or encoded
            raise file.error(f"chars[{i}] must be one character, got {json.dumps(c)}")
        if c in first:
            raise file.error(f"chars[{i}] repeats chars[{first[c]}] ({json.dumps(c)}): each character "
                             "needs its own id")
        first[c] = i
    return chars
