"""Writing a file so that a crash never leaves half of it: the one atomic-write helper.

Write to a temporary sibling, flush it to disk, then rename it over the target (a
rename within one directory is atomic on POSIX): a reader, or the next run after a
kill -9, sees the old file or the new one, never a mix. Checkpoint *directories*
use the same idea one level up (checkpoint.save_checkpoint).
"""

from __future__ import annotations

import os
from pathlib import Path


def fsync_dir(path: Path) -> None:
    """Make a rename inside `path` durable (some platforms cannot open directories: then skip)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path | str, data: bytes | str, mode: int | None = None) -> Path:
    """Replace `path` with `data` (str is written as UTF-8) all at once; `mode` sets its permissions."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        if mode is not None:
            tmp.chmod(mode)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return path
