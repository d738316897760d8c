"""The training dashboard, the plain fallback, the loss pictures and --show-probs.

Rich views are rendered to recording consoles of fixed sizes (80x24, 200x50) and
checked for their content; the CLI is run through pipes (no escape codes allowed)
and through a pseudo-terminal (the dashboard, then Ctrl-C and the resume hint).
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import math
import os
import pty
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import time
from io import StringIO

import mlx.core as mx
import numpy as np
import pytest
from rich.console import Console

import mlxgpt
from conftest import REPO_ROOT, TINY_MODEL, run_cli
from mlxgpt import plots
from mlxgpt.events import CheckpointSaved, EvalDone, RunFinished, RunStarted, SampleGenerated, StepLogged
from mlxgpt.generate import generate
from mlxgpt.sampling import make_transform
from mlxgpt.ui.format import bar, format_count, format_prob, nice_ticks, tick_label
from mlxgpt.ui.history import LossHistory
from mlxgpt.ui.plain import PlainRenderer, format_event
from mlxgpt.ui.probs import probability_table, sampling_note, show_probs, top_candidates
from mlxgpt.ui.rich_live import RichDashboard
from picture_checks import check_picture_file, figure_texts

SIZES = [(80, 24), (200, 50)]
ANSI = re.compile(r"\x1b[\[\]()#;?]*[0-9;?]*[A-Za-z]?")
UI_FLAGS = ["--n-layer", str(TINY_MODEL["n_layer"]), "--n-head", str(TINY_MODEL["n_head"]),
            "--n-embd", str(TINY_MODEL["n_embd"]), "--block-size", str(TINY_MODEL["block_size"]),
            "--batch-size", "8", "--eval-iters", "2", "--log-interval", "10"]
SAMPLE = "ROMEO:\nWhat say you, sir?\nJULIET:\nGood night, good night!"


# ---------------------------------------------------------------- synthetic events


def make(cls, **values):
    """An event with the given fields; any other required field gets a neutral value
    (so these tests keep working when events grow new fields)."""
    kwargs = {}
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        if f.name in values:
            kwargs[f.name] = values[f.name]
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            kwargs[f.name] = ""
    return cls(**kwargs)


def started(max_iters: int = 300, start_iter: int = 0, out_dir: str = "out/demo") -> RunStarted:
    return make(RunStarted, out_dir=out_dir, preset="baby", preset_note="chosen with --preset",
                device="CPU (x86_64)", blas="openblas (/usr/lib/libopenblas.so.0)", parallelism="2 streams",
                model_args=dict(n_layer=4, n_head=4, n_embd=128, block_size=64, dropout=0.0,
                                pos_embedding="learned"),
                train_args=dict(batch_size=12, grad_accum=1, max_iters=max_iters, lr=1e-3, min_lr=1e-4,
                                warmup_iters=100, lr_decay_iters=max_iters, beta2=0.99, weight_decay=0.1,
                                grad_clip=1.0, eval_interval=100, eval_iters=20, seed=1337, sample_tokens=200),
                tokenizer="char", vocab_size=65, n_params=795_904, n_params_total=804_224,
                train_tokens=1_003_854, val_tokens=111_540, start_iter=start_iter, tokens_per_iter=768,
                flops_per_token=5_000_000)


def loss_at(it: int) -> float:
    return 1.6 + 2.6 * math.exp(-it / 80)


def run_events(max_iters: int = 300, interrupted_at: int | None = None, picture: str | None = "out/demo/loss.png"):
    """What a short run emits: evals every 100 steps with a sample, steps every 10."""
    yield started(max_iters)
    last = interrupted_at or max_iters
    for it in range(0, last + 1, 10):
        if it % 100 == 0 or it == last:
            val = loss_at(it) + 0.05
            yield make(EvalDone, iter=it, train_loss=loss_at(it), val_loss=val, val_bpc=val / math.log(2), lr=1e-3,
                       tokens_per_s=14_000.0, best_val_loss=val, is_best=True)
            yield make(SampleGenerated, iter=it, prompt="\n", text=f"{SAMPLE} ({it})")
            yield make(CheckpointSaved, iter=it, which="latest", path="out/demo/latest")
        if it < last:
            yield make(StepLogged, iter=it + 10, max_iters=max_iters, train_loss=loss_at(it + 10), lr=9.5e-4,
                       grad_norm=0.4321, ms_per_iter=52.5, tokens_per_s=14_628.0, elapsed_s=it * 0.05 + 1,
                       active_memory_mb=9.0, peak_memory_mb=71.0)
    reason = "interrupted" if interrupted_at else "completed"
    yield make(RunFinished, iter=last, reason=reason, best_val_loss=loss_at(last) + 0.05,
               best_val_bpc=(loss_at(last) + 0.05) / math.log(2), final_val_loss=loss_at(last) + 0.05,
               train_seconds=15.0, wall_seconds=17.5, tokens_per_s=14_628.0, out_dir="out/demo",
               resume_command="python train.py --resume --out out/demo" if interrupted_at else None,
               picture_path=picture)


def fed_dashboard(**kwargs) -> RichDashboard:
    """A dashboard that has seen a whole run but draws nothing by itself."""
    dash = RichDashboard(console=Console(file=StringIO()), live=False, **kwargs)
    for event in run_events():
        if not isinstance(event, RunFinished):
            dash(event)
    return dash


def render(renderable, width: int, height: int) -> str:
    console = Console(record=True, width=width, height=height, file=StringIO(), color_system="truecolor")
    console.print(renderable)
    return console.export_text()


# ---------------------------------------------------------------- the dashboard


@pytest.mark.parametrize("width,height", SIZES)
def test_dashboard_fills_the_terminal_and_shows_the_run(width, height):
    dash = fed_dashboard()
    text = render(dash.renderable(width, height), width, height)
    lines = text.splitlines()
    assert len(lines) == height and all(len(line) <= width for line in lines)
    last_val = loss_at(300) + 0.05
    assert "iter 300/300" in text and "100%" in text and "ETA" in text
    assert f"{loss_at(300):.4f}" in text  # train loss of the last step
    assert f"{last_val:.4f}" in text  # val loss (and best val)
    assert "lr" in text and "9.50e-04" in text
    assert "loss (nats/token)" in text and "train" in text and "val" in text  # the chart's panel
    assert re.search(r"┤.*├", text), "the chart has left and right axes"
    assert "sample at iter 300" in text and "What say you, sir?" in text
    assert "14.63k tok/s" in text
    if width >= 150:  # wide: the configuration and the device details fit too
        assert "configuration" in text and "4 layers · 4 heads · 128 embd" in text
        assert "MFU" in text and "n/a" in text
        assert "CPU (x86_64)" in text and "openblas" in text
        assert "9 MB · peak 71 MB" in text
        assert "795.90k" in text


def test_dashboard_before_the_first_step_says_what_it_waits_for():
    dash = RichDashboard(console=Console(file=StringIO()), live=False)
    dash(started())
    text = render(dash.renderable(100, 30), 100, 30)
    assert "waiting for the first step" in text and "iter 0/300" in text
    assert "a sample appears at each evaluation" in text and "budget" not in text


def test_dashboard_shows_the_time_budget_and_says_when_samples_are_off():
    dash = RichDashboard(console=Console(file=StringIO()), live=False)
    run = started()
    run.train_args.update(time_budget=120.0, sample_tokens=0)
    dash(run)
    text = render(dash.renderable(150, 40), 150, 40)
    assert "budget 2:00" in text and "--sample-tokens 0" in text


def test_with_a_time_budget_progress_and_eta_follow_the_clock_when_it_ends_the_run_first():
    """The speed-run's 5000 steps are a cap: 120 s end it. At step 260 after 30 s the bar shows a
    quarter done and the ETA is the budget's 90 s left, not the steps' 9 minutes."""
    dash = RichDashboard(console=Console(file=StringIO()), live=False)
    run = started(5000)
    run.train_args.update(time_budget=120.0)
    dash(run)
    dash(make(StepLogged, iter=260, max_iters=5000, train_loss=2.0, lr=1e-3, grad_norm=1.0, ms_per_iter=100.0,
              tokens_per_s=15_000.0, elapsed_s=30.0, active_memory_mb=7.0, peak_memory_mb=100.0))
    assert dash.state.progress() == pytest.approx(0.25) and dash.state.eta() == pytest.approx(90.0)
    text = render(dash.renderable(150, 40), 150, 40)
    assert "25%" in text and "ETA 1:30" in text and "budget 2:00" in text


def test_live_dashboard_restores_the_terminal_and_prints_the_summary(tmp_path):
    out = StringIO()
    console = Console(file=out, force_terminal=True, width=100, height=30, color_system="256")
    dash = RichDashboard(console=console)
    for event in run_events(interrupted_at=120):
        dash(event)
    dash.close()  # a second close (the CLI's finally) is harmless
    raw = out.getvalue()
    enter, leave = raw.find("\x1b[?1049h"), raw.rfind("\x1b[?1049l")
    assert 0 <= enter < leave, "the dashboard uses the alternate screen and leaves it"
    assert "\x1b[?25h" in raw[leave - 20:], "the cursor is shown again"
    after = ANSI.sub("", raw[leave:])
    assert "run summary" in after and "interrupted" in after
    assert "python train.py --resume --out out/demo" in after
    assert "loss picture" in after and "out/demo/loss.png" in after
    assert f"{loss_at(120) + 0.05:.4f}" in after  # best val loss
    assert dash.renders >= 1 and dash.ui_seconds > 0


def test_redraws_are_rate_limited():
    now = [0.0]
    console = Console(file=StringIO(), force_terminal=True, width=100, height=30)
    dash = RichDashboard(console=console, clock=lambda: now[0], max_refresh_per_s=2.0)
    events = [e for e in run_events() if isinstance(e, (RunStarted, StepLogged))]
    dash(events[0])
    for event in events[1:]:  # 30 log events in 0.3 s of (fake) time
        now[0] += 0.01
        dash(event)
    assert dash.renders <= 2
    now[0] += 10.0
    dash(events[-1])
    assert dash.renders <= 3
    dash.close()


def test_resumed_dashboard_shows_the_whole_history(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    records = [{"event": "run_started", "start_iter": 0},
               *({"event": "step", "iter": i, "train_loss": loss_at(i)} for i in range(10, 210, 10)),
               {"event": "eval", "iter": 100, "train_loss": 2.0, "val_loss": 2.1, "val_bpc": 3.03},
               {"event": "eval", "iter": 200, "train_loss": 1.9, "val_loss": 2.0, "val_bpc": 2.88}]
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    dash = RichDashboard(console=Console(file=StringIO()), live=False)
    dash(started(start_iter=150, out_dir=str(run_dir)))
    assert [s[0] for s in dash.state.history.steps][-1] == 150  # the steps after the checkpoint are forgotten
    assert [e[0] for e in dash.state.history.evals] == [100]
    text = render(dash.renderable(120, 40), 120, 40)
    assert "2.1000" in text and "resumed" in text


# ---------------------------------------------------------------- the loss pictures


def write_metrics(path, evals=(0, 100, 200, 300)) -> list[dict]:
    records = [{"event": "run_started", "start_iter": 0}]
    records += [{"event": "step", "iter": i, "train_loss": loss_at(i)} for i in range(1, 301, 10)]
    records += [{"event": "eval", "iter": i, "train_loss": loss_at(i), "val_loss": loss_at(i) + 0.1,
                 "val_bpc": (loss_at(i) + 0.1) / math.log(2)} for i in evals]
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return records


def lines_by_label(fig) -> dict:
    """The plotted lines of the loss figure's main axes, by their legend label."""
    return {line.get_label(): line for line in fig.axes[0].get_lines()}


