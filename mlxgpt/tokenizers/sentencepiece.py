"""Subword pieces learned from the user's own text with SentencePiece (BPE or unigram).

Trained in process on the training split only, saved as `sentencepiece.model`
in every checkpoint. Configured so that decode(encode(text)) == text for any
UTF-8 text, which SentencePiece's defaults do not give:

    normalization_rule_name="identity"   no NFKC: "ﬁ", "Ａ", NBSP, "e\\u0301" stay as written
    remove_extra_whitespaces=False       runs of spaces, leading/trailing spaces survive
    add_dummy_prefix=False               no invented space before the text (SentencePiece adds one
                                         at encode and strips it at decode: a continuation decoded
                                         on its own, as streaming does, would lose or gain a space)
    user_defined_symbols="\\n"           a newline is always its own piece; no piece spans two
                                         lines (fed line by line, the trainer would otherwise drop
                                         newlines, leaving them to byte fallback)
    byte_fallback=True, character_coverage=1.0
                                         every character seen in training is a piece; anything
                                         else (unseen accents, CJK, emoji, NUL) becomes its UTF-8
                                         bytes <0x00>..<0xFF>, so nothing is ever <unk>
    allow_whitespace_only_pieces=True    indentation / space runs can become single pieces
    split_digits=True                    numbers are spelled digit by digit (as in LLaMA),
                                         instead of spending the vocabulary on "1623"
    bos_id=eos_id=-1                     no sentence markers: we model one continuous text

One gap remains in SentencePiece itself: a literal "▁" (U+2581, its space marker)
in the text would decode as a space. encode() therefore spells that character
with its three byte-fallback pieces, which decode back to "▁".

decode() is defined by the bytes of the pieces ("▁" -> space, <0xNN> -> byte NN)
decoded as UTF-8, exactly like the streaming decoder; for any ids encode()
produces this equals SentencePiece's own decode (the tests check it).
"""

from __future__ import annotations

import io
import os
import re
from pathlib import Path
from typing import Iterator

import sentencepiece as spm  # the library (absolute import: this module does not shadow it)

from mlxgpt.errors import MlxgptError
from mlxgpt.tokenizers.base import Tokenizer, UnknownCharactersError, visible

FILENAME = "sentencepiece.model"
MODEL_TYPES = ("bpe", "unigram")
DEFAULT_VOCAB_SIZE = 1024
SPACE_SYMBOL = "\u2581"  # "▁": SentencePiece's word-boundary marker
MAX_SENTENCE_CHARS = 8192  # lines longer than this are fed to the trainer in pieces
MAX_SENTENCE_BYTES = 4 * MAX_SENTENCE_CHARS  # a UTF-8 character is at most 4 bytes
MAX_SENTENCES = 5_000_000  # beyond this the trainer samples lines (seeded)
MAX_MODEL_BYTES = 256 * 2**20  # a model of 2**20 pieces (the largest vocab_size) is far smaller

TRAINER_OPTIONS = dict(
    normalization_rule_name="identity",
    remove_extra_whitespaces=False,
    add_dummy_prefix=False,
    user_defined_symbols="\n",
    byte_fallback=True,
    character_coverage=1.0,
    allow_whitespace_only_pieces=True,
    split_by_whitespace=True,
    split_digits=True,
    unk_id=0,
    bos_id=-1,
    eos_id=-1,
    pad_id=-1,
    max_sentence_length=MAX_SENTENCE_BYTES,
    input_sentence_size=MAX_SENTENCES,
    shuffle_input_sentence=True,
    minloglevel=2,  # errors only: the trainer's progress log would drown ours
)


def _sentences(text: str) -> Iterator[str]:
    """The training text as the trainer's "sentences": lines with their newline,
    long lines cut, and the marker character "▁" replaced (it means space to SentencePiece)."""
    for line in text.replace(SPACE_SYMBOL, " ").splitlines(keepends=True):
        for start in range(0, len(line), MAX_SENTENCE_CHARS):
            yield line[start:start + MAX_SENTENCE_CHARS]


def _trainer_message(exc: Exception) -> str:
    # "INTERNAL: src/trainer_interface.cc(744) [(a) == (b)] Vocabulary size too high ..." -> the readable part
    return str(exc).rsplit("] ", 1)[-1].strip().splitlines()[0] if str(exc) else type(exc).__name__


class SentencePieceTokenizer(Tokenizer):
    kind = "sentencepiece"

    def __init__(self, model_proto: bytes) -> None:
        self.model_proto = bytes(model_proto)
        self.sp = spm.SentencePieceProcessor(model_proto=self.model_proto)
        self._bytes = [self._piece_bytes(i) for i in range(self.sp.get_piece_size())]
        self._space_symbol_ids = [self.sp.piece_to_id(f"<0x{b:02X}>") for b in SPACE_SYMBOL.encode("utf-8")]

    def _piece_bytes(self, i: int) -> bytes:
        piece = self.sp.id_to_piece(i)
        if self.sp.is_byte(i):  # "<0xC3>"
            return bytes([int(piece[3:5], 16)])
        if self.sp.is_control(i):
            return b""
        if self.sp.is_unknown(i):  # never produced by encode (byte fallback); a model could still sample it
            return " \u2047 ".encode("utf-8")  # SentencePiece's own rendering of <unk>
        return piece.replace(SPACE_SYMBOL, " ").encode("utf-8")

    # ------------------------------------------------------------ training

    @classmethod
    def train(cls, text: str, vocab_size: int = DEFAULT_VOCAB_SIZE, model_type: str = "bpe",
              seed: int = 0) -> "SentencePieceTokenizer":
        if model_type not in MODEL_TYPES:
            raise MlxgptError(f"unknown --sp-model-type {model_type!r}: choose one of {', '.join(MODEL_TYPES)}")
        # vocab_size < 1 is sent as 1, so that SentencePiece's own check reports this text's minimum
        spm.set_random_generator_seed(seed)  # only matters when the trainer samples lines
        model = io.BytesIO()
        try:
            spm.SentencePieceTrainer.train(sentence_iterator=_sentences(text), model_writer=model,
                                           model_type=model_type, vocab_size=max(vocab_size, 1),
                                           num_threads=max(1, min(os.cpu_count() or 1, 8)), **TRAINER_OPTIONS)
        except RuntimeError as exc:
            message = _trainer_message(exc)
            too_high = re.search(r"too high \((\d+)\).*<= *(\d+)", message)
            if too_high:
                raise MlxgptError(
                    f"--vocab-size {vocab_size} is more than SentencePiece ({model_type}) can learn from this "
                    f"text's training split: the largest workable size is {too_high.group(2)}; use --vocab-size "
                    f"{too_high.group(2)} or less, or more text") from None
            too_low = re.search(r"smaller than required_chars\. *(\d+) vs (\d+)", message)
            if too_low:
                raise MlxgptError(
                    f"--vocab-size {vocab_size} is below the smallest SentencePiece vocabulary for this text: "
                    f"{too_low.group(2)} (256 byte-fallback pieces + <unk> + newline + the characters of the "
                    f"training split); use --vocab-size {too_low.group(2)} or more") from None
            raise MlxgptError(f"SentencePiece could not learn a vocabulary from this text: {message}") from None
        return cls(model.getvalue())

    # ------------------------------------------------------------ the interface

    @property
    def vocab_size(self) -> int:
        return len(self._bytes)

    def encode(self, text: str) -> list[int]:
        try:
            if SPACE_SYMBOL not in text:
                return self.sp.encode(text)
            ids: list[int] = []
            for i, part in enumerate(text.split(SPACE_SYMBOL)):
                if i:
                    ids.extend(self._space_symbol_ids)  # a literal "▁", spelled as its UTF-8 bytes
                if part:
                    ids.extend(self.sp.encode(part))
            return ids
        except UnicodeEncodeError as exc:  # lone surrogates, e.g. undecodable bytes in a command-line prompt
            raise UnknownCharactersError(f"the text is not valid Unicode (character {exc.object[exc.start]!r} at "
                                         f"position {exc.start}): pass UTF-8 text") from None

    def decode(self, ids: list[int]) -> str:
        return b"".join(self._bytes[i] for i in ids).decode("utf-8", errors="replace")

    def token_bytes(self, token_id: int) -> bytes:
        return self._bytes[token_id]

    def token_label(self, token_id: int) -> str:
        """'▁the' -> '␣the', '\\n' -> '⏎', byte pieces as '<0xC3>', <unk> as is."""
        if self.sp.is_byte(token_id) or self.sp.is_unknown(token_id) or self.sp.is_control(token_id):
            return self.sp.id_to_piece(token_id)
        return visible(self.sp.id_to_piece(token_id).replace(SPACE_SYMBOL, " "))

    def piece(self, token_id: int) -> str:
        """SentencePiece's own name for a token, e.g. '▁the' or '<0xC3>'."""
        return self.sp.id_to_piece(token_id)

    # ------------------------------------------------------------ files

    def save(self, directory: Path) -> list[str]:
        (Path(directory) / FILENAME).write_bytes(self.model_proto)
        return [FILENAME]

    @classmethod
    def load(cls, directory: Path) -> "SentencePieceTokenizer":
        path = Path(directory) / FILENAME

        def corrupt(problem: str) -> MlxgptError:
            return MlxgptError(f"tokenizer file {path} is corrupt: {problem}; retrain, or restore it from a backup")

        try:
            if path.is_dir():
                raise corrupt("it is a directory, not a file")
            if path.stat().st_size > MAX_MODEL_BYTES:
                raise corrupt(f"it has {path.stat().st_size:,} bytes, more than any SentencePiece model mlxgpt writes")
            data = path.read_bytes()
        except FileNotFoundError:
            raise MlxgptError(f"tokenizer file {path} is missing: the checkpoint is incomplete; retrain or copy it back") from None
        except OSError as exc:
            raise MlxgptError(f"tokenizer file {path} cannot be read ({exc.strerror}): check its permissions") from None
        if not data:
            raise corrupt("it is empty")
        try:
            tokenizer = cls(data)
        except Exception:  # SentencePiece raises RuntimeError for bytes that are not a model
            raise corrupt("it is not a SentencePiece model") from None
        if any(i < 0 or not tokenizer.sp.is_byte(i) for i in
               (tokenizer.sp.piece_to_id(f"<0x{b:02X}>") for b in range(256))):
            raise MlxgptError(f"tokenizer file {path} is a SentencePiece model without byte fallback "
                              "(not one mlxgpt wrote): retrain")
        return tokenizer
