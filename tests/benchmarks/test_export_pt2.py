"""The pt2 export benchmark on the CPU (--tiny, float64, no compile): the loaded program
gives the eager model's energies and forces to rounding, on a molecule and a water box."""

from __future__ import annotations

import json

import pytest

from benchmarks.studies.export_pt2 import main


@pytest.mark.slow
def test_export_pt2_benchmark_runs_on_cpu(tmp_path):
    argv = ["--tiny", "--device", "cpu", "--dtypes", "64", "--no-compile"]
    assert main([*argv, "--out", str(tmp_path)]) == 0
    rows = json.loads((tmp_path / "export_pt2.json").read_text())["rows"]
    assert [row["system"] for row in rows] == ["molecule_27", "water_96"]
    for row in rows:
        assert row["max_dE_eV"] < 1e-10 and row["max_dF_eV_per_A"] < 1e-10
        assert row["eager_ms"] > 0 and row["pt2_ms"] > 0 and row["file_MiB"] > 0
        assert row["pt2_compiled_ms"] == "not run"
    assert "| 64 | water_96 | 96 |" in (tmp_path / "export_pt2.md").read_text()
