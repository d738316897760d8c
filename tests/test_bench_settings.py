"""The benchmark can be asked for every preset train.py knows (it once raised KeyError for cpu-speedrun)."""

from __future__ import annotations

import pytest

from mlxgpt.bench import add_bench_arguments
from mlxgpt.bench.settings import ITERS, QUICK_ITERS, config_from_args
from mlxgpt.cli import OneLineParser
from mlxgpt.config import PRESETS


@pytest.mark.parametrize("preset", sorted(PRESETS))
@pytest.mark.parametrize("quick", [False, True])
def test_every_preset_has_a_benchmark_configuration(preset, quick):
    assert set(ITERS) == set(QUICK_ITERS) == set(PRESETS)
    parser = OneLineParser(prog="bench")
    add_bench_arguments(parser)
    cfg = config_from_args(parser.parse_args(["--preset", preset, "--no-torch", *(["--quick"] if quick else [])]))
    assert cfg.preset == preset and cfg.iters == (QUICK_ITERS if quick else ITERS)[preset][1]
    assert cfg.model.n_embd == PRESETS[preset].model["n_embd"]
