"""Samplers: each filter keeps exactly the right tokens (hand-computed examples),
temperature 0 is argmax, and seeded sampling is reproducible."""

from __future__ import annotations

import math

import mlx.core as mx
import numpy as np
import pytest

from mlxgpt.errors import MlxgptError
from mlxgpt.sampling import (MIN_TEMPERATURE, apply_min_p, apply_temperature, apply_top_k, apply_top_p,
                             check_sampling_args, log_softmax, make_sampler, make_transform)


def logprobs_of(probs) -> mx.array:
    return mx.array(np.log(np.asarray(probs, dtype=np.float32)))


def kept(logprobs: mx.array) -> set[int]:
    values = np.array(logprobs)
    assert values.ndim == 1
    return {int(i) for i in np.flatnonzero(np.isfinite(values))}


# ---------------------------------------------------------------- top-k


def test_top_k_keeps_the_k_most_likely():
    logits = mx.array([1.0, 3.0, 2.0, 5.0, 4.0])
    assert kept(apply_top_k(logits, 1)) == {3}
    assert kept(apply_top_k(logits, 2)) == {3, 4}
    assert kept(apply_top_k(logits, 4)) == {1, 2, 3, 4}
    assert kept(apply_top_k(logits, 5)) == kept(apply_top_k(logits, 50)) == {0, 1, 2, 3, 4}


def test_top_k_keeps_values_unchanged():
    logits = mx.array([1.0, 3.0, 2.0, 5.0, 4.0])
    out = np.array(apply_top_k(logits, 3))
    np.testing.assert_array_equal(out[[1, 3, 4]], [3.0, 5.0, 4.0])
    assert np.isneginf(out[[0, 2]]).all()


def test_top_k_with_ties():
    # ties inside the kept set: both kept
    assert kept(apply_top_k(mx.array([1.0, 2.0, 2.0, 0.0]), 2)) == {1, 2}
    # a tie across the boundary: exactly k tokens survive, all from the top
    survivors = kept(apply_top_k(mx.array([0.0, 2.0, 1.0, 2.0, 2.0]), 2))
    assert len(survivors) == 2 and survivors <= {1, 3, 4}


def test_top_k_batched_rows_are_independent():
    logits = mx.array([[1.0, 3.0, 2.0], [9.0, 8.0, 7.0]])
    out = np.isfinite(np.array(apply_top_k(logits, 1)))
    np.testing.assert_array_equal(out, [[False, True, False], [True, False, False]])


# ---------------------------------------------------------------- top-p


PROBS = [0.1, 0.5, 0.05, 0.3, 0.05]  # sorted: 0.5 (1), 0.3 (3), 0.1 (0), 0.05 (2), 0.05 (4)


@pytest.mark.parametrize("p, expected", [
    (0.45, {1}),           # 0.5 alone already reaches 0.45
    (0.55, {1, 3}),        # 0.5 < 0.55; 0.5 + 0.3 reaches it
    (0.79, {1, 3}),
    (0.85, {1, 3, 0}),     # 0.8 < 0.85; 0.9 reaches it
    (0.999, {0, 1, 2, 3, 4}),
    (1.0, {0, 1, 2, 3, 4}),
])
def test_top_p_keeps_the_smallest_set_reaching_p(p, expected):
    assert kept(apply_top_p(logprobs_of(PROBS), p)) == expected
    assert kept(make_transform(1.0, top_p=p)(logprobs_of(PROBS))) == expected


def test_top_p_always_keeps_the_top_token():
    """Even when p is smaller than the most likely token's probability."""
    assert kept(apply_top_p(logprobs_of(PROBS), 1e-6)) == {1}
    assert len(kept(apply_top_p(logprobs_of([0.2] * 5), 0.01))) == 1


def test_top_p_with_ties():
    # the two tied 0.3s sit inside the nucleus: both kept, the 0.2s dropped
    assert kept(apply_top_p(logprobs_of([0.2, 0.3, 0.3, 0.2]), 0.55)) == {1, 2}
    # a tie across the boundary: 0.6 < 0.65, so exactly one 0.2 joins the two 0.3s
    survivors = kept(apply_top_p(logprobs_of([0.2, 0.3, 0.3, 0.2]), 0.65))
    assert len(survivors) == 3 and {1, 2} <= survivors


def test_top_p_works_on_unnormalised_logits_through_the_transform():
    logits = mx.array(np.log(np.asarray(PROBS, dtype=np.float32)) + 7.0)  # same distribution, shifted
    out = make_transform(1.0, top_p=0.55)(logits)
    assert kept(out) == {1, 3}
    np.testing.assert_allclose(np.exp(np.array(out))[[1, 3]], [0.5 / 0.8, 0.3 / 0.8], rtol=1e-5)


# ---------------------------------------------------------------- min-p


@pytest.mark.parametrize("min_p, expected", [
    (0.05, {0, 1, 2, 3, 4}),  # threshold 0.025
    (0.15, {0, 1, 3}),        # threshold 0.075: the 0.05s go
    (0.5, {1, 3}),            # threshold 0.25
    (0.9, {1}),               # threshold 0.45
    (1.0, {1}),               # only the maximum itself
])
def test_min_p_keeps_tokens_at_least_min_p_times_the_top(min_p, expected):
    assert kept(apply_min_p(logprobs_of(PROBS), min_p)) == expected


def test_min_p_with_ties():
    assert kept(apply_min_p(logprobs_of([0.4, 0.4, 0.2]), 1.0)) == {0, 1}  # tied maxima both stay
    assert kept(apply_min_p(logprobs_of([0.1, 0.4, 0.1, 0.4]), 0.5)) == {1, 3}
    assert kept(apply_min_p(logprobs_of([0.1, 0.4, 0.1, 0.4]), 0.2)) == {0, 1, 2, 3}


