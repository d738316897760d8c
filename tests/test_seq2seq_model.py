"""The encoder-decoder (mlxgpt/seq2seq/model.py): what each side may see, padding, the cached
decoder, greedy and beam search, and that it learns a small task through cross-attention."""

from __future__ import annotations

import itertools

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np
import pytest
from conftest import TINY_MODEL

from mlxgpt.errors import MlxgptError
from mlxgpt.seq2seq.model import (EncoderDecoder, Seq2SeqArgs, beam_search, greedy, loss, padding_mask,
                                  sequence_log_prob)

VOCAB, PAD, BOS, EOS = 20, 0, 1, 2  # the symbols are 3 .. VOCAB - 1
TINY = dict(n_encoder_layers=TINY_MODEL["n_layer"], n_decoder_layers=TINY_MODEL["n_layer"],
            n_head=TINY_MODEL["n_head"], n_embd=TINY_MODEL["n_embd"], block_size=TINY_MODEL["block_size"])


def tiny_seq2seq(seed: int = 0, **overrides) -> EncoderDecoder:
    mx.random.seed(seed)
    model = EncoderDecoder(Seq2SeqArgs(**{"vocab_size": VOCAB, "pad_id": PAD, **TINY, **overrides}))
    model.eval()
    return model


def symbols(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    return rng.integers(3, VOCAB, size=shape)


def padded(rows: list[list[int]], width: int) -> mx.array:
    """Right-pad each row with PAD to `width`."""
    return mx.array([row + [PAD] * (width - len(row)) for row in rows])


def reverse_batch(rng: np.random.Generator, n: int, lo: int = 3, hi: int = 6) -> tuple[mx.array, mx.array, mx.array]:
    """The reverse task: source s (lo..hi symbols), target input bos + reversed(s), target output reversed(s) + eos."""
    sources = [symbols(rng, (int(rng.integers(lo, hi + 1)),)).tolist() for _ in range(n)]
    return (padded(sources, hi), padded([[BOS] + s[::-1] for s in sources], hi + 1),
            padded([s[::-1] + [EOS] for s in sources], hi + 1))


def test_shapes():
    model = tiny_seq2seq()
    rng = np.random.default_rng(0)
    src, tgt = mx.array(symbols(rng, (2, 7))), mx.array(symbols(rng, (2, 5)))
    memory = model.encode(src)
    assert memory.shape == (2, 7, 32)
    assert model.decode(tgt, memory, padding_mask(src, PAD)).shape == (2, 5, VOCAB)
    assert model(src, tgt).shape == (2, 5, VOCAB)
    maps = model.cross_attention_weights(src, tgt)
    assert len(maps) == 2 and all(m.shape == (2, 2, 5, 7) for m in maps)


@pytest.mark.parametrize("pos_embedding", ["sinusoidal", "learned"])
def test_the_decoder_never_sees_future_targets(pos_embedding):
    model = tiny_seq2seq(pos_embedding=pos_embedding)
    rng = np.random.default_rng(1)
    src, tgt = mx.array(symbols(rng, (2, 8))), symbols(rng, (2, 10))
    base = np.array(model(src, mx.array(tgt)))
    for j in (1, 5, 9):
        changed = tgt.copy()
        changed[:, j] = 3 + (changed[:, j] - 3 + 1) % (VOCAB - 3)
        out = np.array(model(src, mx.array(changed)))
        np.testing.assert_allclose(out[:, :j], base[:, :j], rtol=0, atol=1e-6)
        assert np.abs(out[:, j] - base[:, j]).max() > 1e-3  # ...while position j sees its new token


def test_the_encoder_sees_the_whole_source():
    model = tiny_seq2seq()
    src = symbols(np.random.default_rng(2), (2, 8))
    changed = src.copy()
    changed[:, -1] = 3 + (changed[:, -1] - 3 + 1) % (VOCAB - 3)
    first, first_changed = np.array(model.encode(mx.array(src)))[:, 0], np.array(model.encode(mx.array(changed)))[:, 0]
    assert np.abs(first - first_changed).max(axis=-1).min() > 1e-3  # in every row


def test_source_padding_is_never_attended_to():
    model = tiny_seq2seq()
    rng = np.random.default_rng(3)
    sources = [symbols(rng, (5,)).tolist(), symbols(rng, (3,)).tolist()]
    tgt = mx.array(symbols(rng, (2, 6)))
    memory, logits = model.encode(padded(sources, 5)), np.array(model(padded(sources, 5), tgt))
    more_memory, more_logits = model.encode(padded(sources, 12)), np.array(model(padded(sources, 12), tgt))
    np.testing.assert_allclose(more_logits, logits, rtol=0, atol=1e-5)
    for row, source in enumerate(sources):  # the real positions' memory is unchanged too
        np.testing.assert_allclose(np.array(more_memory[row, :len(source)]), np.array(memory[row, :len(source)]),
                                   rtol=0, atol=1e-5)


def test_cross_attention_rows_sum_to_one_over_the_real_source_and_are_zero_on_padding():
    model = tiny_seq2seq()
    rng = np.random.default_rng(4)
    src = padded([symbols(rng, (6,)).tolist(), symbols(rng, (2,)).tolist()], 6)
    for weights in model.cross_attention_weights(src, mx.array(symbols(rng, (2, 4)))):
        w = np.array(weights)  # (B, nh, Tt, Ts)
        np.testing.assert_allclose(w.sum(axis=-1), 1.0, atol=1e-5)
        assert (w[1, :, :, 2:] == 0).all() and (w[1, :, :, :2] > 0).all()


def test_target_padding_changes_no_real_position_and_is_left_out_of_the_loss():
    model = tiny_seq2seq()
    src, tgt_in, tgt_out = reverse_batch(np.random.default_rng(5), 4)
    wider_in, wider_out = [mx.pad(t, [(0, 0), (0, 5)], constant_values=PAD) for t in (tgt_in, tgt_out)]
    real = np.array(tgt_out) != PAD
    logits, wider_logits = np.array(model(src, tgt_in)), np.array(model(src, wider_in))
    np.testing.assert_allclose(wider_logits[:, :tgt_in.shape[1]][real], logits[real], rtol=0, atol=1e-5)
    # the loss is the mean over the real targets alone, whatever the padding, PAD or -1
    logp = np.array(nn.log_softmax(mx.array(logits), axis=-1))
    expected = -np.mean(np.take_along_axis(logp, np.array(tgt_out)[..., None], axis=-1)[..., 0][real])
    assert loss(model, src, tgt_in, tgt_out).item() == pytest.approx(expected, abs=1e-5)
    assert loss(model, src, wider_in, wider_out).item() == pytest.approx(expected, abs=1e-5)
    minus_one = mx.where(tgt_out == PAD, -1, tgt_out)
    assert loss(model, src, tgt_in, minus_one).item() == pytest.approx(expected, abs=1e-5)


@pytest.mark.parametrize("chunks", [[1] * 9, [4, 1, 3, 1]])
def test_cached_decoding_equals_the_full_decode(chunks):
    """Token by token (or a few at a time), with the memory's keys/values computed once."""
    model = tiny_seq2seq()
    rng = np.random.default_rng(6)
    src = padded([symbols(rng, (7,)).tolist(), symbols(rng, (4,)).tolist()], 7)
    tgt = mx.array(symbols(rng, (2, sum(chunks))))
    memory, src_mask = model.encode(src), padding_mask(src, PAD)
    full = np.array(model.decode(tgt, memory, src_mask))
    cache, start, pieces = model.make_cache(), 0, []
    for size in chunks:
        pieces.append(np.array(model.decode(tgt[:, start:start + size], memory, src_mask, cache)))
        start += size
    assert cache.offset == tgt.shape[1]
    np.testing.assert_allclose(np.concatenate(pieces, axis=1), full, rtol=0, atol=1e-5)


def score(model: EncoderDecoder, src: list[int], tokens: list[int], max_len: int) -> float:
    """A decoded translation's log-prob: its tokens, then eos unless it ran out of room."""
    return sequence_log_prob(model, src, tokens + [EOS] if len(tokens) < max_len else tokens, BOS)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_beam_of_one_is_greedy_and_wider_beams_score_at_least_as_well(seed):
    model = tiny_seq2seq(seed)
    rng = np.random.default_rng(seed)
    for length in (3, 6):
        src, max_len = symbols(rng, (length,)).tolist(), 8
        best = greedy(model, src, BOS, EOS, max_len)
        assert len(best) <= max_len and EOS not in best
        assert beam_search(model, src, BOS, EOS, max_len, beam_width=1) == best
        assert beam_search(model, src, BOS, EOS, max_len, beam_width=1, length_penalty=0.0) == best
        wide = beam_search(model, src, BOS, EOS, max_len, beam_width=4, length_penalty=0.0)
        assert score(model, src, wide, max_len) >= score(model, src, best, max_len) - 1e-5


@pytest.mark.parametrize("length_penalty", [0.0, 0.6])
def test_a_beam_wide_enough_to_keep_everything_finds_the_best_translation(length_penalty):
    """Every translation of up to 3 tokens over a 6-token vocabulary fits in a beam of 200,
    so the search is exhaustive: it must return what scoring every one of them finds. (The
    beams' cached keys/values are reordered at each step: a mix-up would show here.)"""
    model = tiny_seq2seq(vocab_size=6)
    src, max_len, tokens = [3, 4, 5, 3], 3, [t for t in range(6) if t not in (EOS,)]
    candidates = [list(c) + [EOS] for n in range(max_len) for c in itertools.product(tokens, repeat=n)]
    candidates += [list(c) for c in itertools.product(tokens, repeat=max_len)]  # ran out of room
    penalty = lambda n: ((5 + n) / 6) ** length_penalty  # noqa: E731
    best = max(candidates, key=lambda c: sequence_log_prob(model, src, c, BOS) / penalty(len(c)))
    found = beam_search(model, src, BOS, EOS, max_len, beam_width=200, length_penalty=length_penalty)
    assert found == [t for t in best if t != EOS]


def test_it_learns_to_reverse_through_cross_attention():
    """A few dozen Adam steps on reversing 3-6 symbols: the loss falls below half its start, and
    the model reads the source: given other sentences' sources, its loss is far worse."""
    model = tiny_seq2seq()
    model.train()
    rng = np.random.default_rng(7)
    held_out = reverse_batch(np.random.default_rng(99), 256)
    start = loss(model, *held_out).item()
    optimizer = optim.Adam(learning_rate=3e-3)
    loss_and_grad = nn.value_and_grad(model, loss)
    for _ in range(150):
        _, grads = loss_and_grad(model, *reverse_batch(rng, 32))
        optimizer.update(model, grads)
        mx.eval(model.parameters(), optimizer.state)
    model.eval()
    end = loss(model, *held_out).item()
    src, tgt_in, tgt_out = held_out
    wrong_source = loss(model, mx.array(np.roll(np.array(src), 1, axis=0)), tgt_in, tgt_out).item()
    assert end < start / 2, (start, end)
    assert wrong_source > 1.5 * end, (end, wrong_source)


def test_bad_shapes_and_calls_are_one_line_errors():
    with pytest.raises(MlxgptError, match="pos_embedding"):
        Seq2SeqArgs(pos_embedding="rope")
    with pytest.raises(MlxgptError, match="pad_id"):
        Seq2SeqArgs(vocab_size=10, pad_id=10)
    with pytest.raises(MlxgptError, match="divisible"):
        Seq2SeqArgs(n_embd=30, n_head=4)
    with pytest.raises(MlxgptError, match="n_decoder_layers"):
        Seq2SeqArgs(n_decoder_layers=0)
    model = tiny_seq2seq()
    with pytest.raises(MlxgptError, match="empty"):
        greedy(model, [PAD, PAD], BOS, EOS, 5)
    with pytest.raises(MlxgptError, match="max_len"):
        beam_search(model, [3, 4], BOS, EOS, 17)


def test_batched_greedy_equals_greedy_row_by_row():
    from mlxgpt.seq2seq.model import greedy, greedy_batch

    mx.random.seed(3)
    args = Seq2SeqArgs(vocab_size=20, n_encoder_layers=1, n_decoder_layers=2, n_head=2, n_embd=32, block_size=12)
    model = EncoderDecoder(args)
    sources = [[5, 6, 7], [8, 9, 10, 11, 12, 13], [4]]
    src = mx.array([s + [args.pad_id] * (12 - len(s)) for s in sources])
    batched = greedy_batch(model, src, bos_id=1, eos_id=2, max_len=12)
    assert batched == [greedy(model, s, 1, 2, 12) for s in sources]
    assert any(len(row) > 0 for row in batched)
