"""Our tokenizers in Hugging Face `tokenizers` format: the same ids for every text, the same decode.

An exported model is only the model it was trained as if transformers and mlx-lm cut text into
exactly our ids. Each choice below is there because a simpler one differs on some text.

Char (one id per Unicode code point)
    model        WordLevel over the characters, with no unknown token: an unknown character makes
                 tokenizers raise ("Missing [UNK] token"), and so transformers and mlx-lm, as our
                 encode refuses it. Mapping it to some id would silently change the text.
    pre-tokenizer Split(/[\\s\\S]/, isolated): every code point is a word of its own ("." would miss
                 "\\n"); no normalizer, so nothing is rewritten.
    decoder      Sequence[Replace("▁", " "), ByteFallback, Fuse]: tokens joined with no spaces (the
                 other two steps change no single character but "▁"). It is the exact decoder mlx-lm
                 recognises and streams in linear time (SPMStreamingDetokenizer); its fallback
                 (NaiveStreamingDetokenizer) encodes "a ,b" on loading, which fails on vocabularies
                 without those characters (DNA, peptides). A vocabulary that has "▁" gets plain Fuse
                 instead (mlx-lm's fast path would show "▁" as a space); mlx_lm.load then needs "a",
                 " ", "," and "b" in it.

SentencePiece
    vocabulary   the pieces at their ids, "▁" written as a real space, and no normalizer or Metaspace
                 pre-tokenizer: a literal "▁" in the text is then a character the vocabulary lacks,
                 so it falls back to its bytes <0xE2><0x96><0x81>, as our encode spells it.
    "\\n"         (user-defined pieces) AddedTokens: split out first, as SentencePiece does.
    merges       built from the vocabulary as transformers' SentencePieceExtractor does: every split
                 of a piece into two pieces, ranked by the piece's score (SentencePiece's BPE merges
                 the adjacent pair whose union scores highest); byte_fallback for unseen characters.
    unigram      refused. SentencePiece's unigram encoder adds piece scores in float32 along the whole
                 text, so between near-equal segmentations its choice depends on how much text came
                 before ("Thou dearest Perdita," after 8000 characters of Shakespeare: "▁" "Per", after
                 4000 or 16000: "▁P" "er"); tokenizers adds in float64 and cannot follow it. (A
                 converter that agreed on every probe text met this on long texts only.)
    decoder      Sequence[Replace(exactly "<unk>" -> " ⁇ "), ByteFallback, Fuse]: the bytes of the
                 pieces, as our decode. Not mlx-lm's SentencePiece decoder: its streaming detokenizer
                 turns the bytes of a literal "▁" into a space, so mlx-lm streams with its naive
                 detokenizer (it decodes the current line again per token: exact, quadratic per line).
                 One gap no tokenizers decoder closes: in a run of byte pieces that is not valid UTF-8
                 (only a model sampling broken bytes makes one) tokenizers writes one U+FFFD per byte,
                 Python one per invalid sequence.

tokenizer_config.json names the plain PreTrainedTokenizerFast, adds no BOS/EOS, and turns off
clean_up_tokenization_spaces (else transformers' decode rewrites " ." as "."). An eos_token becomes
a special token in tokenizer.json too, so every loader, and our check, sees the same thing.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

from mlxgpt.errors import MlxgptError
from mlxgpt.tokenizers.base import Tokenizer, UnknownCharactersError

if TYPE_CHECKING:
    import tokenizers

TOKENIZER_FILE = "tokenizer.json"
CONFIG_FILE = "tokenizer_config.json"
INSTALL = "pip install -e '.[interop]'"
SPACE_SYMBOL = "\u2581"  # "▁": SentencePiece's space
UNK_TEXT = " \u2047 "  # how our decode (like SentencePiece's) shows the unknown piece
_UNIGRAM_REFUSAL = (
    "a SentencePiece unigram tokenizer cannot be written in Hugging Face format with the same ids: SentencePiece "
    "adds piece scores in float32 along the whole text, so its choice between near-equal segmentations depends on "
    "the text before, which Hugging Face's float64 unigram cannot follow; retrain with --sp-model-type bpe")

# Everything that has broken a tokenizer conversion somewhere: whitespace runs, tabs, CRLF, blank lines,
# digits, many scripts, emoji sequences, combining marks, SentencePiece's own markers, NUL.
PROBE_TEXT = (
    "  Two leading spaces, three   inside, a tab\there,\t\ttwo tabs, CRLF\r\n\n\nthree newlines.\n"
    "Digits 1623, 3.14, 007; Greek Ωμέγα; Cyrillic привет; CJK 東京 北京市; Arabic مرحبا; Devanagari हिन्दी.\n"
    "Emoji 😀 👩\u200d👩\u200d👧 👍🏽 🏳️\u200d🌈; e\u0301 vs é; ﬁ Ａ; NBSP\u00a0and\u3000ideographic space.\n"
    "Markers ▁ ▁▁x <0x41> <unk> ⁇ <s> </s> <pad>; NUL \x00; BOM \ufeff; zero width \u200b; \ufffd.\n"
    "The quick brown fox jumps over the lazy dog. ;-) {x: [1, 2]} <b>bold</b>   \t \n  "
)


def _tokenizers_library():
    """Imported on use: mlxgpt's core install does not have it."""
    try:
        import tokenizers
    except ImportError:
        raise MlxgptError(f"exporting a tokenizer needs the `tokenizers` library: {INSTALL}") from None
    return tokenizers


