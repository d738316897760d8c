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
