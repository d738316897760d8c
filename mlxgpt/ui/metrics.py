"""metrics.jsonl: every event as one JSON object per line, flushed as it happens."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import IO

from mlxgpt.events import Event, to_dict


def _clean(value):
    # JSON has no NaN/inf; write null rather than produce an unparsable line
    return None if isinstance(value, float) and not math.isfinite(value) else value


class MetricsWriter:
    def __init__(self, path: Path, append: bool = False) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.file: IO[str] = open(path, "a" if append else "w", encoding="utf-8")

    def __call__(self, event: Event) -> None:
        record = {k: _clean(v) for k, v in to_dict(event).items()}
        self.file.write(json.dumps(record, ensure_ascii=False) + "\n")
        self.file.flush()

    def close(self) -> None:
        self.file.close()


def read_metrics(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