def test_loss_figure_draws_exactly_the_recorded_losses(tmp_path):
    metrics = tmp_path / "metrics.jsonl"
    records = write_metrics(metrics)
    fig = plots.loss_curves(LossHistory.from_metrics(metrics), "a run")
    lines = lines_by_label(fig)
    steps = [(r["iter"], r["train_loss"]) for r in records if r["event"] == "step"]
    evals = [r for r in records if r["event"] == "eval"]
    np.testing.assert_allclose(lines["train loss (logged steps)"].get_xydata(), steps)
    np.testing.assert_allclose(lines["train loss (eval)"].get_xydata(), [(r["iter"], r["train_loss"]) for r in evals])
    np.testing.assert_allclose(lines["val loss (eval; right axis: bits/char)"].get_xydata(),
                               [(r["iter"], r["val_loss"]) for r in evals])
    best = min(evals, key=lambda r: r["val_loss"])
    np.testing.assert_allclose(lines["_best"].get_xydata(), [(best["iter"], best["val_loss"])])  # the red ring
    texts = figure_texts(fig)
    assert "a run" in texts and "iteration" in texts and "loss (nats per token)" in texts
    assert f"best val {best['val_loss']:.4f} ({best['val_loss'] / math.log(2):.3f} bpc) @ {best['iter']}" in texts
    assert f"val loss in bits per character (nats x {1 / math.log(2):.4f})" in texts  # the right axis
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert legend == ["train loss (logged steps)", "train loss (eval)", "val loss (eval; right axis: bits/char)"]


def test_loss_pictures_are_written_as_png_and_svg_beside_the_metrics(tmp_path):
    metrics = tmp_path / "metrics.jsonl"
    write_metrics(metrics)
    path = plots.write_loss_pictures(metrics)
    assert path == tmp_path / "loss.png"
    check_picture_file(tmp_path / "loss.png")
    check_picture_file(tmp_path / "loss.svg", f"mlxgpt loss curves: {tmp_path}", "iteration", "best val")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["loss.png", "loss.svg", "metrics.jsonl"]  # no temp files


def test_loss_figure_of_empty_and_single_point_histories():
    """A degenerate range (one iteration, one loss) must still give finite axes and a picture."""
    fig = plots.loss_curves(LossHistory())
    assert "no losses recorded yet" in figure_texts(fig) and not fig.axes[0].get_lines()

    fig = plots.loss_curves(LossHistory(evals=[(0, 4.2, 4.2, 6.0)]))
    texts = figure_texts(fig)
    assert "no losses recorded yet" not in texts
    assert "best val 4.2000 (6.000 bpc) @ 0" in texts  # one eval is the best one, in nats and bits per char
    assert "val loss in bits per character (nats x 1.4286)" in texts  # 6.0 / 4.2

    fig = plots.loss_curves(LossHistory(steps=[(1, 4.0)]))
    assert not any("best val" in t for t in figure_texts(fig))
    fig.draw_without_rendering()
    low, high = fig.axes[0].get_ylim()
    assert math.isfinite(low) and low < 4.0 < high  # the axis is drawn around the one loss


def test_text_helpers_shared_by_the_terminal_views():
    assert nice_ticks(0, 2000, 5) == [0, 500, 1000, 1500, 2000]
    ticks = nice_ticks(1.53, 4.21, 6)
    assert all(1.53 <= t <= 4.21 for t in ticks) and len(ticks) >= 4
    assert [tick_label(t) for t in (500, 2.5, 25_000)] == ["500", "2.5", "25k"]
    assert [format_count(n) for n in (640, 804_096, 175_181_291_520)] == ["640", "804.10k", "175.18B"]
    assert [format_prob(p) for p in (0.57, 0.0008)] == ["57.0%", "8e-04"]
    assert bar(0.5, 4) == "██" and bar(1 / 16, 4) == "▎" and bar(2.0, 3) == "███" and bar(float("nan"), 3) == ""
    assert bar(0.5, 10, ascii=True) == "#####"


def test_a_trained_run_has_its_loss_pictures(trained_run):
    check_picture_file(trained_run / "loss.png")
    check_picture_file(trained_run / "loss.svg", f"mlxgpt loss curves: {trained_run}", "best val", "iteration")
    finished = [json.loads(line) for line in (trained_run / "metrics.jsonl").read_text().splitlines()][-1]
    assert finished["picture_path"] == str(trained_run / "loss.png")


# ---------------------------------------------------------------- the real CLI


