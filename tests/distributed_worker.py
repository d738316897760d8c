"""Run under `mlx.launch -n 2` by test_distributed.py (not a test module itself).

Each rank trains a tiny model for a few steps on its own batches and saves its
parameters; rank 0 also trains a single-process twin on the union of both ranks'
batches, which data parallelism must reproduce.
"""

import sys
from pathlib import Path

import mlxgpt  # noqa: F401  (sets up BLAS before mlx.core)
import mlx.core as mx
import numpy as np
from mlx.utils import tree_flatten

from mlxgpt.config import ModelArgs, TrainArgs
from mlxgpt.data import BatchSampler
from mlxgpt.distributed import SINGLE, init_world
from mlxgpt.model import GPT
from mlxgpt.training import build_optimizer, make_train_step

STEPS, BATCH, BLOCK, VOCAB = 4, 4, 16, 11


def train(world, batches) -> dict:
    mx.random.seed(0)
    model = GPT(ModelArgs(vocab_size=VOCAB, block_size=BLOCK, n_layer=2, n_head=2, n_embd=32))
    optimizer = build_optimizer(TrainArgs(lr=1e-2, warmup_iters=1, max_iters=STEPS))
    step, state = make_train_step(model, optimizer, grad_clip=1.0, world=world)
    for x, y in batches:
        loss, _ = step(mx.array(x), mx.array(y))
        mx.eval(state, loss)
    return {k: np.array(v) for k, v in tree_flatten(model.parameters())}


def main(out: Path) -> None:
    world = init_world()
    tokens = np.random.default_rng(0).integers(0, VOCAB, 2000).astype(np.int32)
    samplers = [BatchSampler(tokens, BATCH, BLOCK, seed=1, rank=r) for r in range(world.size)]
    own = [samplers[world.rank].batch(i) for i in range(STEPS)]
    np.savez(out / f"rank-{world.rank}.npz", **train(world, own))
    if world.rank == 0:
        union = []
        for i in range(STEPS):
            parts = [s.batch(i) for s in samplers]
            union.append((np.concatenate([p[0] for p in parts], axis=1), np.concatenate([p[1] for p in parts], axis=1)))
        np.savez(out / "single.npz", **train(SINGLE, union))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
