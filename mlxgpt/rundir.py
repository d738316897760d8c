"""A run directory: what mlxgpt may write there, what it may remove, and one writer at a time.

    out/<run>/
      .lock            mlxgpt's marker and lock: held (flock) while a run writes
      metrics.jsonl    loss.png    loss.svg    best/    latest/    (and a save's .best.old, .latest.tmp-PID)

The rules, so that a run never destroys what it did not write:
- mlxgpt writes only into a directory that is new, empty, or already holds an
  mlxgpt run (its `.lock` marker, or a checkpoint whose config.json says so);
- `--overwrite` removes only the names above, never anything else in the directory;
- one process writes at a time: an exclusive `flock` on `.lock` for the life of the
  run. The kernel drops it when the process dies, so a run killed with kill -9
  never blocks the next one. Readers (generate, eval, inspect) take no lock:
  checkpoints are swapped in atomically, so they always see a complete one.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
from pathlib import Path
from types import TracebackType

from mlxgpt.checkpoint import CONFIG, FORMAT, find_checkpoint
from mlxgpt.errors import MlxgptError

LOCK = ".lock"
MARKER = "mlxgpt-run"
CHECKPOINT_NAMES = ("best", "latest")
RUN_FILES = ("metrics.jsonl", "metrics.json", "loss.svg", "loss.png")


def _is_own_lock(path: Path) -> bool:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read(len(MARKER)) == MARKER
    except OSError:
        return False


def holds_run(out: Path) -> bool:
    """Whether `out` already holds a checkpoint that a new run would replace."""
    return any(find_checkpoint(out, name) for name in CHECKPOINT_NAMES)


def _is_own_checkpoint(path: Path | None) -> bool:
    try:
        return json.loads((path / CONFIG).read_text(encoding="utf-8")).get("format") == FORMAT
    except (OSError, ValueError, TypeError, AttributeError):
        return False


def refuse_existing_run(out: Path, how: str = "add --resume to continue it, --overwrite to replace it") -> None:
    """A new run never replaces a trained one unasked: one line saying what to do instead."""
    if holds_run(out):
        raise MlxgptError(f"{out} already holds a trained run: {how}, or choose another --out")


def is_run_dir(out: Path) -> bool:
    """An mlxgpt run: its lock marker, or a checkpoint of ours (runs from before the marker)."""
    return _is_own_lock(out / LOCK) or any(_is_own_checkpoint(find_checkpoint(out, name))
                                          for name in CHECKPOINT_NAMES)


def check_writable(out: Path) -> None:
    """Refuse (one line) a --out that is a file, or a directory of someone else's files."""
    if not out.exists():
        return
    if not out.is_dir():
        raise MlxgptError(f"--out {out} is a file, not a directory: choose another --out")
    if is_run_dir(out):
        return
    entries = sorted(p.name for p in out.iterdir())
    if entries:
        shown = ", ".join(entries[:3]) + (", ..." if len(entries) > 3 else "")
        raise MlxgptError(f"{out} is not an mlxgpt run directory (it holds {shown}): mlxgpt writes only into a new "
                          "or empty directory or one of its own runs, so choose another --out")


def _run_owned_paths(out: Path) -> list[Path]:
    """Everything in `out` that mlxgpt wrote, except the lock."""
    names = {*RUN_FILES, *CHECKPOINT_NAMES, *(f".{name}.old" for name in CHECKPOINT_NAMES)}
    return [p for p in out.iterdir()
            if p.name in names or any(p.name.startswith(f".{name}.tmp-") for name in CHECKPOINT_NAMES)]


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


class RunLock:
    """The exclusive right to write into one run directory (a context manager).

    `claim()` takes the lock, then clears what a killed save left behind
    (`.latest.tmp-PID`), and with `replace=True` the whole old run: both
    checkpoints, metrics.jsonl and the loss picture, before the new run saves."""

    def __init__(self, out: Path) -> None:
        self.out = Path(out)
        self.fd: int | None = None

    def claim(self, replace: bool = False) -> "RunLock":
        check_writable(self.out)
        try:
            self.out.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.out / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise MlxgptError(f"cannot write the run directory {self.out} ({exc.strerror or exc}): "
                              "choose another --out") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.read(fd, 200).decode("utf-8", "replace").split()
            os.close(fd)
            pid = holder[1] if len(holder) > 1 else "unknown"
            raise MlxgptError(f"another mlxgpt process (PID {pid}) is writing to {self.out}: wait for it to finish, "
                              "or choose another --out") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{MARKER} {os.getpid()}\n".encode(), 0)
        self.fd = fd
        for path in _run_owned_paths(self.out):
            stale_save = ".tmp-" in path.name
            if replace or stale_save:
                _remove(path)
        return self

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the descriptor drops the flock
            self.fd = None

    def __enter__(self) -> "RunLock":
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()
