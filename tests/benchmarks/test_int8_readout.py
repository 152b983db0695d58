"""The INT8 readout benchmark on the CPU (--tiny): every row runs, the errors are those of a
quantised readout (non-zero, small), and the readout's time share is a fraction."""

from __future__ import annotations

import json

from benchmarks.studies.int8_readout import main


def test_int8_readout_benchmark_runs_on_cpu(tmp_path):
    argv = ["--tiny", "--devices", "cpu", "--precisions", "64", "--repeat", "2"]
    assert main([*argv, "--out", str(tmp_path)]) == 0
    record = json.loads((tmp_path / "int8_readout.json").read_text())
    rows = {row["system"]: row for row in record["rows"]}
    assert set(rows) == {"acac", "water_24"}
    for row in rows.values():
        assert row["float_ms"] > 0 and row["int8_ms"] > 0
        assert 0 < row["readout_share"] < 1
        assert 0 < abs(row["energy_int8_float_meV_per_atom"]) < 20
        assert 0 < row["forces_relative_rmse"] < 0.05
    assert "| acac | 15 | cpu | 64 |" in (tmp_path / "int8_readout.md").read_text()
