"""MLX's CPU kernel compiler as mlxgpt sets it up (fast/jit.py): the wrapper, the precompiled
header, the first-run note. Each test runs in its own process with its own empty kernel cache."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from conftest import REPO_ROOT

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux") or shutil.which("g++") is None,
                                reason="the compiler set-up is for MLX's Linux CPU backend, with g++")

PROGRAM = """
import json, os, sys
from mlxgpt.fast import jit
jit.setup_jit_flags()
import mlx.core as mx
before = jit.first_compile()
f = mx.compile(lambda x: mx.erf(x) * 2 + 1)
y = f(mx.arange(-4, 4, 0.25)).tolist()
print(json.dumps({"before": before, "after": jit.first_compile(), "y": y, "tmpdir": os.environ.get("TMPDIR"),
                  "path": os.environ["PATH"].split(os.pathsep)[0]}))
"""


def run_program(tmp_path, **env):
    import os

    result = subprocess.run([sys.executable, "-c", PROGRAM], cwd=REPO_ROOT, capture_output=True, text=True,
                            env={**os.environ, "MLXGPT_JIT_CACHE": str(tmp_path / "jit"), **env}, timeout=300)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_first_run_is_known_and_the_precompiled_header_gives_the_same_numbers(tmp_path):
    tuned = run_program(tmp_path)
    assert tuned["before"] is True and tuned["after"] is False  # the cache was empty, then it held the kernel
    assert tuned["path"].startswith(str(tmp_path / "jit")) and tuned["tmpdir"].startswith(str(tmp_path / "jit"))
    headers = list((tmp_path / "jit").glob("*/pch/mlx/backend/cpu/compiled_preamble.h.gch"))
    assert len(headers) == 1 and headers[0].stat().st_size > 0
    wrapper = next((tmp_path / "jit").glob("*/bin/g++")).read_text()
    assert f'-I"{headers[0].parents[3]}"' in wrapper  # put before MLX's own -I, so g++ finds the .gch first
    again = run_program(tmp_path)
    assert again["before"] is False  # a second run finds its kernels
    untuned = run_program(tmp_path, MLXGPT_JIT_FLAGS="0")
    assert untuned["before"] is False and untuned["path"] != tuned["path"]  # no wrapper, nothing to announce
    assert tuned["y"] == untuned["y"]  # the flags and the header change speed, not results


def test_the_first_run_says_it_is_compiling():
    from mlxgpt.ui.format import COMPILING_NOTE
    from mlxgpt.ui.plain import format_event
    from mlxgpt.ui.dashboard.layout import header
    from mlxgpt.ui.dashboard.state import DashboardState
    from test_ui import started

    event = started()
    assert COMPILING_NOTE not in format_event(event)
    event.compiling_kernels = True
    assert COMPILING_NOTE in format_event(event)
    state = DashboardState()
    state.update(event)
    assert COMPILING_NOTE in str(header(state).columns[0]._cells[0])
    # the whole screen, as it is redrawn: the note goes once the first step is done
    from rich.console import Console
    from test_ui import make

    from mlxgpt.events import StepLogged

    from mlxgpt.ui.dashboard.chart import ChartCache
    from mlxgpt.ui.dashboard.layout import build_layout

    store, cache = {}, ChartCache()

    def screen() -> str:
        console = Console(width=160, height=40, record=True, file=open(os.devnull, "w"))
        console.print(build_layout(state, cache, 160, 40, store=store))
        return console.export_text()

    assert COMPILING_NOTE in screen()
    state.update(make(StepLogged, iter=1, max_iters=300, train_loss=4.2, lr=1e-5, grad_norm=1.0, ms_per_iter=50.0,
                      tokens_per_s=15_000.0, elapsed_s=9.0, active_memory_mb=9.0, peak_memory_mb=71.0))
    assert COMPILING_NOTE not in screen()
