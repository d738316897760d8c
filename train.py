#!/usr/bin/env python3
"""Train a GPT on a text file: `python train.py --data shakespeare`. See --help."""

import sys

from mlxgpt.cli import train_main

if __name__ == "__main__":
    sys.exit(train_main())
