"""scripts/gpu_suite.sh, the GPU suite, checked without a GPU: its syntax, and a dry run that records
every step (installs, devices, tests, the benchmark at float32 and bfloat16, training) and writes summary.md."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from conftest import REPO_ROOT

SCRIPT = REPO_ROOT / "scripts" / "gpu_suite.sh"

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="the suite is a bash script")


def test_the_suite_parses():
    proc = subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


def test_a_dry_run_records_every_step_and_writes_a_summary(tmp_path):
    out = tmp_path / "suite"
    env = {k: v for k, v in os.environ.items() if not k.startswith("GPU_SUITE_")}  # its defaults, even inside the suite
    env.update(GPU_SUITE_DRY_RUN="1", GPU_SUITE_VENV=str(tmp_path / "venv"), PYTHON=sys.executable)
    proc = subprocess.run(["bash", str(SCRIPT), str(out)], capture_output=True, text=True, timeout=120, env=env,
                          cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    rows = [line.split("\t") for line in (out / "steps.tsv").read_text().splitlines()[1:]]
    steps = [name for name, _, _ in rows]
    assert steps == ["venv", "pip-upgrade", "install", "nvidia-smi", "devices", "pytest",
                     "bench-baby-float32", "bench-baby-bfloat16", "bench-sc-float32", "bench-sc-bfloat16", "train"]
    assert all(status == "not run (dry run)" for _, status, _ in rows)
    logs = {name: (out / "logs" / f"{name}.log").read_text() for name in steps}
    assert "pip install -e .[cuda,bench,test]" in logs["install"] or "mlx[cuda12]" in logs["install"]
    assert "--dtype float32" in logs["bench-sc-float32"] and "--dtype bfloat16" in logs["bench-sc-bfloat16"]
    assert f"--json {out}/bench-baby-float32.json" in logs["bench-baby-float32"]
    assert "train.py --data shakespeare --preset shakespeare-char --no-ui --out" in logs["train"]
    summary = (out / "summary.md").read_text()
    assert "| bench-sc-bfloat16 | not run (dry run) |" in summary and "no finished run" in summary
