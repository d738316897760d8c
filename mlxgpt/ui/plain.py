"""Plain-text renderer: one line per event, no colours, no cursor tricks.

Used when stdout is not a terminal (pipes, CI, log files) or with --no-ui.
"""

from __future__ import annotations

import sys
from typing import TextIO

from mlxgpt.events import (CheckpointSaved, Event, EvalDone, RunFinished, RunStarted,
                           SampleGenerated, StepLogged)
from mlxgpt.config import switch_flags
from mlxgpt.ui.format import COMPILING_NOTE, format_count


def _effective_batch(event: RunStarted) -> str:
    if event.world_size == 1:
        return ""
    t = event.train_args
    return (f" (effective batch {event.world_size} ranks x {t['batch_size']} x {t['grad_accum']} accum = "
            f"{event.world_size * t['batch_size'] * t['grad_accum']} sequences)")


def format_event(event: Event) -> str | None:
    """The line for one event (None: nothing to print)."""
    if isinstance(event, RunStarted):
        m = event.model_args
        resumed = f", resuming at iter {event.start_iter}" if event.start_iter else ""
        setup = "".join([f" ({event.parallelism})" if event.parallelism else "",
                         f", BLAS {event.blas}" if event.blas else ""])  # neither applies on a GPU
        return (f"mlxgpt: preset {event.preset} ({event.preset_note}) on {event.device}{setup}{resumed}\n"
                f"model: {m['n_layer']} layers, {m['n_head']} heads, {m['n_embd']} embd, block {m['block_size']}, "
                + "".join(f"{flag}, " for flag in switch_flags(m)) +
                f"{format_count(event.n_params)} parameters ({event.tokenizer} tokenizer, vocab {event.vocab_size})\n"
                f"data: {format_count(event.train_tokens)} train / {format_count(event.val_tokens)} val tokens, "
                f"{event.tokens_per_iter} tokens per iter{_effective_batch(event)}; run directory {event.out_dir}"
                + (f"\n{COMPILING_NOTE}" if event.compiling_kernels else ""))
    if isinstance(event, StepLogged):
        return (f"iter {event.iter:>6}/{event.max_iters}: loss {event.train_loss:.4f}, lr {event.lr:.2e}, "
                f"grad norm {event.grad_norm:.2f}, {event.ms_per_iter:.1f} ms/iter, "
                f"{format_count(event.tokens_per_s)} tok/s")
    if isinstance(event, EvalDone):
        best = " (best)" if event.is_best else ""
        per_example = "" if event.val_loss_per_example is None else f", {event.val_loss_per_example:.3f} per example"
        return (f"eval {event.iter:>6}: train {event.train_loss:.4f}, val {event.val_loss:.4f}{per_example}, "
                f"val bpc {event.val_bpc:.4f}{best}")
    if isinstance(event, SampleGenerated):
        return f"sample at iter {event.iter}:\n{event.prompt}{event.text}\n"
    if isinstance(event, CheckpointSaved):
        return None  # too chatty for a log; metrics.jsonl records it
    if isinstance(event, RunFinished):
        lines = [f"{event.reason} at iter {event.iter}: best val loss {event.best_val_loss:.4f} "
                 f"(bpc {event.best_val_bpc:.4f}), {event.train_seconds:.1f} s training "
                 f"({event.wall_seconds:.1f} s wall), {format_count(event.tokens_per_s)} tok/s; "
                 f"checkpoints in {event.out_dir}"]
        if event.picture_path:
            lines.append(f"loss curves: {event.picture_path}")
        if event.resume_command:
            lines.append(f"resume with: {event.resume_command}")
        return "\n".join(lines)
    return None


class PlainRenderer:
    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stdout

    def __call__(self, event: Event) -> None:
        line = format_event(event)
        if line is not None:
            print(line, file=self.stream, flush=True)

    def close(self) -> None:
        pass
