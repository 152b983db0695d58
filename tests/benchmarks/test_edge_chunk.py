"""benchmarks/studies/edge_chunk.py on CPU with a tiny model: one fresh process per setting, every
row measured (finite time and memory), and the tables written."""

from __future__ import annotations

import json
import math

from benchmarks.studies.edge_chunk import main


def test_edge_chunk_benchmark_runs_on_cpu(tmp_path):
    assert main(["--out", str(tmp_path), "--device", "cpu", "--tiny", "--molecules", "12",
                 "--chunks", "0", "300", "--reps", "1"]) == 0  # fmt: skip
    record = json.loads((tmp_path / "edge_chunk.json").read_text())
    rows = record["rows"]
    assert [r["edge_chunk"] for r in rows] == [None, 300]
    assert rows[0]["edges"] == rows[1]["edges"] > 300  # the chunked run really chunks
    for row in rows:
        assert math.isfinite(row["ms"]) and row["ms"] > 0
        assert math.isfinite(row["peak_MiB"])
    assert "| edge_chunk |" in (tmp_path / "edge_chunk.md").read_text()
