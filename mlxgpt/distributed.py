"""Data parallelism on MLX's own engine: `mlx.launch` starts the ranks, `mx.distributed`
averages gradients. A plain `python train.py` is a world of one rank and behaves as
if none of this existed.

    mlxgpt launch -n 2 -- --data shakespeare              # 2 ranks on this machine
    mlxgpt launch --hostfile hosts.json -- --data ...      # across machines (ring backend)

`launch` wraps `mlx.launch`, which exits 0 even when a rank fails: each rank
records its exit status, and launch fails loudly unless every rank succeeded.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import mlx.core as mx

from mlxgpt.errors import MlxgptError
from mlxgpt.fast.device import ONE_MACHINE_ENV

STATUS_DIR_ENV = "MLXGPT_STATUS_DIR"


@dataclass(frozen=True)
class World:
    """This process's place among the training processes."""

    group: Any  # mx.distributed.Group
    rank: int
    size: int

    @property
    def is_main(self) -> bool:
        """Rank 0 alone writes checkpoints, metrics.jsonl and the UI."""
        return self.rank == 0


SINGLE = World(None, 0, 1)  # a plain single-process run


# The rank variable each launcher sets: mlx.launch's own (ring, NCCL, JACCL), then MPI's (mlx.launch
# --backend mpi runs mpirun, which sets only its own), so that no rank mistakes itself for a lone run.
RANK_VARIABLES = ("MLX_RANK", "OMPI_COMM_WORLD_RANK", "PMIX_RANK", "PMI_RANK")


def launched_rank() -> str | None:
    """This process's rank as its launcher set it, or None for a plain run."""
    return next((os.environ[name] for name in RANK_VARIABLES if name in os.environ), None)


def launched() -> bool:
    """True when started by mlx.launch or mpirun (one of RANK_VARIABLES is set)."""
    return launched_rank() is not None


def init_world() -> World:
    if not launched():
        return SINGLE
    try:
        group = mx.distributed.init(strict=True)
    except RuntimeError as exc:
        raise MlxgptError(f"could not join the distributed run ({exc}); check the hostfile's IP addresses") from None
    return World(group, group.rank(), group.size())


def mean_across(world: World, values: list[float]) -> list[float]:
    """Average a few numbers over all ranks (eval losses)."""
    if world.size == 1:
        return values
    total = mx.distributed.all_sum(mx.array(values, dtype=mx.float32), group=world.group)
    return [float(v) / world.size for v in total.tolist()]


def check_same_across_ranks(world: World, value: int, what: str) -> None:
    """Fail clearly if ranks disagree (e.g. they read different data files)."""
    if world.size == 1:
        return
    gathered = mx.distributed.all_gather(mx.array([value % (1 << 31)], dtype=mx.int32), group=world.group)
    if len(set(gathered.tolist())) != 1:
        raise MlxgptError(f"the ranks disagree on {what}: give every machine the same --data file and flags")


# ---------------------------------------------------------------- per-rank exit status


def record_exit_status(code: int, message: str = "") -> None:
    """Called by each rank on exit when launched by `mlxgpt launch`."""
    directory = os.environ.get(STATUS_DIR_ENV)
    if not directory or not launched():
        return
    path = Path(directory) / f"rank-{launched_rank()}.json"
    try:
        path.write_text(json.dumps({"code": code, "message": message}))
    except OSError:
        pass  # the status dir lives on the launching machine; a remote rank may not see it


_NODE_EXIT = re.compile(r"rank (\d+) exited with code (-?\d+)")


