"""The benchmark's timing rule, its device choice and its TF32 switch, without timing anything real.

The timer runs warm-up steps, then timed steps until both a minimum count and a minimum time
have passed (common.keep_timing); it is tested with a fake clock. PyTorch's device follows MLX's
(common.matching_torch_device), a pure function tested with what torch would report. Every child
but the TF32 row's runs with MLX_ENABLE_TF32=0 (processes.child_env).
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from mlxgpt.bench.common import (MAX_TIMED_STEPS, TF32_ENV, TrainResult, keep_timing, matching_torch_device,
                                 time_loop, time_steps)


class FakeClock:
    """A clock that only moves when a step says so."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def stepper(clock: FakeClock, seconds_per_step: float):
    calls: list[int] = []

    def one_step(i: int) -> float:
        calls.append(i)
        clock.now += seconds_per_step
        return 10.0 - i  # the "loss"

    return one_step, calls


def test_keep_timing_needs_both_the_count_and_the_time():
    assert keep_timing(0, 0.0, 5, 2.0)
    assert keep_timing(4, 10.0, 5, 2.0)  # time enough, too few steps
    assert keep_timing(50, 1.9, 5, 2.0)  # steps enough, too little time
    assert not keep_timing(5, 2.0, 5, 2.0)
    assert not keep_timing(5, 0.0, 5, 0.0)  # --min-seconds 0: exactly the count
    assert not keep_timing(MAX_TIMED_STEPS, 0.5, 5, 2.0)  # the safety cap
    assert keep_timing(MAX_TIMED_STEPS, 0.5, MAX_TIMED_STEPS + 3, 0.0)  # ... never below the asked-for count


def test_timer_stops_by_time_when_steps_are_fast():
    clock = FakeClock()
    one_step, calls = stepper(clock, 0.125)  # a power of 2: the fake clock's sums are exact
    result = TrainResult("mlx", "cpu", tokens_per_iter=100)
    time_steps(one_step, 2, 3, 1.0, result, clock=clock)
    assert len(result.step_s) == 8  # 8 x 0.125 s reach the 1 s; 3 steps alone would not
    assert calls == list(range(10)) and len(result.losses) == 10  # warm-up steps are run and their losses kept
    assert result.warmup_steps == 2 and result.first_step_s == 0.125
    assert result.median_s == 0.125 and result.mean_s == 0.125
    row = result.to_dict()
    assert row["timed_steps"] == 8 and row["timed_s"] == 1.0 and row["mean_ms"] == 125


def test_timer_stops_by_count_when_steps_are_slow():
    clock = FakeClock()
    one_step, calls = stepper(clock, 5.0)
    result = TrainResult("torch", "cpu", tokens_per_iter=100)
    time_steps(one_step, 1, 3, 2.0, result, clock=clock)
    assert len(result.step_s) == 3 and len(calls) == 4


def test_timer_respects_its_cap_and_times_only_after_warm_up():
    clock = FakeClock()
    one_step, calls = stepper(clock, 0.0)  # a step that takes no time never reaches min_seconds
    steps = time_loop(one_step, 4, 2, 1.0, clock=clock, max_iters=7)
    assert len(steps) == 4 + 7 and calls == list(range(11))
    assert [value for _, value in steps][:2] == [10.0, 9.0]


@pytest.mark.parametrize("mlx_device, cuda, mps, expected", [
    ("cpu", True, True, "cpu"),  # MLX on the CPU: PyTorch on the CPU, even where it has a GPU
    ("cuda", True, False, "cuda"),
    ("metal", False, True, "mps"),
    ("cuda", False, False, "cpu"),  # a CPU-only PyTorch next to MLX on CUDA: said, not hidden
    ("metal", False, False, "cpu"),
])
def test_torch_device_follows_mlx_device(mlx_device, cuda, mps, expected):
    device, note = matching_torch_device(mlx_device, cuda, mps)
    assert device == expected
    matches = {"cpu": "cpu", "cuda": "cuda", "metal": "mps"}[mlx_device] == device
    assert (note is None) == matches
    if note:
        assert mlx_device in note and "different devices" in note


def test_an_explicit_torch_device_wins_but_a_mismatch_is_noted():
    assert matching_torch_device("cuda", True, False, "cuda") == ("cuda", None)
    device, note = matching_torch_device("cuda", True, False, "cpu")
    assert device == "cpu" and "--torch-device cpu" in note


def test_the_tf32_row_is_skipped_off_cuda_with_a_reason():
    from mlxgpt.bench.runner import tf32_skip_reason

    assert tf32_skip_reason("cuda") is None
    assert "CPU" in tf32_skip_reason("cpu")
    assert "Metal" in tf32_skip_reason("metal") and TF32_ENV in tf32_skip_reason("metal")


def _config():
    from mlxgpt.bench import add_bench_arguments
    from mlxgpt.bench.settings import config_from_args
    from mlxgpt.cli import OneLineParser

    parser = OneLineParser(prog="bench")
    add_bench_arguments(parser)
    flags = ["--no-torch", "--n-layer", "1", "--n-head", "2", "--n-embd", "32", "--block-size", "16",
             "--batch-size", "4", "--iters", "2", "--warmup", "1", "--min-seconds", "0", "--quick"]
    return config_from_args(parser.parse_args(flags))


def test_children_run_without_tf32_and_the_tf32_worker_with_it(monkeypatch, tmp_path):
    """Even when the user's environment turns TF32 on, the parity child gets MLX_ENABLE_TF32=0."""
    from mlxgpt.bench import processes

    monkeypatch.setenv(TF32_ENV, "1")
    seen: dict[str, dict] = {}

    def fake_run(argv, env=None, **kwargs):
        module = argv[2]
        seen[module] = env
        if len(argv) > 4:  # SPEC OUT: answer as the child would
            out = {"mlxgpt.bench.parity": {"ok": True, "summary": "parity ok"},
                   "mlxgpt.bench.mlx_worker": {"training": {}}}[module]
            with open(argv[4], "w", encoding="utf-8") as f:
                json.dump(out, f)
        return SimpleNamespace(returncode=0, stdout="", stderr="")

    monkeypatch.setattr(processes.subprocess, "run", fake_run)
    cfg = _config()
    processes.run_parity(cfg, tmp_path)
    processes.run_mlx_worker(cfg, "mlx-tf32", tmp_path, tf32=True, matmul=False)
    assert seen["mlxgpt.bench.parity"][TF32_ENV] == "0"
    assert seen["mlxgpt.bench.mlx_worker"][TF32_ENV] == "1"
    assert processes.child_env(torch_side=True)[TF32_ENV] == "0"


def test_the_tf32_worker_runs_a_real_mlx_row(tmp_path):
    """The TF32 row's child process, on whatever device MLX has here (on a CPU TF32 changes nothing)."""
    from mlxgpt.bench.processes import run_mlx_worker

    cfg = _config()
    out = run_mlx_worker(cfg, "mlx-tf32", tmp_path, tf32=True, matmul=False)
    assert out["tf32_env"] == "1", out
    row = TrainResult.from_dict(out["training"])
    assert row.ok and row.mode == "mlx-tf32" and len(row.step_s) == 2 and len(row.losses) == 3
    assert row.device == out["device"] and "TF32" in row.parallelism


def test_bench_config_survives_the_trip_to_a_child():
    from mlxgpt.bench.settings import BenchConfig

    cfg = _config()
    again = BenchConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg

