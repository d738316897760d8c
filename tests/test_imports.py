"""Importing mlxgpt changes nothing around it: no environment variable, no subprocess.

A library user (`import mlxgpt; mlxgpt.load(...)`) or a notebook keeps its PATH and
TMPDIR; only mlxgpt's own commands set up MLX's kernel compiler (fast/jit.py)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from conftest import REPO_ROOT

CHILD = r"""
import json, os, pkgutil, subprocess, sys, importlib

def refuse(*args, **kwargs):
    raise AssertionError(f"a subprocess was started on import: {args[:1]}")

subprocess.Popen.__init__ = refuse
before = dict(os.environ)
import mlxgpt
names = ["mlxgpt"]
for module in pkgutil.walk_packages(mlxgpt.__path__, "mlxgpt."):
    if module.name.startswith("mlxgpt.bench.torch") or module.name.endswith("__main__"):
        continue  # the PyTorch mirror needs the optional torch; a __main__ runs its command
    importlib.import_module(module.name)
    names.append(module.name)
after = dict(os.environ)
changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
print(json.dumps({"modules": names, "changed": changed}))
"""


def test_importing_every_module_leaves_the_environment_alone():
    result = subprocess.run([sys.executable, "-c", CHILD], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["changed"] == [], report["changed"]
    assert {"mlxgpt.model", "mlxgpt.training", "mlxgpt.tokenizers", "mlxgpt.fast.jit", "mlxgpt.cli"} <= set(
        report["modules"])


@pytest.mark.skipif(not sys.platform.startswith("linux") or shutil.which("g++") is None,
                    reason="the compiler flags apply to MLX's Linux CPU backend, which compiles with g++")
def test_the_commands_do_set_up_the_kernel_compiler(tmp_path):
    """The other half of the bargain: a command (here one that fails at once) sets up the g++ wrapper."""
    env = {**os.environ, "MLXGPT_JIT_CACHE": str(tmp_path)}
    result = subprocess.run([sys.executable, "generate.py", "--checkpoint", str(tmp_path / "none")], cwd=REPO_ROOT,
                            capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 1 and "does not exist" in result.stderr
    wrappers = list(tmp_path.glob("*/bin/g++"))
    assert len(wrappers) == 1 and "-march=native" in wrappers[0].read_text()
