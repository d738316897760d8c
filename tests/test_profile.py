"""`mlxgpt bench --profile`: the parts of one MLX training step, timed, and its graph counted (no PyTorch)."""

from __future__ import annotations

import json
import re
import subprocess
import sys

from mlxgpt.bench.profile import KINDS, kind_of

TINY = ["--preset", "baby", "--n-layer", "1", "--n-head", "2", "--n-embd", "32", "--block-size", "16",
        "--batch-size", "8", "--iters", "2", "--warmup", "1", "--min-seconds", "0", "--cpu-streams", "2"]


def test_profile_times_every_part_and_counts_the_graph(tmp_path):
    out = tmp_path / "profile.json"
    proc = subprocess.run([sys.executable, "-m", "mlxgpt.bench", "--profile", *TINY, "--json", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Where a training step's time goes" in proc.stdout and "overlap" in proc.stdout
    report = json.loads(out.read_text())
    names = [p["name"] for p in report["parts"]]
    assert names == ["forward", "forward+backward", "forward+backward, one shard", "forward+backward, all streams",
                     "clip + AdamW", "full step"]
    assert all(len(p["ms"]) == 2 and p["median_ms"] > 0 for p in report["parts"])
    streams = int(report["parallelism"].split()[0])
    # Per shard: 1 layer x (6 forward + 12 backward matmuls) + the tied unembedding's 3.
    assert report["graph_nodes"]["matmul"] == streams * (18 * 1 + 3)
    assert report["tokens_per_iter"] == 8 * 16  # --batch-size x --block-size
    kinds = report["graph_nodes"]
    assert set(kinds) <= {*KINDS, kind_of("Gather")} and all(count > 0 for count in kinds.values())  # + the catch-all
    assert kinds["fused elementwise kernel"] > 0  # the step really is compiled: mx.compile fused its elementwise ops
    # the terminal shows the counts the JSON holds (Rich may wrap the title, so compare words)
    assert f"graph: {report['graph_total']:,} nodes" in " ".join(proc.stdout.split())
    for kind, count in kinds.items():
        row = next(line for line in proc.stdout.splitlines() if kind in line)
        assert re.findall(r"\d[\d,]*", row)[-1] == f"{count:,}"
