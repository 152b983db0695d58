"""benchmarks/studies/triton_conv.py on CPU (e3nn only: the fused kernels in Triton's interpreter
take minutes at these sizes and are checked by tests/kernels): every layer, system and mode
timed, the forward's error against float64 at fp32 rounding, the tables written."""

from __future__ import annotations

import json
import math

from benchmarks.studies.triton_conv import main


def test_triton_conv_benchmark_runs_on_cpu(tmp_path, shared_data_root, monkeypatch):
    monkeypatch.setenv("MACELAB_DATA", str(shared_data_root))
    argv = ["--tiny", "--device", "cpu", "--out", str(tmp_path), "--backends", "e3nn",
            "--precisions", "fp32", "--max-seconds", "0.2"]  # fmt: skip
    assert main(argv) == 0
    rows = json.loads((tmp_path / "triton_conv.json").read_text())["rows"]
    assert len(rows) == 2 * 2 * 3  # systems x layers x modes
    assert {r["mode"] for r in rows} == {"forward", "forces", "double_backward"}
    for row in rows:
        assert row["status"] == "ok" and math.isfinite(row["ms"]) and row["ms"] > 0
        assert row["multiply_adds"] > 0 and row["tflop_per_s"] > 0
    errors = [r["max_rel_error_vs_fp64"] for r in rows if r["mode"] == "forward"]
    assert all(0 <= e < 1e-5 for e in errors), errors
    assert "| layer | system |" in (tmp_path / "triton_conv.md").read_text()
