"""The encoder-decoder Transformer of "Attention Is All You Need" (Vaswani et al. 2017), built from
the GPT's pieces in mlxgpt/model.py, and two ways to decode with it: greedy and beam search.

The encoder is a stack of the GPT's Blocks with the causal mask off: every source position sees
every other, before and after it (but never padding). Each decoder block adds a sublayer between
the GPT's masked self-attention and its MLP: cross-attention, whose queries come from the target
and whose keys and values come from the encoder's output, the "memory". Its attention weights say
which source positions each target position read: an alignment (Bahdanau et al. 2015).

Read top to bottom; shapes are in the comments as (B, T, C) = (batch, time, channels), Ts / Tt =
source / target length, nh = number of heads, hs = head size, V = vocabulary size.
Imports mlx, numpy (the beam bookkeeping), mlxgpt/model.py and mlxgpt/config.py.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import mlx.core as mx
import mlx.nn as nn
import numpy as np
from mlx.utils import tree_flatten, tree_map_with_path

from mlxgpt.config import MetadataFile, ModelArgs, field_types
from mlxgpt.errors import MlxgptError
from mlxgpt.model import MLP, Block, CausalSelfAttention, KVCache, attention_weights, make_norm, sinusoidal_positions


@dataclass
class Seq2SeqArgs:
    """The shape of an encoder-decoder.

    One vocabulary for source and target: English and French number words are written with nearly
    the same letters, so a shared character vocabulary costs almost nothing, and then one embedding
    matrix serves the encoder's input, the decoder's input and (transposed) the decoder's output,
    as in the paper (§3.4: "we share the same weight matrix between the two embedding layers and
    the pre-softmax linear transformation"). A third of the embedding weights, and a letter means
    the same thing on both sides, so copying ("six" -> "six") is easy to learn.
    Source and target are right-padded with pad_id; padding is never attended to, nor predicted."""

    vocab_size: int = 32
    n_encoder_layers: int = 2
    n_decoder_layers: int = 2
    n_head: int = 4
    n_embd: int = 128
    block_size: int = 64  # the longest source, and the longest target (bos + its tokens)
    dropout: float = 0.0
    bias: bool = False
    pos_embedding: str = "sinusoidal"  # the paper's fixed encodings, or "learned" (one table per side)
    pad_id: int = 0

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        for name in ("n_encoder_layers", "n_decoder_layers"):
            if not 1 <= getattr(self, name) <= 128:
                raise MlxgptError(f"{name} must be between 1 and 128, got {getattr(self, name)}")
        if self.pos_embedding not in ("sinusoidal", "learned"):
            raise MlxgptError(f"unknown pos_embedding {self.pos_embedding!r}: use sinusoidal or learned")
        self.to_model_args()  # checks the shared shape: vocabulary, heads, widths, dropout
        if not 0 <= self.pad_id < self.vocab_size:
            raise MlxgptError(f"pad_id must be a token id, 0 to {self.vocab_size - 1}, got {self.pad_id}")

    @classmethod
    def from_saved(cls, values: object, file: MetadataFile) -> "Seq2SeqArgs":
        """The `model` section of an encoder-decoder checkpoint's config.json: every field present,
        of exactly its annotated type, and a valid shape (one line naming the field, if not)."""
        schema = field_types(cls)
        checked = file.check(values, schema, section="model", required=list(schema))
        try:
            return cls(**checked)
        except MlxgptError as exc:
            raise file.error(f"model: {exc}") from None

    def to_model_args(self) -> ModelArgs:
        """The ModelArgs the GPT's pieces (Block, CausalSelfAttention, MLP, make_norm) are built from.
        n_layer counts both stacks, so ModelArgs' size limit sees the whole model."""
        return ModelArgs(vocab_size=self.vocab_size, block_size=self.block_size,
                         n_layer=self.n_encoder_layers + self.n_decoder_layers, n_head=self.n_head,
                         n_embd=self.n_embd, dropout=self.dropout, bias=self.bias, pos_embedding=self.pos_embedding)


def padding_mask(src: mx.array, pad_id: int) -> mx.array:
    """Which source positions hold real tokens: ids (B, Ts) -> booleans (B, Ts)."""
    return src != pad_id


def key_mask(src_mask: mx.array) -> mx.array:
    """(B, Ts) -> (B, 1, 1, Ts): the same keys hidden for every head and every query."""
    return src_mask[:, None, None, :]


class EncoderBlock(Block):
    """The GPT's Block built with args.causal False, so every source position sees every other,
    before and after it. One thing is added: the keys at padding are hidden, so how much padding
    follows a source changes nothing (the GPT never pads, so its Block takes no mask)."""

    def self_attend(self, x: mx.array, src_mask: mx.array) -> mx.array:
        """self.attn (a CausalSelfAttention, causal off) under the padding mask: (B, Ts, C) -> same."""
        B, T, C = x.shape
        attn = self.attn
        q, k, v = attn.qkv(x)  # (B, nh, Ts, hs) each
        weights = attention_weights(q, k, attn.scale, causal=attn.causal, mask=key_mask(src_mask))
        y = (attn.attn_dropout(weights) @ v).transpose(0, 2, 1, 3).reshape(B, T, C)
        return attn.resid_dropout(attn.c_proj(y))

    def __call__(self, x: mx.array, src_mask: mx.array) -> mx.array:
        x = x + self.self_attend(self.ln_1(x), src_mask)
        return x + self.mlp(self.ln_2(x))


class CrossAttention(nn.Module):
    """The target asks (queries) the encoded source (keys, values from the memory) what it needs.
    No causal mask: the whole source is known from the start; only its padding is hidden."""

    def __init__(self, args: ModelArgs) -> None:
        super().__init__()
        self.n_head = args.n_head
        self.scale = 1.0 / math.sqrt(args.head_dim) if args.attn_scale else 1.0
        self.c_q = nn.Linear(args.n_embd, args.n_embd, bias=args.bias)  # from the decoder's stream
        self.c_kv = nn.Linear(args.n_embd, 2 * args.n_embd, bias=args.bias)  # from the memory: k, v in one matmul
        self.c_proj = nn.Linear(args.n_embd, args.n_embd, bias=args.bias)
        self.attn_dropout = nn.Dropout(args.dropout)
        self.resid_dropout = nn.Dropout(args.dropout)

    def heads(self, t: mx.array) -> mx.array:
        """(B, T, C) -> (B, nh, T, hs): split the channels into heads."""
        B, T, C = t.shape
        return t.reshape(B, T, self.n_head, C // self.n_head).transpose(0, 2, 1, 3)

    def memory_kv(self, memory: mx.array) -> tuple[mx.array, mx.array]:
        """The memory's keys and values, (B, nh, Ts, hs) each. They depend on the source alone, so
        decoding computes them once per layer, not once per generated token."""
        k, v = mx.split(self.c_kv(memory), 2, axis=-1)
        return self.heads(k), self.heads(v)

    def weights(self, x: mx.array, memory_kv: tuple[mx.array, mx.array], src_mask: mx.array) -> mx.array:
        """How much each target position (x: (B, Tt, C)) reads each source position: the alignment,
        (B, nh, Tt, Ts). Each row sums to 1 over the real source positions and is 0 on padding."""
        q = self.heads(self.c_q(x))  # (B, nh, Tt, hs)
        return attention_weights(q, memory_kv[0], self.scale, causal=False, mask=key_mask(src_mask))

    def __call__(self, x: mx.array, memory_kv: tuple[mx.array, mx.array], src_mask: mx.array) -> mx.array:
        B, T, C = x.shape
        y = self.attn_dropout(self.weights(x, memory_kv, src_mask)) @ memory_kv[1]  # (B, nh, Tt, hs)
        y = y.transpose(0, 2, 1, 3).reshape(B, T, C)  # re-assemble heads side by side
        return self.resid_dropout(self.c_proj(y))


class DecoderBlock(nn.Module):
    """Pre-LayerNorm, like the GPT's Block, with three sublayers adding to the residual stream:
    x + self_attn(ln(x)) (masked: the target so far), x + cross_attn(ln(x), memory) (the source),
    x + mlp(ln(x))."""

    def __init__(self, args: ModelArgs) -> None:
        super().__init__()
        self.ln_1 = make_norm(args)
        self.attn = CausalSelfAttention(args)
        self.ln_2 = make_norm(args)
        self.cross_attn = CrossAttention(args)
        self.ln_3 = make_norm(args)
        self.mlp = MLP(args)

    def __call__(self, x: mx.array, memory_kv: tuple[mx.array, mx.array], src_mask: mx.array,
                 cache: KVCache | None = None) -> mx.array:
        x = x + self.attn(self.ln_1(x), cache)
        x = x + self.cross_attn(self.ln_2(x), memory_kv, src_mask)
        return x + self.mlp(self.ln_3(x))


class DecoderCache:
    """What decoding keeps between steps, per decoder layer: a KVCache of the target's keys and
    values (self-attention), and the memory's keys and values (cross-attention), computed on the
    first step. One cache belongs to one source: a new source needs a new cache."""

    def __init__(self, n_layers: int) -> None:
        self.self_attn = [KVCache() for _ in range(n_layers)]
        self.memory_kv: list[tuple[mx.array, mx.array]] | None = None

    @property
    def offset(self) -> int:
        """Target positions decoded so far."""
        return self.self_attn[0].offset

    def select(self, rows: mx.array) -> None:
        """Keep the batch rows `rows` of the target's keys/values, in that order (beam search: each
        surviving beam takes over its parent's). The memory's are shared by every row: kept."""
        for kv in self.self_attn:
            kv.keys, kv.values = kv.keys[rows], kv.values[rows]


class EncoderDecoder(nn.Module):
    def __init__(self, args: Seq2SeqArgs) -> None:
        super().__init__()
        self.args = args
        model_args = args.to_model_args()
        self.wte = nn.Embedding(args.vocab_size, args.n_embd)  # shared: source, target and unembedding
        if args.pos_embedding == "learned":  # where a token stands means different things on each side
            self.enc_wpe = nn.Embedding(args.block_size, args.n_embd)
            self.dec_wpe = nn.Embedding(args.block_size, args.n_embd)
        self.drop = nn.Dropout(args.dropout)
        self.encoder = [EncoderBlock(replace(model_args, causal=False)) for _ in range(args.n_encoder_layers)]
        self.ln_enc = make_norm(model_args)  # pre-LN stacks end with a norm: the memory is normalised
        self.decoder = [DecoderBlock(model_args) for _ in range(args.n_decoder_layers)]
        self.ln_f = make_norm(model_args)
        self._init_weights()

    def _init_weights(self) -> None:
        """GPT._init_weights' recipe (normal weights, zero biases, unit gains, and each residual
        projection c_proj scaled by 1/sqrt(the number of sublayers adding to its stream: 2 per
        encoder block, 3 per decoder block)), at the fan-in scale 1/sqrt(n_embd) rather than GPT-2's
        0.02, with the paper's sqrt(n_embd) on the embeddings (§3.4, in embed): tokens then enter at
        unit variance, as loud as the sinusoids added to them. GPT-2's 0.02 suits its 768 channels;
        at this project's widths (32-128) the tokens drown in the positions, and each path from a
        source token to a logit is a product of near-zero matrices: on a reverse-the-sequence task
        (32 channels) cross-attention went unused for hundreds of steps; now the loss halves in ~100."""
        std = self.args.n_embd ** -0.5
        residual_std = {"encoder": std / math.sqrt(2 * self.args.n_encoder_layers),
                        "decoder": std / math.sqrt(3 * self.args.n_decoder_layers)}

        def init(path: str, w: mx.array) -> mx.array:
            if path.endswith("bias"):
                return mx.zeros_like(w)
            if w.ndim == 1:
                return mx.ones_like(w)  # the norms' gains
            if path.endswith("wpe.weight"):  # learned positions: as loud as the (scaled) tokens
                return mx.random.normal(w.shape, dtype=w.dtype)
            if path.endswith("c_proj.weight"):  # path starts with "encoder." or "decoder."
                return mx.random.normal(w.shape, scale=residual_std[path.split(".")[0]], dtype=w.dtype)
            return mx.random.normal(w.shape, scale=std, dtype=w.dtype)

        self.update(tree_map_with_path(init, self.parameters()))

    def embed(self, idx: mx.array, offset: int = 0, side: str = "decoder") -> mx.array:
        """Token ids (B, T) -> vectors (B, T, C): what each token is, plus where it stands on its
        side ("encoder" or "decoder"); `offset` is the position of the first."""
        if offset + idx.shape[1] > self.args.block_size:
            raise ValueError(f"{side} sequence of {offset + idx.shape[1]} tokens exceeds block_size "
                             f"{self.args.block_size}")
        positions = mx.arange(idx.shape[1]) + offset
        tok = self.wte(idx) * math.sqrt(self.args.n_embd)  # (B, T, C), unit variance (§3.4)
        if self.args.pos_embedding == "learned":
            wpe = self.enc_wpe if side == "encoder" else self.dec_wpe
            return self.drop(tok + wpe(positions))  # (T, C) broadcast over the batch
        return self.drop(tok + sinusoidal_positions(positions, self.args.n_embd).astype(tok.dtype))

    def encode(self, src: mx.array) -> mx.array:
        """Source ids (B, Ts), right-padded with pad_id -> memory (B, Ts, C). Bidirectional; no
        position ever attends to padding (padding's own rows are computed, and never read)."""
        src_mask = padding_mask(src, self.args.pad_id)
        x = self.embed(src, side="encoder")
        for block in self.encoder:
            x = block(x, src_mask)
        return self.ln_enc(x)

    def memory_kv(self, memory: mx.array) -> list[tuple[mx.array, mx.array]]:
        """Each decoder layer's keys and values of the memory."""
        return [block.cross_attn.memory_kv(memory) for block in self.decoder]

    def decode(self, tgt: mx.array, memory: mx.array, src_mask: mx.array,
               cache: DecoderCache | None = None) -> mx.array:
        """Target ids (B, Tt) -> next-token logits (B, Tt, V), each position seeing the target up to
        itself and the whole (unpadded) source. src_mask (B, Ts): True at real source tokens.
        With a cache, tgt continues what the cache holds: its positions start at cache.offset."""
        offset = cache.offset if cache is not None else 0
        x = self.embed(tgt, offset)  # (B, Tt, C)
        if cache is None:
            memory_kv = self.memory_kv(memory)
        else:
            if cache.memory_kv is None:
                cache.memory_kv = self.memory_kv(memory)
            memory_kv = cache.memory_kv
        for i, block in enumerate(self.decoder):
            x = block(x, memory_kv[i], src_mask, cache.self_attn[i] if cache is not None else None)
        return self.wte.as_linear(self.ln_f(x))  # tied unembedding: logits = x @ wte^T

    def __call__(self, src: mx.array, tgt_in: mx.array | None = None) -> mx.array:
        """Source ids (B, Ts) and target input ids (B, Tt) (bos + target, right-padded) -> logits (B, Tt, V).
        The training loop hands every model one input array per batch: for this model the two
        stacked, (B, 2, T) with T = block_size (seq2seq/data.py's PairsDataset), split here."""
        if tgt_in is None:
            src, tgt_in = src[:, 0], src[:, 1]
        return self.decode(tgt_in, self.encode(src), padding_mask(src, self.args.pad_id))

    def make_cache(self) -> DecoderCache:
        """An empty cache for decoding one batch of sources token by token."""
        return DecoderCache(len(self.decoder))

    def cross_attention_weights(self, src: mx.array, tgt_in: mx.array) -> list[mx.array]:
        """Per decoder layer, the cross-attention weights (B, nh, Tt, Ts) of the forward pass on
        (src, tgt_in): which source positions each target position read."""
        memory, src_mask = self.encode(src), padding_mask(src, self.args.pad_id)
        x = self.embed(tgt_in)
        maps = []
        for block in self.decoder:
            memory_kv = block.cross_attn.memory_kv(memory)
            stream = x + block.attn(block.ln_1(x))  # the residual stream where cross-attention reads it
            maps.append(block.cross_attn.weights(block.ln_2(stream), memory_kv, src_mask))
            x = block(x, memory_kv, src_mask)
        return maps

    def num_params(self) -> int:
        """Parameter count (the shared embedding once; sinusoidal positions have none)."""
        return sum(w.size for _, w in tree_flatten(self.parameters()))


def loss(model: EncoderDecoder, src: mx.array, tgt_in: mx.array, tgt_out: mx.array) -> mx.array:
    """Mean next-token cross-entropy in nats over the real targets: tgt_out (B, Tt) is tgt_in shifted
    left by one (the target, then eos); padding (pad_id) and -1 are nothing to predict."""
    logits = model(src, tgt_in).astype(mx.float32)  # (B, Tt, V)
    has_target = (tgt_out >= 0) & (tgt_out != model.args.pad_id)
    losses = nn.losses.cross_entropy(logits, mx.maximum(tgt_out, 0), reduction="none")
    return mx.sum(mx.where(has_target, losses, 0.0)) / mx.sum(has_target)


# ---------------------------------------------------------------- decoding


def encode_one(model: EncoderDecoder, src_ids: list[int]) -> tuple[mx.array, mx.array]:
    """One source (token ids, no padding) -> its memory (1, Ts, C) and mask (1, Ts)."""
    if not any(t != model.args.pad_id for t in src_ids):
        raise MlxgptError("the source is empty: there is nothing to translate")
    src = mx.array([src_ids])
    return model.encode(src), padding_mask(src, model.args.pad_id)


def check_max_len(model: EncoderDecoder, max_len: int) -> None:
    """The decoder reads bos plus up to max_len - 1 tokens: they must fit in its block."""
    if not 1 <= max_len <= model.args.block_size:
        raise MlxgptError(f"max_len must be between 1 and block_size ({model.args.block_size}), got {max_len}")


def next_log_probs(model: EncoderDecoder, last: list[int], memory: mx.array, src_mask: mx.array,
                   cache: DecoderCache) -> np.ndarray:
    """Feed each row's latest token through the cache -> log-probs of its next token, (rows, V),
    in float64 so that sums over a sequence are exact enough to rank beams."""
    logits = model.decode(mx.array(last)[:, None], memory, src_mask, cache)[:, -1].astype(mx.float32)
    return np.array(logits - mx.logsumexp(logits, axis=-1, keepdims=True)).astype(np.float64)


def greedy(model: EncoderDecoder, src_ids: list[int], bos_id: int, eos_id: int, max_len: int) -> list[int]:
    """The likeliest next token, one at a time, until eos or max_len tokens (eos included).
    -> the tokens, without bos and eos. The source is encoded once, its keys/values computed once,
    and each step feeds one token through the cache. (Call model.eval() first if it has dropout.)"""
    check_max_len(model, max_len)
    memory, src_mask = encode_one(model, src_ids)
    cache = model.make_cache()
    out, token = [], bos_id
    for _ in range(max_len):
        token = int(np.argmax(next_log_probs(model, [token], memory, src_mask, cache)[0]))
        if token == eos_id:
            break
        out.append(token)
    return out


def greedy_batch(model: EncoderDecoder, src: mx.array, bos_id: int, eos_id: int, max_len: int) -> list[list[int]]:
    """greedy() for a batch of right-padded sources (B, Ts) at once: the same tokens per row (a row's
    padding is masked), B times fewer steps. Rows that have written eos keep going until all have,
    and their extra tokens are dropped. -> per row, the tokens without bos and eos."""
    check_max_len(model, max_len)
    src_mask = padding_mask(src, model.args.pad_id)
    memory, cache = model.encode(src), model.make_cache()
    rows = src.shape[0]
    out: list[list[int]] = [[] for _ in range(rows)]
    done = np.zeros(rows, dtype=bool)
    last = [bos_id] * rows
    for _ in range(max_len):
        last = np.argmax(next_log_probs(model, last, memory, src_mask, cache), axis=-1).tolist()
        for row, token in enumerate(last):
            if not done[row]:
                done[row] = token == eos_id
                if not done[row]:
                    out[row].append(token)
        if done.all():
            break
    return out


def length_penalty_of(length: int, alpha: float) -> float:
    """GNMT's length normalisation (Wu et al. 2016): ((5 + length) / 6) ** alpha."""
    return ((5 + length) / 6) ** alpha


def beam_search(model: EncoderDecoder, src_ids: list[int], bos_id: int, eos_id: int, max_len: int,
                beam_width: int = 4, length_penalty: float = 0.6) -> list[int]:
    """Search for the likeliest translation, keeping beam_width candidate prefixes instead of one.

    Each step extends every prefix in the beam by every token and keeps the best extensions over
    all of them (by log-prob), as many as the beam holds. An extension by eos leaves the beam as a
    finished translation and the beam narrows by one, so a beam of 1 is greedy decoding, exactly.
    Search ends when the beam is empty or after max_len tokens. The answer: the finished
    translation with the best log-prob / length_penalty_of(its length, alpha); without that
    normalisation (alpha = 0) every token's log-prob < 0 makes short translations win. The paper
    (§6.1) used a beam of 4 and alpha = 0.6. -> the tokens, without bos and eos.

    The beams go through the decoder as one batch with one cache: a step decodes all of them at
    once, and each surviving beam takes over its parent's cached keys and values."""
    check_max_len(model, max_len)
    if beam_width < 1:
        raise MlxgptError(f"beam_width must be at least 1, got {beam_width}")
    memory, src_mask = encode_one(model, src_ids)  # batch 1: broadcast over the beams
    cache = model.make_cache()
    beams: list[list[int]] = [[]]  # the tokens of each prefix after bos
    scores = np.zeros(1)  # their log-probs
    finished: list[tuple[float, list[int], int]] = []  # (log-prob, tokens, length counting eos)
    for _ in range(max_len):
        last = [beam[-1] if beam else bos_id for beam in beams]
        candidates = scores[:, None] + next_log_probs(model, last, memory, src_mask, cache)  # (beams, V)
        room = beam_width - len(finished)
        best = np.argsort(-candidates, axis=None, kind="stable")[:room]  # ties: the lower index, as argmax
        parents, tokens = np.divmod(best, candidates.shape[1])
        kept = []  # (parent, token): the beams that go on
        for parent, token in zip(parents.tolist(), tokens.tolist()):
            if token == eos_id:
                finished.append((float(candidates[parent, token]), beams[parent], len(beams[parent]) + 1))
            else:
                kept.append((parent, token))
        beams = [beams[p] + [t] for p, t in kept]
        scores = np.array([candidates[p, t] for p, t in kept])
        if not beams:
            break
        cache.select(mx.array([p for p, _ in kept]))
    finished += [(float(s), beam, len(beam)) for s, beam in zip(scores, beams)]  # out of room: unended
    return max(finished, key=lambda f: f[0] / length_penalty_of(f[2], length_penalty))[1]


def sequence_log_prob(model: EncoderDecoder, src_ids: list[int], tgt_ids: list[int], bos_id: int) -> float:
    """log p(tgt_ids | src_ids): the sum of each token's log-prob after bos and the ones before it
    (to score a translation: pass its tokens, then eos if it ended)."""
    logits = model(mx.array([src_ids]), mx.array([[bos_id] + tgt_ids[:-1]]))[0].astype(mx.float32)
    log_probs = logits - mx.logsumexp(logits, axis=-1, keepdims=True)  # (Tt, V)
    return float(mx.sum(mx.take_along_axis(log_probs, mx.array(tgt_ids)[:, None], axis=-1)))