def hf_tokenizer(tokenizer: Tokenizer) -> "tokenizers.Tokenizer":
    """The Hugging Face tokenizer that gives our ids and our decode (see the module docstring)."""
    if tokenizer.kind == "char":
        return _char_tokenizer(tokenizer.chars)
    if tokenizer.kind == "sentencepiece":
        return _sentencepiece_tokenizer(tokenizer.model_proto)
    raise MlxgptError(f"a {tokenizer.kind!r} tokenizer cannot be written in Hugging Face format: "
                      "only char and sentencepiece ones can; retrain with one of those")


# ---------------------------------------------------------------- char


def _char_tokenizer(chars: list[str]) -> "tokenizers.Tokenizer":
    tk = _tokenizers_library()
    hf = tk.Tokenizer(tk.models.WordLevel(vocab={c: i for i, c in enumerate(chars)}, unk_token=None))
    hf.pre_tokenizer = tk.pre_tokenizers.Split(tk.Regex(r"[\s\S]"), behavior="isolated")
    hf.decoder = tk.decoders.Fuse() if SPACE_SYMBOL in chars else _spm_decoder(tk)
    return hf


def _spm_decoder(tk) -> "tokenizers.decoders.Decoder":
    """Exactly the decoder that mlx-lm streams with its linear SPMStreamingDetokenizer."""
    return tk.decoders.Sequence([tk.decoders.Replace(SPACE_SYMBOL, " "), tk.decoders.ByteFallback(),
                                 tk.decoders.Fuse()])


# ---------------------------------------------------------------- SentencePiece


def _model_proto(model_proto: bytes):
    """SentencePiece's model file as a protobuf message: the model type and piece kinds live there."""
    try:
        from sentencepiece import sentencepiece_model_pb2
    except ImportError:
        raise MlxgptError(f"exporting a SentencePiece tokenizer needs the `protobuf` library: {INSTALL}") from None
    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(model_proto)
    return proto


def _regex_literal(text: str) -> str:
    r"""text as Oniguruma regex characters (\x{HHHH} each), safe anywhere, inside [...] too."""
    return "".join(f"\\x{{{ord(c):X}}}" for c in text)


