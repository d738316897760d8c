"""Streaming generation: a Python generator of tokens, using the model's KV cache.

    for piece in generate(model, tokenizer, "HERMIONE:", max_new_tokens=200, seed=1):
        print(piece.text, end="", flush=True)

The context window: the model never sees more than block_size tokens. A prompt
longer than that keeps its last block_size tokens. When the window is full the
cache is rebuilt from the newest `keep` tokens (3/4 of a block by default), so
every token is predicted from between `keep` and block_size tokens of context.
`use_cache=False` recomputes the same windows from scratch at every step (the
reference the tests compare against); keep=block_size with use_cache=False is
nanoGPT's sample.py behaviour (crop to the last block_size tokens each step).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Iterator

import mlx.core as mx

from mlxgpt.config import check_seed
from mlxgpt.errors import MlxgptError
from mlxgpt.model import GPT
from mlxgpt.sampling import make_sampler, make_transform
from mlxgpt.tokenizers import Tokenizer


@dataclass
class Generated:
    """One generated token, the text it completed, and the distribution it was drawn from."""

    token: int
    text: str  # newly completed text; "" while a multi-byte character is still incomplete
    logprobs: mx.array  # (V,), after temperature/top-k/top-p/min-p
    tokens_per_s: float  # generation speed so far (prompt processing included)


def default_keep(block_size: int) -> int:
    return max(1, (3 * block_size) // 4)


def check_can_generate(model: GPT) -> None:
    """Refuse a model trained without the causal mask: in training every position could read
    the very token it was asked to predict, so it learned to copy, not to predict."""
    if not model.args.causal:
        raise MlxgptError("this model was trained with --no-causal-mask: every position could see the token it "
                          "had to predict, so it learned to copy it, not to predict it, and cannot generate. "
                          "Train again without --no-causal-mask")


def generate_tokens(model: GPT, prompt_ids: list[int], max_new_tokens: int, *,
                    temperature: float = 0.8, top_k: int | None = None, top_p: float | None = None,
                    min_p: float | None = None, seed: int | None = None, use_cache: bool = True,
                    keep: int | None = None, fast: bool = True) -> Iterator[tuple[int, mx.array]]:
    """Yield (token id, logprobs) pairs, one per new token.

    Like mlx-lm's generate_step, step n+1 is queued with mx.async_eval before
    step n is handed out, so the device works while the caller prints.
    fast=True lets mlxgpt/fast compile the one-token step (same tokens, faster)."""
    if not prompt_ids:
        raise MlxgptError("the prompt is empty: pass --prompt with at least one character")
    check_can_generate(model)
    block_size = model.args.block_size
    keep = default_keep(block_size) if keep is None else max(1, min(keep, block_size))
    transform = make_transform(temperature, top_k, top_p, min_p)
    sampler = make_sampler(temperature)
    check_seed(seed)
    key = mx.random.key(seed if seed is not None else int.from_bytes(os.urandom(4), "little"))
    tokens = list(prompt_ids[-block_size:])
    start = 0  # tokens[start:] is the current context window

    def next_subkey() -> mx.array:
        nonlocal key
        key, subkey = mx.random.split(key)
        return subkey

    def predict(ids: mx.array, cache: list | None, subkey: mx.array) -> tuple[mx.array, mx.array]:
        """The next token and its logprobs after `ids` (1, T), as lazy arrays."""
        logprobs = transform(model(ids, cache)[0, -1].astype(mx.float32))  # sample in float32 whatever --dtype
        return sampler(logprobs, subkey), logprobs

    if use_cache and fast:
        from mlxgpt.fast.decoding import compiled_decoding

        cache, decode = compiled_decoding(model, predict)
    else:
        cache = model.make_cache() if use_cache else None

        def decode(token: mx.array, subkey: mx.array) -> tuple[mx.array, mx.array]:
            return predict(token.reshape(1, 1), cache, subkey)

    def step(token: mx.array) -> tuple[mx.array, mx.array]:
        """One new token through the cache."""
        return decode(token, next_subkey())

    def forward_window() -> tuple[mx.array, mx.array]:
        """The whole current window: the prompt, a rebuilt window, or (no cache) every step.
        A cache is emptied first, so that the window fills it again."""
        for layer in cache or ():
            layer.reset()
        return predict(mx.array(tokens[start:], dtype=mx.int32)[None], cache, next_subkey())

    token, logprobs = forward_window()
    mx.async_eval(token, logprobs)
    for n in range(max_new_tokens):
        if use_cache and n + 1 < max_new_tokens and len(tokens) + 1 - start <= block_size:
            # Queue the next step on the still-unknown token before reading this one:
            # Python builds step n+1's graph while the device computes step n.
            next_token, next_logprobs = step(token)
            mx.async_eval(next_token, next_logprobs)
        else:
            next_token = None
        token_id = token.item()
        tokens.append(token_id)
        yield token_id, logprobs
        if n + 1 == max_new_tokens:
            return
        if next_token is None:  # no cache, or the window is full
            if len(tokens) - start > block_size:  # slide the window (a cache is rebuilt from it)
                start = len(tokens) - keep
            next_token, next_logprobs = forward_window()
            mx.async_eval(next_token, next_logprobs)
        token, logprobs = next_token, next_logprobs


def generate(model: GPT, tokenizer: Tokenizer, prompt: str, max_new_tokens: int = 500, *,
             temperature: float = 0.8, top_k: int | None = None, top_p: float | None = None,
             min_p: float | None = None, seed: int | None = None, stop: str | None = None,
             use_cache: bool = True, keep: int | None = None, fast: bool = True) -> Iterator[Generated]:
    """Stream text from a prompt; stops after max_new_tokens or once `stop` appears.
    fast=False is the textbook path only (--plain): no mlxgpt/fast speed tricks."""
    was_training = model.training
    model.eval()  # no dropout while sampling
    decoder = tokenizer.decoder()
    text_so_far = ""
    started = time.perf_counter()
    try:
        stream = generate_tokens(model, tokenizer.encode(prompt), max_new_tokens, temperature=temperature,
                                 top_k=top_k, top_p=top_p, min_p=min_p, seed=seed, use_cache=use_cache, keep=keep,
                                 fast=fast)
        for count, (token, logprobs) in enumerate(stream, start=1):
            piece = decoder.add(token)
            if count == max_new_tokens:
                piece += decoder.flush()  # bytes still held back can no longer be completed
            rate = count / max(time.perf_counter() - started, 1e-9)
            if stop and stop in text_so_far + piece:
                end = (text_so_far + piece).index(stop) + len(stop)
                yield Generated(token, (text_so_far + piece)[len(text_so_far):end], logprobs, rate)
                return
            text_so_far += piece
            yield Generated(token, piece, logprobs, rate)
    finally:
        model.train(was_training)
