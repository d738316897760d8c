"""The flags that more than one command takes, each defined once.

cli.py (train, generate, eval), bench/, inspect/ and the experiments add these
to their parsers, so a flag has one name, type and default everywhere; where a
flag means something slightly different to a command, only its help says so.
Imports nothing heavy, so every --help stays instant.
"""

from __future__ import annotations

import argparse

from mlxgpt.config import PRESETS

# what add_argument is called on: a parser, an argument group or a mutually exclusive group
Flags = argparse._ActionsContainer


def add_data_argument(g: Flags, help: str, required: bool = False) -> None:
    g.add_argument("--data", required=required, help=help)


def add_checkpoint_argument(g: Flags) -> None:
    g.add_argument("--checkpoint", metavar="DIR", help="run directory (its best checkpoint) or checkpoint "
                                                       "directory (default: the most recent run under out/)")


def add_preset_argument(g: Flags, help: str = "starting configuration (default: shakespeare-char on a GPU, "
                                              "baby on a CPU)", default: str | None = None) -> None:
    g.add_argument("--preset", choices=sorted(PRESETS), default=default, help=help)


def add_model_shape_arguments(g: Flags) -> None:
    """The model-shape flags (default None: the preset's)."""
    g.add_argument("--n-layer", type=int, help="transformer blocks")
    g.add_argument("--n-head", type=int, help="attention heads per block")
    g.add_argument("--n-embd", type=int, help="embedding width (divisible by --n-head)")
    g.add_argument("--block-size", type=int, help="context length in tokens")
    g.add_argument("--dropout", type=float, help="dropout probability during training")
    g.add_argument("--bias", action=argparse.BooleanOptionalAction, default=None, help="biases in Linear/LayerNorm")


def add_batch_size_argument(g: Flags, help: str = "sequences per micro-batch", default: int | None = None) -> None:
    g.add_argument("--batch-size", type=int, default=default, help=help)


def add_seed_argument(g: Flags, help: str, default: int | None = None) -> None:
    g.add_argument("--seed", type=int, default=default, help=help)


def add_cpu_streams_argument(g: Flags) -> None:
    g.add_argument("--cpu-streams", type=int, help="CPU only: split each batch over this many concurrent MLX "
                                                   "streams (default: one per core, at most 4)")


def add_plain_argument(g: Flags) -> None:
    g.add_argument("--plain", action="store_true",
                   help="the textbook path only: none of mlxgpt/fast's speed tricks (CPU streams, compiled decoding, "
                        "fused attention); same results, for reading, checking and comparing")


DTYPE_CHOICES = ("auto", "float32", "bfloat16", "float16")


def add_dtype_argument(g: Flags, default: str | None = None) -> None:
    g.add_argument("--dtype", choices=DTYPE_CHOICES, default=default,
                   help="precision of the model's arithmetic: auto (the default) is bfloat16 on a GPU and float32 on "
                        "a CPU, where MLX's half precision is ~30x slower. Training keeps float32 weights, optimizer "
                        "state and loss either way (mixed precision)")


def add_sampling_arguments(p: Flags, temperature: float) -> None:
    """--temperature, --top-k, --top-p and --min-p, for generate and sample."""
    p.add_argument("--temperature", type=float, default=temperature,
                   help="0 = greedy (argmax); <1 sharper, >1 flatter")
    p.add_argument("--top-k", type=int, help="sample only from the k most likely tokens")
    p.add_argument("--top-p", type=float, help="sample from the smallest set with this much probability")
    p.add_argument("--min-p", type=float, help="drop tokens less likely than min-p x the most likely")