def _sentencepiece_tokenizer(model_proto: bytes) -> "tokenizers.Tokenizer":
    tk = _tokenizers_library()
    proto = _model_proto(model_proto)
    kind = type(proto).SentencePiece  # its Type enum names the kinds of piece
    model_type = type(proto.trainer_spec).ModelType.Name(proto.trainer_spec.model_type)
    if model_type != "BPE":
        raise MlxgptError(_UNIGRAM_REFUSAL if model_type == "UNIGRAM" else
                          f"a SentencePiece {model_type.lower()} model has no Hugging Face equivalent: "
                          "retrain with --sp-model-type bpe")
    pieces = list(proto.pieces)

    # The vocabulary: "▁" as a real space; byte pieces and <unk> keep the names tokenizers looks for.
    texts = []
    for i, piece in enumerate(pieces):
        if piece.type in (kind.CONTROL, kind.UNUSED):
            raise MlxgptError(f"piece {i} ({piece.piece!r}) is a {kind.Type.Name(piece.type).lower()} piece, "
                              "which has no Hugging Face equivalent (mlxgpt never trains one): retrain the tokenizer")
        special = piece.type in (kind.BYTE, kind.UNKNOWN)
        texts.append(piece.piece if special else piece.piece.replace(SPACE_SYMBOL, " "))
    twice = [text for text, count in Counter(texts).items() if count > 1]
    if twice:
        raise MlxgptError(f"two SentencePiece pieces both read {twice[0]!r} once '▁' is a space, and a Hugging "
                          "Face vocabulary needs distinct entries: retrain the tokenizer")
    unk_id = next(i for i, piece in enumerate(pieces) if piece.type == kind.UNKNOWN)
    normal = [i for i, piece in enumerate(pieces) if piece.type == kind.NORMAL]

    hf = tk.Tokenizer(_bpe_model(tk, texts, [piece.score for piece in pieces], normal, unk_id))
    hf.add_tokens([tk.AddedToken(texts[i], normalized=False)
                   for i, piece in enumerate(pieces) if piece.type == kind.USER_DEFINED])
    hf.decoder = tk.decoders.Sequence([
        tk.decoders.Replace(tk.Regex(rf"\A{_regex_literal(texts[unk_id])}\z"), UNK_TEXT),
        tk.decoders.ByteFallback(), tk.decoders.Fuse()])
    return hf


def _bpe_model(tk, texts: list[str], scores: list[float], normal: list[int], unk_id: int):
    """SentencePiece BPE merges the adjacent pair whose union is the highest-scoring piece, so a merge
    is every split of a normal piece into two normal pieces, ranked by that piece's score."""
    mergeable = {texts[i] for i in normal}
    merges = [(texts[i][:k], texts[i][k:])
              for i in sorted(normal, key=lambda i: (-scores[i], i))
              for k in range(1, len(texts[i]))
              if texts[i][:k] in mergeable and texts[i][k:] in mergeable]
    return tk.models.BPE(vocab={text: i for i, text in enumerate(texts)}, merges=merges,
                         unk_token=texts[unk_id], byte_fallback=True, fuse_unk=True)


# ---------------------------------------------------------------- files


def write_hf_tokenizer(tokenizer: Tokenizer, directory: Path, *, model_max_length: int,
                       eos_token: str | None = None, bos_token: str | None = None) -> list[str]:
    """Write tokenizer.json and tokenizer_config.json into `directory` (which exists); return their names.

    `bos_token` (one of our tokens; a --format lines model's newline, which every example starts
    from) is put in front of every text encoded with special tokens, as the other libraries encode
    a prompt; ids without special tokens stay ours.

    The written tokenizer.json is read back and compared with ours (ids and decode) on a hard probe
    text, on each vocabulary entry's text and on each token's decode; if any differs, the files are
    removed and MlxgptError names the first differing text."""
    tk = _tokenizers_library()
    hf = hf_tokenizer(tokenizer)
    for special in {eos_token, bos_token} - {None}:
        _check_eos_token(tokenizer, special)
        hf.add_special_tokens([tk.AddedToken(special, special=True, normalized=False)])
    if bos_token is not None:
        bos_id = tokenizer.encode(bos_token)[0]
        hf.post_processor = tk.processors.TemplateProcessing(single=f"{bos_token} $A", pair=f"{bos_token} $A $B",
                                                             special_tokens=[(bos_token, bos_id)])
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": int(model_max_length),
        "clean_up_tokenization_spaces": False,
        "add_bos_token": False,
        "add_eos_token": False,
    }
    if eos_token is not None:
        config["eos_token"] = eos_token
    if bos_token is not None:
        config.update(bos_token=bos_token, add_bos_token=True)
    directory = Path(directory)
    hf.save(str(directory / TOKENIZER_FILE))
    (directory / CONFIG_FILE).write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    try:
        check_hf_tokenizer(tokenizer, directory / TOKENIZER_FILE, eos_token=eos_token)
    except MlxgptError:
        for name in (TOKENIZER_FILE, CONFIG_FILE):  # never leave a tokenizer that differs from ours
            (directory / name).unlink(missing_ok=True)
        raise
    return [TOKENIZER_FILE, CONFIG_FILE]


