#!/usr/bin/env bash
# The GPU suite: mlxgpt on a Linux machine with an NVIDIA GPU, in about 10 minutes plus the installs
# (every step has a time cap: at most ~25 minutes however slow the machine).
#
#   bash scripts/gpu_suite.sh [OUT_DIR]          # default OUT_DIR: ./gpu-suite-out
#
# Run from anywhere; it works in the repository that holds it. It needs internet (PyPI) for the
# installs. Steps, each with its own time cap; a step that fails or times out is recorded and the
# suite carries on with the next:
#   1. a venv with this project and MLX's CUDA backend (pip install -e '.[cuda,bench,test]'; PyPI's
#      default Linux torch wheel is a CUDA build)
#   2. nvidia-smi, MLX's default device, PyTorch's CUDA
#   3. python -m pytest -q
#   4. the MLX-vs-PyTorch benchmark, --preset baby and shakespeare-char: float32 (on a CUDA GPU that
#      run has the true-float32 rows, TF32 off, and the TF32 rows) and bfloat16
#   5. a shakespeare-char training run to a val loss (train.py), its final val loss, training
#      seconds and peak memory
# Everything lands in OUT_DIR: logs/<step>.log, the benchmarks' JSON, train/metrics.jsonl,
# steps.tsv (step, exit status, seconds) and summary.md.
#
# Settings (environment variables):
#   GPU_SUITE_SKIP_INSTALL=1   no venv, no installs: use $PYTHON (default python3) as it is
#   GPU_SUITE_VENV=DIR         where the venv goes (default ${TMPDIR:-/tmp}/mlxgpt-gpu-suite-venv; reused)
#   GPU_SUITE_MLX_EXTRA=cuda13 MLX's CUDA 13 wheels instead of CUDA 12 (pyproject's extras)
#   GPU_SUITE_TORCH_INDEX=URL  install torch from this index (e.g. https://download.pytorch.org/whl/cu128)
#   GPU_SUITE_QUICK=1          short everything (no cold start, a small 40-step training run): checks
#                              the suite's own logic, e.g. on a CPU machine with GPU_SUITE_PRESETS=baby
#   GPU_SUITE_PRESETS="baby"   the benchmark's presets (default "baby shakespeare-char"; "": none)
#   GPU_SUITE_PYTEST_ARGS=...  what pytest runs (default: the whole suite)
#   GPU_SUITE_PYTEST_CAP=S, GPU_SUITE_BENCH_CAP=S, GPU_SUITE_TRAIN_CAP=S: time caps in seconds
#   GPU_SUITE_TRAIN_ITERS=N    train.py --max-iters (default 2000; the lr schedule decays over them)
#   GPU_SUITE_TRAIN_BUDGET=S   train.py --time-budget, a cap (default 150)
#   GPU_SUITE_DRY_RUN=1        print and record each step's command without running it

set -u
set -o pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="${1:-./gpu-suite-out}"
mkdir -p "$OUT/logs" || { echo "gpu_suite: cannot create $OUT" >&2; exit 2; }
OUT="$(cd "$OUT" && pwd)"
cd "$REPO" || exit 2

QUICK="${GPU_SUITE_QUICK:-0}"
DRY="${GPU_SUITE_DRY_RUN:-0}"
PRESETS="${GPU_SUITE_PRESETS-baby shakespeare-char}"  # set but empty: no benchmark
PYTEST_CAP="${GPU_SUITE_PYTEST_CAP:-150}"
BENCH_CAP="${GPU_SUITE_BENCH_CAP:-240}"
TRAIN_CAP="${GPU_SUITE_TRAIN_CAP:-240}"
TRAIN_BUDGET="${GPU_SUITE_TRAIN_BUDGET:-150}"
TRAIN_ITERS="${GPU_SUITE_TRAIN_ITERS:-2000}"
STEPS="$OUT/steps.tsv"
printf 'step\tstatus\tseconds\n' > "$STEPS"
SUITE_START=$(date +%s)

# step NAME CAP_SECONDS COMMAND...: run it with its output in logs/NAME.log (and on the screen),
# record its exit status (124: over the cap) and seconds. Never stops the suite.
step() {
    local name="$1" cap="$2"
    shift 2
    local log="$OUT/logs/$name.log" start rc
    echo "== [$name] $*" | tee "$log"
    start=$(date +%s)
    if [ "$DRY" = 1 ]; then
        rc=0
    else
        timeout --kill-after=20 "$cap" "$@" 2>&1 | tee -a "$log"
        rc=${PIPESTATUS[0]}
    fi
    local seconds=$(( $(date +%s) - start ))
    local status="ok"
    if [ "$DRY" = 1 ]; then
        status="not run (dry run)"
    elif [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
        status="timed out after ${cap} s"
    elif [ "$rc" != 0 ]; then
        status="failed (exit $rc)"
    fi
    printf '%s\t%s\t%s\n' "$name" "$status" "$seconds" >> "$STEPS"
    echo "== [$name] $status, ${seconds} s"
    return 0
}

# ---------------------------------------------------------------- 1. environment and installs

PY="${PYTHON:-python3}"
if [ "${GPU_SUITE_SKIP_INSTALL:-0}" = 1 ]; then
    echo "gpu_suite: GPU_SUITE_SKIP_INSTALL=1: using $PY as it is"
else
    VENV="${GPU_SUITE_VENV:-${TMPDIR:-/tmp}/mlxgpt-gpu-suite-venv}"
    MLX_EXTRA="${GPU_SUITE_MLX_EXTRA:-cuda}"
    if [ -x "$VENV/bin/python" ]; then
        echo "gpu_suite: reusing the venv $VENV"
    else
        step venv 300 "$PY" -m venv "$VENV"
    fi
    PY="$VENV/bin/python"
    step pip-upgrade 300 "$PY" -m pip install --upgrade pip
    if [ -n "${GPU_SUITE_TORCH_INDEX:-}" ]; then
        step install-torch 900 "$PY" -m pip install torch --index-url "$GPU_SUITE_TORCH_INDEX"
    fi
    if grep -Eq "^${MLX_EXTRA} *= *\[" pyproject.toml; then
        step install 900 "$PY" -m pip install -e ".[${MLX_EXTRA},bench,test]"
    else  # an older checkout without the extra: MLX's CUDA wheel by name
        wheel="mlx[cuda12]"
        [ "$MLX_EXTRA" = cuda13 ] && wheel="mlx[cuda13]"
        step install 900 "$PY" -m pip install -e ".[bench,test]" "${wheel}>=0.32,<0.33"
    fi
fi

# ---------------------------------------------------------------- 2. what this machine is

step nvidia-smi 60 nvidia-smi
step devices 300 "$PY" - <<'EOF'
import json, platform, sys
info = {"python": sys.version.split()[0], "machine": platform.machine()}
try:
    import mlx.core as mx
    from mlxgpt.fast.device import device_name
    info.update(mlx=mx.__version__, mlx_default_device=str(mx.default_device()), mlx_device=device_name())
    a = mx.random.normal((256, 256))
    mx.eval(a @ a)  # a first kernel on that device
    info["mlx_matmul"] = "ok"
except Exception as exc:
    info["mlx_error"] = f"{type(exc).__name__}: {exc}"
try:
    import torch
    info.update(torch=torch.__version__, torch_cuda_build=torch.version.cuda,
                torch_cuda_available=torch.cuda.is_available(),
                torch_gpu=torch.cuda.get_device_name() if torch.cuda.is_available() else None)
except Exception as exc:
    info["torch_error"] = f"{type(exc).__name__}: {exc}"
print(json.dumps(info, indent=1))
EOF
if [ "$DRY" != 1 ]; then
    sed -n '/^{/,/^}/p' "$OUT/logs/devices.log" > "$OUT/devices.json" 2>/dev/null || true
fi

# ---------------------------------------------------------------- 3. the tests

# shellcheck disable=SC2086  # GPU_SUITE_PYTEST_ARGS is a list of words on purpose
step pytest "$PYTEST_CAP" "$PY" -m pytest -q -p no:cacheprovider ${GPU_SUITE_PYTEST_ARGS:-}

# ---------------------------------------------------------------- 4. the benchmark

# --quick: 1 s matmul probes and no empty-JIT-cache cold start (an empty torch.compile cache takes
# minutes); 3 warm-up steps, then timed steps for at least 1 s (hundreds of steps on a GPU).
BENCH_FLAGS=(--quick --warmup 3 --min-seconds 1)
if [ "$QUICK" = 1 ]; then
    BENCH_FLAGS=(--quick --no-cold-start --gen-tokens 50)
fi
for preset in $PRESETS; do
    short="$preset"
    [ "$preset" = shakespeare-char ] && short="sc"
    # float32: the comparable rows (TF32 off on both sides) and, on a CUDA GPU, the TF32 rows
    step "bench-$short-float32" "$BENCH_CAP" "$PY" -m mlxgpt.bench --preset "$preset" --dtype float32 \
        "${BENCH_FLAGS[@]}" --json "$OUT/bench-$short-float32.json"
    # bfloat16: speed only (parity is float32); generation and cold start are the float32 run's, and
    # MLX uncompiled (slow, and the same computation) is left out
    step "bench-$short-bfloat16" "$BENCH_CAP" "$PY" -m mlxgpt.bench --preset "$preset" --dtype bfloat16 \
        "${BENCH_FLAGS[@]}" --modes mlx,mlx-plain,torch,torch-compile --no-cold-start --gen-tokens 0 \
        --json "$OUT/bench-$short-bfloat16.json"
done

# ---------------------------------------------------------------- 5. training to a val loss

TRAIN_DIR="$OUT/train"
rm -rf "$TRAIN_DIR"
TRAIN_FLAGS=(--max-iters "$TRAIN_ITERS" --time-budget "$TRAIN_BUDGET")
if [ "$QUICK" = 1 ]; then  # a shrunken model: a shakespeare-char step takes 10-30 s on a small CPU
    TRAIN_FLAGS=(--n-layer 2 --n-head 2 --n-embd 64 --block-size 64 --batch-size 8 --max-iters 40
                 --eval-interval 20 --eval-iters 4 --sample-tokens 0)
fi
step train "$TRAIN_CAP" "$PY" train.py --data shakespeare --preset shakespeare-char --no-ui --out "$TRAIN_DIR" \
    "${TRAIN_FLAGS[@]}"

# ---------------------------------------------------------------- summary.md

SUITE_SECONDS=$(( $(date +%s) - SUITE_START ))
SUMMARY_PY="$PY"
command -v "$SUMMARY_PY" > /dev/null 2>&1 || SUMMARY_PY="${PYTHON:-python3}"  # the venv never came to be
"$SUMMARY_PY" - "$OUT" "$SUITE_SECONDS" <<'EOF' || echo "gpu_suite: could not write summary.md" >&2
import json, sys
from pathlib import Path

out, seconds = Path(sys.argv[1]), int(sys.argv[2])
lines = [f"# mlxgpt GPU suite ({seconds} s)", ""]


def load(path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


lines += ["## Steps", "", "| step | status | seconds |", "|---|---|---|"]
for row in (out / "steps.tsv").read_text().splitlines()[1:]:
    lines.append("| " + " | ".join(row.split("\t")) + " |")

devices = load(out / "devices.json")
lines += ["", "## Devices", ""]
lines += [f"- {k}: {v}" for k, v in (devices or {}).items()] or ["- (no devices.json: see logs/devices.log)"]
smi = out / "logs" / "nvidia-smi.log"
if smi.exists():
    gpus = [l.strip(" |") for l in smi.read_text().splitlines() if "NVIDIA" in l or "CUDA Version" in l]
    lines += [f"- nvidia-smi: {g}" for g in gpus[:4]]

pytest_log = out / "logs" / "pytest.log"
if pytest_log.exists():
    tail = [l for l in pytest_log.read_text().splitlines() if l.strip()]
    lines += ["", "## Tests", "", "    " + (tail[-1] if tail else "(no output)")]

for bench in sorted(out.glob("bench-*.json"), key=lambda p: (p.name.split("-")[1], "float32" not in p.name)):
    report = load(bench)
    lines += ["", f"## {bench.name}", ""]
    if report is None:
        lines.append("(unreadable)")
        continue
    cfg, env = report["config"], report["environment"]
    torch_env = env.get("torch") or {}
    lines.append(f"- preset {cfg['preset']}, dtype {cfg.get('dtype')}, MLX {env['mlx']['version']} on "
                 f"{env['mlx']['device']}; PyTorch {torch_env.get('version', '-')} on {torch_env.get('device', '-')}"
                 + (f" ({torch_env['gpu']})" if torch_env.get("gpu") else ""))
    if report.get("parity"):
        lines.append(f"- {report['parity']['summary']}")
    if report.get("loss_curve"):
        lines.append(f"- {report['loss_curve']}")
    for note in report.get("notes", []):
        lines.append(f"- note: {note}")
    lines += ["", "| mode | device | dtype | steps | median ms | mean ms | tokens/s | MFU | allocator peak MiB |",
              "|---|---|---|---|---|---|---|---|---|"]
    for r in report["training"]:
        if not r["ok"]:
            why = f"skipped: {r['skipped']}" if r.get("skipped") else f"failed: {r.get('error')}"
            lines.append(f"| {r['label']} | {r['device']} | {r.get('dtype')} | {why} | | | | | |")
            continue
        mfu = f"{100 * r['mfu']:.1f}%" if r.get("mfu") is not None else "-"
        peak = f"{r['peak_memory_mb']:,.0f}" if r.get("peak_memory_mb") is not None else "-"
        lines.append(f"| {r['label']} | {r['device']} | {r.get('dtype')} | {r['timed_steps']} | "
                     f"{r['median_ms']:.2f} | {r['mean_ms']:.2f} | {r['tokens_per_s']:,.0f} | {mfu} | {peak} |")
    peaks = [p for p in report.get("matmul_peaks", []) if not p.get("error")]
    if peaks:
        lines.append("")
        lines.append("- matmul peaks, GFLOP/s: " + "; ".join(
            f"{p['framework']} {p['dtype']} {p['gflops']:,.0f}" for p in peaks))
    for r in report.get("ratios", []):
        lines.append(f"- {r['what']}: {r['ratio']:.2f}x")

events = []
metrics = out / "train" / "metrics.jsonl"
if metrics.exists():
    for line in metrics.read_text().splitlines():
        try:
            events.append(json.loads(line))
        except ValueError:
            pass
lines += ["", "## Training: shakespeare-char", ""]
finished = next((e for e in events if e.get("event") == "run_finished"), None)
if finished:
    peaks = [e["peak_memory_mb"] for e in events if e.get("event") == "step" and "peak_memory_mb" in e]
    started = next((e for e in events if e.get("event") == "run_started"), {})
    dtype = (started.get("train_args") or {}).get("dtype")
    if dtype == "auto":  # train.py's default: bfloat16 on a GPU, float32 on a CPU
        dtype = "auto (bfloat16)" if "GPU" in str(started.get("device")) else "auto (float32)"
    summary = {"device": started.get("device"), "dtype": dtype,
               "iters": finished.get("iter"), "reason": finished.get("reason"),
               "final_val_loss": finished.get("final_val_loss"), "best_val_loss": finished.get("best_val_loss"),
               "train_seconds": finished.get("train_seconds"), "wall_seconds": finished.get("wall_seconds"),
               "tokens_per_s": finished.get("tokens_per_s"), "peak_memory_mb": max(peaks) if peaks else None}
    (out / "train-summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    lines += [f"- {k}: {v}" for k, v in summary.items()]
else:
    lines.append("- no finished run (see logs/train.log)")

(out / "summary.md").write_text("\n".join(lines) + "\n")
print(f"gpu_suite: wrote {out / 'summary.md'}")
EOF
echo "gpu_suite: done in ${SUITE_SECONDS} s; results in $OUT (summary.md, steps.tsv)"