@pytest.fixture(scope="module")
def piped_run(tmp_path_factory, text_file):
    out = tmp_path_factory.mktemp("ui") / "run"
    result = run_cli("train.py", "--data", text_file, "--out", out, *UI_FLAGS, "--max-iters", "40",
                     "--eval-interval", "20", "--sample-tokens", "16")
    assert result.returncode == 0, result.stderr
    return out, result


def test_piped_training_prints_plain_lines_and_writes_the_picture(piped_run):
    out, result = piped_run
    assert "\x1b" not in result.stdout and "\x1b" not in result.stderr
    assert "eval     20:" in result.stdout and "sample at iter 20" in result.stdout
    picture = out / "loss.png"
    assert f"loss curves: {picture}" in result.stdout
    check_picture_file(picture)
    check_picture_file(out / "loss.svg", "val loss (eval; right axis: bits/char)")
    finished = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()][-1]
    assert finished["event"] == "run_finished" and finished["picture_path"] == str(picture)


def test_plain_renderer_names_the_picture_and_the_resume_command():
    finished = list(run_events(interrupted_at=50))[-1]
    line = format_event(finished)
    assert "loss curves: out/demo/loss.png" in line and "resume with: python train.py --resume" in line
    stream = StringIO()
    renderer = PlainRenderer(stream)
    for event in run_events():
        renderer(event)
    renderer.close()
    assert "\x1b" not in stream.getvalue() and "completed at iter 300" in stream.getvalue()


def _spawn_in_terminal(args: list[str], cols: int = 100, rows: int = 30) -> tuple[subprocess.Popen, int]:
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
    env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "FORCE_COLOR", "COLUMNS", "LINES")}
    env.update(TERM="xterm-256color", PYTHONIOENCODING="utf-8")
    process = subprocess.Popen([sys.executable, *args], cwd=REPO_ROOT, env=env, stdin=slave, stdout=slave,
                               stderr=slave, close_fds=True)
    os.close(slave)
    return process, master


def _read_until_exit(process: subprocess.Popen, master: int, timeout: float, on_tick=None) -> str:
    chunks, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.2)
        if ready:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
        elif process.poll() is not None:
            break
        if on_tick:
            on_tick()
    else:
        process.kill()
        pytest.fail("the run did not finish in time")
    process.wait(timeout=30)
    os.close(master)
    return b"".join(chunks).decode("utf-8", "replace")


def test_training_in_a_terminal_shows_the_dashboard_and_ctrl_c_prints_the_resume_command(tmp_path, text_file):
    out = tmp_path / "run"
    process, master = _spawn_in_terminal(["train.py", "--data", str(text_file), "--out", str(out), *UI_FLAGS,
                                          "--max-iters", "100000", "--eval-interval", "100000",
                                          "--sample-tokens", "0"])
    sent = []

    def interrupt_after_the_first_steps():
        metrics = out / "metrics.jsonl"
        if not sent and metrics.exists() and '"event": "step", "iter": 20' in metrics.read_text():
            process.send_signal(signal.SIGINT)
            sent.append(time.monotonic())

    raw = _read_until_exit(process, master, timeout=240, on_tick=interrupt_after_the_first_steps)
    assert sent, "training never logged a step"
    assert process.returncode == 130
    leave = raw.rfind("\x1b[?1049l")
    assert raw.find("\x1b[?1049h") >= 0 and leave > 0, "dashboard on the alternate screen, then left"
    dashboard = ANSI.sub("", raw[:leave])
    assert "Ctrl-C: stop & save" in dashboard and "loss (nats/token)" in dashboard
    summary = ANSI.sub("", raw[leave:])
    assert "interrupted" in summary and f"python train.py --resume --out {out}" in summary
    assert "Traceback" not in raw
    assert (out / "latest" / "state.json").is_file()
    check_picture_file(out / "loss.png")  # drawn for an interrupted run too
    check_picture_file(out / "loss.svg", "iteration")


# ---------------------------------------------------------------- --show-probs


def _probabilities(text: str) -> list[float]:
    return [float(p) / 100 for p in re.findall(r"(\d+\.\d)%", text)]


