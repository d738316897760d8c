"""Samplers as small composable functions (in the style of mlx-lm's sample_utils).

Each filter maps log-probabilities (..., V) to log-probabilities with removed
tokens set to -inf. `make_transform` chains temperature -> top-k -> top-p ->
min-p (Hugging Face's order); `make_sampler` draws from the result, or takes
the argmax when temperature is 0 (greedy: no division by zero).
"""

from __future__ import annotations

import math
from typing import Callable

import mlx.core as mx

from mlxgpt.errors import MlxgptError

Transform = Callable[[mx.array], mx.array]
Sampler = Callable[[mx.array, mx.array], mx.array]


def log_softmax(logits: mx.array) -> mx.array:
    return logits - mx.logsumexp(logits, axis=-1, keepdims=True)


def apply_temperature(logprobs: mx.array, temperature: float) -> mx.array:
    """T<1 sharpens the distribution, T>1 flattens it. Dividing log-probabilities by T
    and renormalising is dividing the logits by T: log_softmax(z) = z - logsumexp(z), and
    the constant logsumexp(z) / T disappears in the final log_softmax."""
    return log_softmax(logprobs / temperature)


def apply_top_k(logprobs: mx.array, k: int) -> mx.array:
    """Keep exactly the k most likely tokens."""
    if k >= logprobs.shape[-1]:
        return logprobs
    drop = mx.argpartition(-logprobs, kth=k - 1, axis=-1)[..., k:]
    return mx.put_along_axis(logprobs, drop, mx.array(-mx.inf, logprobs.dtype), axis=-1)


def apply_top_p(logprobs: mx.array, p: float) -> mx.array:
    """Nucleus sampling: keep the smallest set of most likely tokens whose mass reaches p."""
    order = mx.argsort(-logprobs, axis=-1)
    sorted_probs = mx.exp(mx.take_along_axis(logprobs, order, axis=-1))
    mass_before = mx.cumsum(sorted_probs, axis=-1) - sorted_probs  # mass of strictly more likely tokens
    keep_sorted = mass_before < p  # the top token always has mass_before 0
    keep = mx.put_along_axis(mx.zeros(logprobs.shape, mx.bool_), order, keep_sorted, axis=-1)
    return mx.where(keep, logprobs, -mx.inf)


def apply_min_p(logprobs: mx.array, min_p: float) -> mx.array:
    """Keep tokens at least min_p times as likely as the most likely one."""
    threshold = mx.max(logprobs, axis=-1, keepdims=True) + mx.log(mx.array(min_p))
    return mx.where(logprobs >= threshold, logprobs, -mx.inf)


MIN_TEMPERATURE = 1e-6  # below it a temperature is greedy in all but name, and near 1e-38 float32 turns it into NaNs


def check_sampling_args(temperature: float, top_k: int | None, top_p: float | None, min_p: float | None) -> None:
    """Refuse values that would sample garbage without an error (NaN, infinities, tiny temperatures)."""
    for flag, value in (("--temperature", temperature), ("--top-p", top_p), ("--min-p", min_p)):
        if value is not None and not math.isfinite(value):
            raise MlxgptError(f"{flag} must be a finite number, got {value}")
    if temperature < 0:
        raise MlxgptError(f"--temperature must be >= 0 (0 = greedy), got {temperature}")
    if 0 < temperature < MIN_TEMPERATURE:
        raise MlxgptError(f"--temperature must be 0 (greedy) or at least {MIN_TEMPERATURE:g}, got {temperature:g}")
    if top_k is not None and top_k < 1:
        raise MlxgptError(f"--top-k must be >= 1, got {top_k}")
    if top_p is not None and not 0 < top_p <= 1:
        raise MlxgptError(f"--top-p must be in (0, 1], got {top_p}")
    if min_p is not None and not 0 <= min_p <= 1:
        raise MlxgptError(f"--min-p must be in [0, 1], got {min_p}")


def make_transform(temperature: float = 1.0, top_k: int | None = None,
                   top_p: float | None = None, min_p: float | None = None) -> Transform:
    """logits -> the normalised log-probabilities that tokens are actually drawn from.

    Temperature 0 (greedy) shows the temperature-1 distribution; the sampler takes its argmax.
    """
    check_sampling_args(temperature, top_k, top_p, min_p)
    steps: list[Transform] = []
    if temperature not in (0, 1):
        steps.append(lambda lp: apply_temperature(lp, temperature))
    if top_k is not None:
        steps.append(lambda lp: apply_top_k(lp, top_k))
    if top_p is not None and top_p < 1:
        steps.append(lambda lp: apply_top_p(lp, top_p))
    if min_p:
        steps.append(lambda lp: apply_min_p(lp, min_p))

    def transform(logits: mx.array) -> mx.array:
        logprobs = log_softmax(logits.astype(mx.float32))
        for step in steps:
            logprobs = step(logprobs)
        return log_softmax(logprobs)  # renormalise what the filters kept

    return transform


def make_sampler(temperature: float = 1.0) -> Sampler:
    """(logprobs, key) -> token ids. Greedy argmax at temperature 0.

    Note: mx.random.categorical takes (log-)logits, not probabilities."""
    if temperature == 0:
        return lambda logprobs, key: mx.argmax(logprobs, axis=-1)
    return lambda logprobs, key: mx.random.categorical(logprobs, key=key)
