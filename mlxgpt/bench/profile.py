"""Where an MLX training step's time goes: `mlxgpt bench --profile`.

MLX is lazy and runs a compiled step as one graph on its stream threads, so a
sampling profiler of the Python process sees little. Instead this times the
step's parts one at a time, each compiled and evaluated on its own, on the
device set up as train.py sets it:

    forward            the loss of the whole batch, one stream
    forward+backward   the loss and every gradient, whole batch, one stream
    ... one shard      the same on batch/streams sequences (what each stream does)
    ... all streams    the shards concurrently, one per stream, gradients combined
    clip + AdamW       clipping and the optimizer update, from ready gradients
    full step          make_train_step: all of the above in one graph

and counts the nodes of the compiled step's graph by kind: on a CPU each node
is a task handed to a stream thread, so their number matters as much as the
FLOPs. A per-op CPU profile needs a sampling profiler outside Python
(docs/benchmarks.md shows one taken with `perf`).
"""

from __future__ import annotations

import re
import statistics
import tempfile
from collections import Counter
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Callable

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten

from mlxgpt.fast.device import configure_device, device_name
from mlxgpt.bench.common import draw_batches, progress, time_loop
from mlxgpt.errors import MlxgptError
from mlxgpt.bench.mlx_timing import mlx_model
from mlxgpt.bench.settings import BenchConfig
from mlxgpt.model import flops_per_token
from mlxgpt.fast.streams import (clip_and_update, cpu_streams, dealer, make_train_step, padded_loss,
                                 sharded_loss_and_grad)
from mlxgpt.training import build_optimizer, loss_fn

# How the graph's primitives are grouped in the report.
KINDS = {
    "matmul": ("Matmul", "AddMM", "BlockMaskedMM", "GatherMM"),
    "reduction": ("Sum", "Max", "Min", "Prod", "LogSumExp", "ArgMax", "Reduce"),
    "view (no arithmetic)": ("Transpose", "Reshape", "Flatten", "Unflatten", "Squeeze", "ExpandDims",
                             "Broadcast", "Slice", "Split", "AsStrided"),
    "fused elementwise kernel": ("Compiled",),
}


@dataclass
class Part:
    name: str
    what: str
    ms: list[float] = field(default_factory=list)

    @property
    def median_ms(self) -> float:
        return statistics.median(self.ms)


@dataclass
class ProfileReport:
    preset: str
    device: str
    parallelism: str
    tokens_per_iter: int
    flops_per_iter: float
    parts: list[Part]
    graph_nodes: dict[str, int]
    graph_total: int

    def part(self, name: str) -> Part:
        return next(p for p in self.parts if p.name == name)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for p, d in zip(self.parts, out["parts"]):
            d["median_ms"] = p.median_ms
        return out


def kind_of(primitive: str) -> str:
    for kind, prefixes in KINDS.items():
        if primitive.startswith(prefixes):
            return kind
    return "other (gather, scatter, unfused elementwise, ...)"


def graph_census(outputs: list[mx.array]) -> Counter:
    """How many nodes of each primitive the lazy graph behind `outputs` holds."""
    with tempfile.TemporaryDirectory() as tmp:
        dot = Path(tmp) / "step.dot"
        mx.export_to_dot(str(dot), *outputs)
        labels = re.findall(r'label ?= ?"([^"]*)"', dot.read_text())
    return Counter(re.sub(r"\d+$", "", label.split()[0]) for label in labels if label)


def _time(fn: Callable[[], Any], warmup: int, iters: int, min_seconds: float) -> list[float]:
    """Milliseconds of each timed call (common.time_loop: at least `iters` calls and `min_seconds`)."""
    steps = time_loop(lambda _: mx.eval(fn()), warmup, iters, min_seconds)
    return [1000 * seconds for seconds, _ in steps[warmup:]]