def failed_ranks(size: int, status_dir: Path, launcher_output: str) -> list[str]:
    """Descriptions of ranks that failed, from their status files and mlx.launch's warnings."""
    failures: dict[int, str] = {}
    for match in _NODE_EXIT.finditer(launcher_output):
        rank, code = int(match.group(1)), int(match.group(2))
        if code != 0:
            failures[rank] = f"rank {rank} exited with code {code}"
    local_statuses = list(status_dir.glob("rank-*.json"))
    for path in local_statuses:
        status = json.loads(path.read_text())
        rank = int(path.stem.split("-")[1])
        if status["code"] != 0:
            failures[rank] = f"rank {rank} failed ({status['message'] or 'exit ' + str(status['code'])})"
    if not failures and local_statuses and len(local_statuses) < size and not _NODE_EXIT.search(launcher_output):
        missing = sorted(set(range(size)) - {int(p.stem.split("-")[1]) for p in local_statuses})
        failures.update({r: f"rank {r} did not report an exit status" for r in missing})
    return [failures[r] for r in sorted(failures)]


def find_launcher() -> str | None:
    """mlx.launch on PATH, or installed beside this Python (a virtual environment that is not activated)."""
    beside = os.pathsep.join([sysconfig.get_path("scripts"), str(Path(sys.executable).parent)])
    return shutil.which("mlx.launch") or shutil.which("mlx.launch", path=beside)


def launch_command(launcher: str, ranks: int | None, hostfile: str | None, backend: str | None, port: int | None,
                   status_dir: str, program: Sequence[str]) -> list[str]:
    """mlx.launch's command line. No --backend unless the user named one: mlx.launch then picks its own
    (ring over TCP on CPUs and Macs, NCCL on CUDA GPUs) or the hostfile's."""
    command = [launcher, *(["--backend", backend] if backend else []), "--env", f"{STATUS_DIR_ENV}={status_dir}"]
    # all ranks on this machine: each may take its own GPU (fast/device.py, rank_gpu)
    command += ["--env", f"{ONE_MACHINE_ENV}=1", "-n", str(ranks)] if ranks is not None else ["--hostfile", str(hostfile)]
    command += ["--starting-port", str(port)] if port is not None else []
    return [*command, "--", *program]


def launch(ranks: int | None, hostfile: str | None, train_args: Sequence[str], backend: str | None = None,
           port: int | None = None) -> int:
    """Run train.py under mlx.launch; exit non-zero if any rank failed."""
    launcher = find_launcher()
    if launcher is None:
        raise MlxgptError("mlx.launch was not found: it comes with MLX (`pip install -r requirements.txt`); "
                          "is this environment active?")
    if (ranks is None) == (hostfile is None):
        raise MlxgptError("pass either -n RANKS (this machine) or --hostfile FILE (several machines)")
    if ranks is not None and ranks < 1:
        raise MlxgptError("-n must be at least 1")
    size = ranks if ranks is not None else _hostfile_size(hostfile)
    train_script = Path(__file__).resolve().parent.parent / "train.py"
    program = [sys.executable, str(train_script)] if train_script.exists() else [sys.executable, "-m", "mlxgpt", "train"]
    with tempfile.TemporaryDirectory(prefix="mlxgpt-ranks-") as status_dir:
        command = launch_command(launcher, ranks, hostfile, backend, port, status_dir, [*program, *train_args])
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
        output = []
        assert process.stdout is not None
        for line in process.stdout:  # pass the ranks' output through as it comes
            sys.stdout.write(line)
            sys.stdout.flush()
            output.append(line)
        code = process.wait()
        failures = failed_ranks(size, Path(status_dir), "".join(output))
    if failures:
        raise MlxgptError("distributed run failed: " + "; ".join(failures))
    if code != 0:
        raise MlxgptError(f"mlx.launch exited with code {code}")
    return 0


def _hostfile_size(hostfile: str) -> int:
    try:
        hosts = json.loads(Path(hostfile).read_text())
        if not isinstance(hosts, list) or not hosts:
            raise ValueError("not a non-empty list")
        return len(hosts)  # one rank per host entry
    except (OSError, ValueError):
        raise MlxgptError(f"cannot read hostfile {hostfile}: it should be mlx.launch's JSON host list") from None
