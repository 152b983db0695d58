"""The contraction-backend benchmark on the CPU (--tiny): every backend and mode runs, the
work counts are the same for each backend, and the errors are float32 rounding."""

from __future__ import annotations

import json

import pytest

from benchmarks.studies.triton_contraction import main


@pytest.mark.parametrize("interpret", [False, True])
def test_triton_contraction_benchmark_runs_on_cpu(tmp_path, monkeypatch, interpret):
    backends = ["e3nn", "sparse_torch"]
    if interpret:
        pytest.importorskip("triton")
        monkeypatch.setenv("TRITON_INTERPRET", "1")
        backends.append("triton")
    argv = ["--tiny", "--device", "cpu", "--precisions", "fp32", "--atoms", "6"]
    # no warm-up call: in Triton's interpreter each call of a mode is seconds to a minute
    argv += ["--warmup", "0", "--repeat", "1", "--backends", *backends, "--out", str(tmp_path)]
    assert main(argv) == 0
    record = json.loads((tmp_path / "triton_contraction.json").read_text())
    rows = record["rows"]
    assert {(row["backend"], row["mode"]) for row in rows} == {
        (backend, mode)
        for backend in backends
        for mode in ("forward", "forces", "backward", "double_backward")
    }
    assert len({row["multiply_adds"] for row in rows if row["mode"] == "forward"}) == 1
    for row in rows:
        assert row["status"] == "ok" and row["ms"] > 0 and row["tflop_per_s"] > 0
        if row["mode"] == "forward":
            assert row["max_rel_error_vs_fp64"] < 1e-5
    assert (
        "| sparse_torch | fp32 | 6 | forward |" in (tmp_path / "triton_contraction.md").read_text()
    )
