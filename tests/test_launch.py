"""`mlxgpt launch`'s command line and rank detection: no launcher or GPU needed."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize("backend, ranks, hostfile, expected_head", [
    (None, 2, None, ["mlx.launch", "--env"]),  # mlx.launch chooses: ring on CPUs, NCCL on CUDA, or the hostfile's
    ("mpi", 2, None, ["mlx.launch", "--backend", "mpi", "--env"]),
    ("nccl", None, "hosts.json", ["mlx.launch", "--backend", "nccl", "--env"]),
])
def test_the_launch_command_names_a_backend_only_when_asked(backend, ranks, hostfile, expected_head):
    from mlxgpt.distributed import STATUS_DIR_ENV, launch_command

    command = launch_command("mlx.launch", ranks, hostfile, backend, None, "/tmp/s", ["python", "train.py"])
    assert command[:len(expected_head)] == expected_head
    assert f"{STATUS_DIR_ENV}=/tmp/s" in command
    where = ["-n", str(ranks)] if ranks else ["--hostfile", hostfile]
    assert command[-5:] == [*where, "--", "python", "train.py"]


@pytest.mark.parametrize("variable", ["MLX_RANK", "OMPI_COMM_WORLD_RANK", "PMI_RANK"])
def test_a_rank_started_by_mpirun_knows_it_was_launched(monkeypatch, variable):
    from mlxgpt.distributed import RANK_VARIABLES, launched, launched_rank

    for name in RANK_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    assert not launched()
    monkeypatch.setenv(variable, "3")
    assert launched() and launched_rank() == "3"


def test_ranks_on_one_machine_are_told_so():
    from mlxgpt.distributed import launch_command
    from mlxgpt.fast.device import ONE_MACHINE_ENV

    local = launch_command("mlx.launch", 2, None, None, None, "/tmp/s", ["python", "train.py"])
    assert f"{ONE_MACHINE_ENV}=1" in local
    remote = launch_command("mlx.launch", None, "hosts.json", None, None, "/tmp/s", ["python", "train.py"])
    assert f"{ONE_MACHINE_ENV}=1" not in remote  # global ranks are not this machine's ranks there


@pytest.mark.parametrize("environ, gpus, expected", [
    ({"MLX_RANK": "1", "MLXGPT_ONE_MACHINE": "1"}, 4, "1"),  # ring, -n 4 on one machine: rank r takes GPU r
    ({"MLX_RANK": "5", "MLXGPT_ONE_MACHINE": "1"}, 4, "1"),  # more ranks than GPUs: they share, round robin
    ({"MLX_RANK": "1"}, 4, None),  # a hostfile run: the global rank says nothing about this machine
    ({"OMPI_COMM_WORLD_RANK": "9", "OMPI_COMM_WORLD_LOCAL_RANK": "1"}, 2, "1"),  # mpirun: its local rank
    ({"MPI_LOCALRANKID": "3"}, 8, "3"),
    ({"MLX_RANK": "1", "MLXGPT_ONE_MACHINE": "1", "CUDA_VISIBLE_DEVICES": "1"}, 4, None),  # NCCL set it already
    ({"MLX_RANK": "1", "MLXGPT_ONE_MACHINE": "1"}, 1, None),  # one GPU: nothing to choose
    ({}, 4, None),  # not launched
])
def test_each_rank_takes_its_own_gpu(environ, gpus, expected):
    from mlxgpt.fast.device import rank_gpu

    assert rank_gpu(environ, gpus) == expected


def test_pinning_a_gpu_changes_nothing_without_mlx_cuda(monkeypatch):
    import os

    from mlxgpt.fast.device import pin_rank_to_gpu

    monkeypatch.setenv("MLX_RANK", "1")
    monkeypatch.setenv("MLXGPT_ONE_MACHINE", "1")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    pin_rank_to_gpu()  # this machine has MLX's CPU backend only
    assert "CUDA_VISIBLE_DEVICES" not in os.environ