def _check_eos_token(tokenizer: Tokenizer, eos_token: str) -> None:
    """A special token is split out of the text before anything else, so it must be one of our tokens
    that no other token contains: then splitting it out first changes no ids."""
    try:
        ids = tokenizer.encode(eos_token)
    except UnknownCharactersError:
        ids = []
    if len(ids) != 1:
        raise MlxgptError(f"eos_token {eos_token!r} is not a single token of this tokenizer: pass the text of one "
                          "token, e.g. '\\n'")
    for i in range(tokenizer.vocab_size):
        text = tokenizer.decode([i])
        if eos_token in text and text != eos_token:
            raise MlxgptError(f"eos_token {eos_token!r} cannot be a special token: token {i} ({text!r}) contains it, "
                              "and loaders split special tokens out first, which would change ids; pick a token "
                              "that no other token contains, e.g. '\\n'")


def _probe_texts(tokenizer: Tokenizer, eos_token: str | None) -> list[str]:
    """The hard probe (for a char tokenizer, its known characters), then every vocabulary entry's text."""
    if tokenizer.kind == "char":
        known = set(tokenizer.chars)
        texts = ["".join(c for c in PROBE_TEXT if c in known), "".join(tokenizer.chars)]
    else:
        proto = _model_proto(tokenizer.model_proto)
        kind = type(proto).SentencePiece
        texts = [PROBE_TEXT] + [p.piece.replace(SPACE_SYMBOL, " ") for p in proto.pieces
                                if p.type in (kind.NORMAL, kind.USER_DEFINED)]
    if eos_token is not None:
        texts.append(f"{eos_token}{texts[0][:40]}{eos_token}{eos_token}{texts[0][-40:]}")
    return texts


def check_hf_tokenizer(tokenizer: Tokenizer, path: Path, *, eos_token: str | None = None) -> None:
    """Raise MlxgptError unless the tokenizer.json at `path` encodes and decodes as `tokenizer` does."""
    tk = _tokenizers_library()
    theirs = tk.Tokenizer.from_file(str(path))

    def differs(what: str) -> MlxgptError:
        return MlxgptError(f"the Hugging Face tokenizer differs from mlxgpt's on {what}, so it was not written: "
                           "this is a bug in mlxgpt's converter; please report it with the run's tokenizer file")

    texts = _probe_texts(tokenizer, eos_token)
    for text, encoding in zip(texts, theirs.encode_batch(texts, add_special_tokens=False)):
        ids = tokenizer.encode(text)
        if encoding.ids != ids:
            first = next((k for k, (a, b) in enumerate(zip(ids, encoding.ids)) if a != b),
                         min(len(ids), len(encoding.ids)))
            raise differs(f"the text {_shown(text)} (ids from position {first}: ours {ids[first:first + 4]}, "
                          f"theirs {encoding.ids[first:first + 4]})")
        if theirs.decode(ids, skip_special_tokens=False) != tokenizer.decode(ids):
            raise differs(f"decoding the ids of the text {_shown(text)}")
    singles = theirs.decode_batch([[i] for i in range(tokenizer.vocab_size)], skip_special_tokens=False)
    for i, text in enumerate(singles):
        if text != tokenizer.decode([i]):
            raise differs(f"decoding token {i} (ours {_shown(tokenizer.decode([i]))}, theirs {_shown(text)})")
    if tokenizer.kind == "char":  # an unknown character must be refused, as ours refuses it
        known = set(tokenizer.chars)
        unknown = next((c for c in PROBE_TEXT + "\U0010fffd" if c not in known), None)
        if unknown is None:
            return
        try:
            theirs.encode(unknown, add_special_tokens=False)
        except Exception:  # tokenizers raises a bare Exception ("Missing [UNK] token")
            return
        raise differs(f"the unknown character {unknown!r} (ours refuses it, theirs gives an id)")


def _shown(text: str, limit: int = 60) -> str:
    """A text for a one-line message: repr (newlines escaped), cut to `limit` characters."""
    return repr(text) if len(text) <= limit else repr(text[:limit]) + f"... ({len(text)} characters)"
