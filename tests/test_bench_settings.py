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


def _parse(*flags: str):
    parser = OneLineParser(prog="bench")
    add_bench_arguments(parser)
    return config_from_args(parser.parse_args(["--preset", "baby", "--no-torch", *flags]))


def test_dtype_and_min_seconds_flags():
    from mlxgpt.bench.settings import MIN_SECONDS, QUICK_MIN_SECONDS

    cfg = _parse()
    assert cfg.dtype == "float32" and cfg.min_seconds == MIN_SECONDS and cfg.dtype_warning is None
    assert _parse("--quick").min_seconds == QUICK_MIN_SECONDS < MIN_SECONDS
    cfg = _parse("--dtype", "bfloat16", "--min-seconds", "0.25", "--iters", "7")
    assert cfg.dtype == "bfloat16" and cfg.min_seconds == 0.25 and cfg.iters == 7


def test_bfloat16_on_a_cpu_warns_in_one_line():
    from mlxgpt.fast.device import on_gpu

    warning = _parse("--dtype", "bfloat16").dtype_warning
    if on_gpu():
        assert warning is None
    else:
        assert "30x" in warning and "\n" not in warning


def test_bad_precision_and_timing_flags_are_refused():
    from mlxgpt.errors import MlxgptError

    parser = OneLineParser(prog="bench")
    add_bench_arguments(parser)
    with pytest.raises(SystemExit):  # argparse: not one of the choices
        parser.parse_args(["--dtype", "float16"])
    with pytest.raises(MlxgptError, match="min-seconds"):
        _parse("--min-seconds", "-1")
