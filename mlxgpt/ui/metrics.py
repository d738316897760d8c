"""metrics.jsonl: every event as one JSON object per line, flushed as it happens.

A process killed mid-write leaves a torn last line. Readers skip it, and a
resumed run cuts it off before appending, so one kill never breaks every
later resume. The JSON is strict: NaN and infinity are written as null.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import IO

from mlxgpt.config import parse_json
from mlxgpt.errors import MlxgptError
from mlxgpt.events import Event, to_dict


def _clean(value):
    # JSON has no NaN/inf; write null rather than produce an unparsable line
    return None if isinstance(value, float) and not math.isfinite(value) else value


def _cut_torn_line(path: Path) -> None:
    """Truncate a file after its last newline (drops a line a killed writer left half-written)."""
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        with open(path, "rb+") as f:
            f.truncate(data.rfind(b"\n") + 1)


class MetricsWriter:
    def __init__(self, path: Path, append: bool = False) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        if append and path.is_file():
            _cut_torn_line(path)
        self.file: IO[str] = open(path, "a" if append else "w", encoding="utf-8")

    def __call__(self, event: Event) -> None:
        record = {k: _clean(v) for k, v in to_dict(event).items()}
        self.file.write(json.dumps(record, ensure_ascii=False, allow_nan=False) + "\n")
        self.file.flush()

    def close(self) -> None:
        self.file.close()


def read_metrics(path: Path) -> list[dict]:
    """The records of a metrics.jsonl; a torn (unterminated, unparsable) last line is skipped."""
    with open(path, encoding="utf-8", errors="replace") as f:
        lines = f.read().split("\n")
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = parse_json(line)
        except ValueError:
            if number == len(lines):  # the last line, with no newline after it: a write cut short
                break
            raise MlxgptError(f"{path} line {number} is not a JSON object: the file is damaged; "
                              "delete that line or the file (it only holds the run's history)") from None
        if not isinstance(record, dict):
            raise MlxgptError(f"{path} line {number} is not a JSON object: the file is damaged; "
                              "delete that line or the file (it only holds the run's history)")
        records.append(record)
    return records