def profile_step(cfg: BenchConfig) -> ProfileReport:
    if cfg.dtype != "float32":
        raise MlxgptError(f"--profile times float32 steps only (not --dtype {cfg.dtype})")
    settings = configure_device(cfg.cpu_streams)
    model = mlx_model(cfg)
    model.train()
    xs, ys = draw_batches(cfg.model.vocab_size, cfg.train.batch_size, cfg.model.block_size, cfg.seed, 1)
    x, y = mx.array(xs[0]), mx.array(ys[0])
    streams = cpu_streams(settings.streams)
    deal = dealer(streams)
    shard = max(1, cfg.train.batch_size // len(streams))
    loss_and_grad = nn.value_and_grad(model, loss_fn)
    compiled = lambda f: mx.compile(f, inputs=model.state, outputs=model.state)

    padded_loss_and_grad = nn.value_and_grad(model, padded_loss)

    def all_streams() -> tuple[Any, mx.array]:
        loss, grads = sharded_loss_and_grad(padded_loss_and_grad, model, x, y, streams, deal)
        return grads, loss  # gradients first, for the same reason as in full_step below

    optimizer = build_optimizer(cfg.train)  # make_train_step below deals its updates over the streams
    _, grads = loss_and_grad(model, x, y)
    mx.eval(grads)
    state = [model.state, optimizer.state]

    @partial(mx.compile, inputs=state, outputs=state)
    def clip_and_update_only() -> mx.array:
        return clip_and_update(model, optimizer, grads, cfg.train.grad_clip, deal)

    step, step_state = make_train_step(model, optimizer, cfg.train.grad_clip, settings.streams)

    def full_step() -> tuple:
        loss, norm = step(x[None], y[None])
        # The new state first, as training.py evaluates it: MLX schedules the graph in the
        # order it walks it from the outputs, and that order changes how well the CPU
        # streams overlap (shakespeare-char: 13.6 s loss-first, 12.0 s state-first).
        return step_state, loss, norm

    n = cfg.train.batch_size
    parts = [
        ("forward", f"loss of {n} sequences, one stream", compiled(lambda: loss_fn(model, x, y))),
        ("forward+backward", f"loss and gradients, {n} sequences, one stream", compiled(lambda: loss_and_grad(model, x, y))),
        ("forward+backward, one shard", f"{shard} sequences, one stream: what each stream does",
         compiled(lambda: loss_and_grad(model, x[:shard], y[:shard]))),
        ("forward+backward, all streams", f"{len(streams)} shards of {shard} concurrently, gradients combined",
         compiled(all_streams)),
        ("clip + AdamW", "from ready gradients", lambda: (state, clip_and_update_only())),
        ("full step", "make_train_step: everything above in one graph", full_step),
    ]
    report_parts = []
    for name, what, fn in parts:
        progress(f"profile: {name}")
        mx.clear_cache()  # each part starts from an empty buffer cache, not the previous part's buffers
        report_parts.append(Part(name, what, _time(fn, cfg.warmup, cfg.iters, cfg.min_seconds)))
    census = graph_census([*step(x[None], y[None]), *[a for _, a in tree_flatten(step_state)]])
    kinds = Counter()
    for primitive, count in census.items():
        kinds[kind_of(primitive)] += count
    flops = flops_per_token(cfg.model, model.num_params()) * cfg.tokens_per_iter
    return ProfileReport(cfg.preset, device_name(), settings.describe(), cfg.tokens_per_iter, flops,
                         report_parts, dict(kinds.most_common()), sum(census.values()))


def render_profile(report: ProfileReport, console) -> None:
    from rich.table import Table

    full = report.part("full step").median_ms
    table = Table(title=f"Where a training step's time goes - {report.preset}, {report.device} ({report.parallelism})")
    for column, justify in [("part", "left"), ("what", "left"), ("ms median", "right"), ("min - max", "right"),
                            ("of the full step", "right")]:
        table.add_column(column, justify=justify)
    for part in report.parts:
        table.add_row(part.name, part.what, f"{part.median_ms:.1f}", f"{min(part.ms):.1f} - {max(part.ms):.1f}",
                      f"{part.median_ms / full:.0%}")
    console.print(table)
    shard, together = report.part("forward+backward, one shard").median_ms, report.part(
        "forward+backward, all streams").median_ms
    console.print(f"streams: one shard alone {shard:.1f} ms; both shards as a graph of their own {together:.1f} ms "
                  f"({shard / together:.0%} overlap); inside the full step, with the update, {full:.1f} ms "
                  f"({shard / full:.0%}). MLX schedules a graph in the order it walks it, so the same work can "
                  f"overlap differently in different graphs.")
    console.print(f"model FLOPs in the full step: {report.flops_per_iter / full / 1e6:.1f} GFLOP/s")
    nodes = Table(title=f"The compiled step's graph: {report.graph_total:,} nodes, each a task for a stream thread")
    nodes.add_column("kind")
    nodes.add_column("nodes", justify="right")
    for kind, count in report.graph_nodes.items():
        nodes.add_row(kind, f"{count:,}")
    console.print(nodes)