def test_top_candidates_are_sorted_and_follow_the_sampling_filters():
    logits = mx.array([3.0, 1.0, 2.0, 0.5, -1.0, 2.5])
    full = top_candidates(make_transform(1.0)(logits), 10)
    assert [t for t, _ in full] == [0, 5, 2, 1, 3, 4]
    assert sum(p for _, p in full) == pytest.approx(1.0, abs=1e-5)
    top3 = top_candidates(make_transform(1.0, top_k=3)(logits), 10)
    assert [t for t, _ in top3] == [0, 5, 2] and sum(p for _, p in top3) == pytest.approx(1.0, abs=1e-5)
    sharp = top_candidates(make_transform(0.5)(logits), 2)
    assert sharp[0][1] > full[0][1]  # lower temperature: a more confident top candidate
    assert top_candidates(logits - mx.logsumexp(logits), 0) == []


@pytest.mark.parametrize("width,height", SIZES)
def test_probability_table_draws_sorted_bars_and_marks_the_choice(trained_run, width, height):
    model, tokenizer = mlxgpt.load(trained_run)
    piece = next(generate(model, tokenizer, "The ", 1, temperature=1.0, seed=3))
    candidates = top_candidates(piece.logprobs, 10)
    text = render(probability_table(candidates, tokenizer, piece.token, "next token"), width, height)
    probs = _probabilities(text)
    assert len(probs) >= 1 and probs == sorted(probs, reverse=True) and sum(probs) <= 1.0 + 1e-3
    assert text.count("▶") == 1 and "█" in text
    marked = next(line for line in text.splitlines() if "▶" in line)
    assert tokenizer.token_label(piece.token) in marked


@pytest.mark.parametrize("width,height", SIZES)
def test_show_probs_view_has_a_table_per_token_and_the_coloured_text(trained_run, width, height):
    model, tokenizer = mlxgpt.load(trained_run)
    console = Console(record=True, width=width, height=height, file=StringIO(), color_system="truecolor")
    pieces = generate(model, tokenizer, "The ", 6, temperature=0.8, top_k=5, seed=1)
    generated = show_probs(pieces, tokenizer, "The ", 10, sampling_note(0.8, top_k=5), console=console)
    text = console.export_text()
    assert text.count("▶") == 6
    assert "top-k 5" in text and "the distribution each token was drawn from" in text
    assert all(len(line) <= width for line in text.splitlines())
    # top-k 5: at most 5 candidates per token (the chosen one among them), whatever K asked for
    assert 6 <= len(_probabilities(text)) <= 6 * 5
    panel = text[text.index("generated text"):]
    assert "The " + generated.split("\n")[0] in panel and "colour = probability" in panel
    html = console.export_html()
    assert "color" in html  # the text is coloured by probability


def test_generate_show_probs_piped_is_plain_text(trained_run):
    result = run_cli("generate.py", "--checkpoint", trained_run, "--prompt", "The ", "--show-probs", "4",
                     "--max-new-tokens", "5", "--seed", "2", "--top-p", "0.9")
    assert result.returncode == 0, result.stderr
    assert "\x1b" not in result.stdout
    assert "top-p 0.9" in result.stdout
    blocks = re.split(r"^token \d+ after .*$", result.stdout, flags=re.M)[1:]
    assert len(blocks) == 5
    for block in blocks:
        rows = [line for line in block.splitlines() if re.match(r"^  [> ] ", line)]
        probs = [float(line.split()[-2] if line.split()[-1].startswith("#") else line.split()[-1]) for line in rows]
        top = probs[:4]  # a chosen long shot outside the top 4 comes last, on its own row
        assert top == sorted(top, reverse=True) and sum(top) <= 1.0 + 1e-3
        assert sum(1 for line in rows if line.startswith("  >")) == 1
    assert result.stdout.split("\ntext:\n", 1)[1].startswith("The ")


def test_show_probs_rejects_zero_candidates(trained_run):
    result = run_cli("generate.py", "--checkpoint", trained_run, "--show-probs", "0", "--max-new-tokens", "2")
    assert result.returncode != 0 and "Traceback" not in result.stderr and "--show-probs" in result.stderr