def test_min_p_zero_keeps_everything():
    assert kept(make_transform(1.0, min_p=0.0)(logprobs_of(PROBS))) == {0, 1, 2, 3, 4}


# ---------------------------------------------------------------- temperature and composition


def test_temperature_divides_the_logits():
    logits = mx.array([1.0, 2.0, 4.0])
    expected = np.array(log_softmax(logits / 2.0))
    np.testing.assert_allclose(np.array(apply_temperature(logits, 2.0)), expected, atol=1e-6)
    np.testing.assert_allclose(np.array(make_transform(2.0)(logits)), expected, atol=1e-6)
    sharp = np.exp(np.array(make_transform(0.5)(logits)))
    flat = np.exp(np.array(make_transform(2.0)(logits)))
    assert sharp[2] > np.exp(np.array(log_softmax(logits)))[2] > flat[2]


def test_temperature_comes_before_top_p():
    """Hugging Face's order: at T=0.25 the 0.5 token alone holds 86% of the mass."""
    probs = [0.5, 0.3, 0.2]
    assert kept(make_transform(1.0, top_p=0.6)(logprobs_of(probs))) == {0, 1}
    assert kept(make_transform(0.25, top_p=0.6)(logprobs_of(probs))) == {0}


def test_filters_compose_and_renormalise():
    transform = make_transform(1.0, top_k=3, top_p=0.75)
    out = transform(logprobs_of(PROBS))
    # top-k keeps {1, 3, 0} (mass 0.9, renormalised to 5/9, 3/9, 1/9); top-p 0.75 then keeps {1, 3}
    assert kept(out) == {1, 3}
    np.testing.assert_allclose(np.exp(np.array(out))[[1, 3]], [0.625, 0.375], rtol=1e-5)
    assert np.exp(np.array(out)).sum() == pytest.approx(1.0, abs=1e-6)


def test_temperature_zero_is_argmax_without_dividing_by_zero():
    logits = mx.array([[0.3, 2.5, -1.0, 2.4], [5.0, 1.0, 0.0, 4.9]])
    transform = make_transform(0.0)
    logprobs = transform(logits)
    assert np.isfinite(np.array(logprobs)).all()
    sampler = make_sampler(0.0)
    for seed in range(3):  # the key is ignored: greedy is deterministic
        np.testing.assert_array_equal(np.array(sampler(logprobs, mx.random.key(seed))), [1, 0])


def test_sampler_draws_only_kept_tokens_and_roughly_in_proportion():
    logprobs = make_transform(1.0, top_k=2)(logprobs_of(PROBS))  # {1: 0.625, 3: 0.375}
    draws = np.array(make_sampler(1.0)(mx.broadcast_to(logprobs, (4000, 5)), mx.random.key(0)))
    assert set(np.unique(draws)) == {1, 3}
    assert abs((draws == 1).mean() - 0.625) < 0.04


def test_seeded_sampling_is_reproducible():
    logprobs = mx.broadcast_to(make_transform(0.8)(mx.array(np.linspace(0, 1, 10, dtype=np.float32))), (64, 10))
    sampler = make_sampler(0.8)
    first = np.array(sampler(logprobs, mx.random.key(7)))
    again = np.array(sampler(logprobs, mx.random.key(7)))
    other = np.array(sampler(logprobs, mx.random.key(8)))
    np.testing.assert_array_equal(first, again)
    assert (first != other).any()


@pytest.mark.parametrize("kwargs, flag", [
    (dict(temperature=-0.1), "--temperature"),
    (dict(top_k=0), "--top-k"),
    (dict(top_p=0.0), "--top-p"),
    (dict(top_p=1.5), "--top-p"),
    (dict(min_p=-0.1), "--min-p"),
    (dict(min_p=1.1), "--min-p"),
])
def test_bad_sampling_values_are_refused(kwargs, flag):
    args = dict(temperature=1.0, top_k=None, top_p=None, min_p=None) | kwargs
    with pytest.raises(MlxgptError, match=flag):
        check_sampling_args(**args)
    with pytest.raises(MlxgptError, match=flag):
        make_transform(**args)


@pytest.mark.parametrize("name", ["temperature", "top_p", "min_p"])
@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_sampling_values_are_refused(name, value):
    """NaN passes any check written as `value < bound` (every comparison with it is false): a NaN
    temperature sampled nothing but newlines."""
    args = dict(temperature=1.0, top_k=None, top_p=None, min_p=None) | {name: value}
    with pytest.raises(MlxgptError, match=rf"^--{name.replace('_', '-')} must be a finite number, got {value}$"):
        check_sampling_args(**args)


def test_tiny_temperatures_are_refused_and_the_smallest_allowed_one_is_greedy_not_nan():
    logits = mx.array([2.0, 1.9, -3.0])
    logprobs = np.array(make_transform(MIN_TEMPERATURE)(logits))
    assert not np.isnan(logprobs).any() and logprobs[0] == 0  # all the mass on the top token
    for temperature in (MIN_TEMPERATURE / 2, 1e-40, 5e-324):  # 1e-40 is 0 or subnormal in float32: NaNs
        with pytest.raises(MlxgptError, match=r"^--temperature must be 0 \(greedy\) or at least 1e-06"):
            check_sampling_args(temperature, None, None, None)


def test_log_softmax_normalises():
    out = np.array(log_softmax(mx.array([1.0, 2.0, 3.0])))
    assert np.exp(out).sum() == pytest.approx(1.0, abs=1e-6)
    assert out[2] - out[0] == pytest.approx(2.0, abs=1e-6)
    assert math.isclose(float(np.exp(out[1])), math.e**2 / (math.e + math.e**2 + math.e**3), rel_tol=1e-5)
