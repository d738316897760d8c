"""The encoder-decoder trains through the GPT's own loop (training.train): the same compiled step,
evaluation, samples, checkpoints and resume state, fed by PairsDataset. Real number words (num2words)."""

from __future__ import annotations

import json

import mlx.core as mx
import numpy as np
import pytest

from mlxgpt.checkpoint import load, load_training_state
from mlxgpt.config import TrainArgs
from mlxgpt.events import CheckpointSaved, EvalDone, SampleGenerated
from mlxgpt.seq2seq.data import PairsDataset, PairVocabulary, needed_block_size, number_pairs, split_numbers
from mlxgpt.seq2seq.model import EncoderDecoder, Seq2SeqArgs, greedy
from mlxgpt.training import Run, build_optimizer, train

pytest.importorskip("num2words", reason="needs the translate extra (pip install -e '.[translate]')")


def test_the_loop_trains_an_encoder_decoder_on_number_words(tmp_path):
    train_numbers, val_numbers = split_numbers(1, 299, 0.1, seed=0)
    train_pairs, val_pairs = number_pairs(train_numbers), number_pairs(val_numbers)
    vocab = PairVocabulary.from_pairs(train_pairs + val_pairs)
    block_size = needed_block_size(train_pairs + val_pairs)
    data = PairsDataset.from_pairs(train_pairs, val_pairs, vocab, block_size)
    assert data.train[0].shape == (len(train_pairs), 2, block_size) and data.target_tokens("val") > len(val_pairs)
    mx.random.seed(0)
    model = EncoderDecoder(Seq2SeqArgs(vocab_size=vocab.vocab_size, n_encoder_layers=1, n_decoder_layers=1, n_head=2,
                                       n_embd=32, block_size=block_size))
    args = TrainArgs(batch_size=32, max_iters=120, eval_interval=60, eval_iters=4, log_interval=60, lr=3e-3,
                     min_lr=3e-4, warmup_iters=10, sample_prompt="ninety-seven", sample_tokens=1)

    def sample(run: Run) -> str:  # the eval-time sample: the source translated greedily
        ids = greedy(run.model, vocab.encode(run.args.sample_prompt), vocab.bos_id, vocab.eos_id, block_size)
        return vocab.decode(ids)

    events = []
    run = Run(model=model, optimizer=build_optimizer(args), tokenizer=vocab, data=data, args=args, out_dir=tmp_path,
              config_extra={"preset": "numbers", "data": None, "data_format": "pairs"}, sample=sample)
    finished = train(run, events.append)

    evals = [e for e in events if isinstance(e, EvalDone)]
    assert [e.iter for e in evals] == [0, 60, 120] and finished.reason == "completed"
    # below the entropy of the target letters on their own: it reads the source (seen: 4.18 -> 0.79)
    counts = np.unique(list("".join(t + "\n" for _, t in train_pairs)), return_counts=True)[1]
    letters = -(counts / counts.sum() * np.log(counts / counts.sum())).sum()
    assert evals[-1].val_loss < letters - 1.0 < evals[0].val_loss
    samples = [e for e in events if isinstance(e, SampleGenerated)]
    assert len(samples) == 3 and all(e.prompt == "ninety-seven" and isinstance(e.text, str) for e in samples)
    assert {e.which for e in events if isinstance(e, CheckpointSaved)} == {"best", "latest"}

    config = json.loads((tmp_path / "latest" / "config.json").read_text())
    assert config["architecture"] == "encoder-decoder" and config["tokenizer"]["kind"] == "pairs"
    state, optimizer_state = load_training_state(tmp_path / "latest")
    assert state["iter"] == 120 and optimizer_state
    loaded, loaded_vocab = load(tmp_path, architecture="encoder-decoder")
    x, _ = data.sampler("val", 8, block_size, seed=0).next()
    assert np.allclose(np.array(model(mx.array(x[0]))), np.array(loaded(mx.array(x[0]))), atol=1e-6)
    assert loaded_vocab.chars == vocab.chars
