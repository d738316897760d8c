#!/usr/bin/env python3
"""Train a GPT on a text file: `python train.py --data shakespeare`. See --help."""

import sys

from mlxgpt.fast.device import pin_rank_to_gpu

pin_rank_to_gpu()  # a rank of `mlxgpt launch` on a multi-GPU machine takes its own GPU, before MLX starts CUDA

from mlxgpt.cli import train_main

if __name__ == "__main__":
    sys.exit(train_main())
