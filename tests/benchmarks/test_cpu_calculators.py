"""The CPU calculator study: both calculators run on the same molecule with the same
weights, agree in float64, and the table is printed from the results file."""

from __future__ import annotations

import json

import pytest
import torch

pytest.importorskip("mace")

from benchmarks.studies.cpu_calculators import main


@pytest.fixture(autouse=True)
def threads():
    """The study sets torch's thread count (one by default); the others' is kept."""
    previous = torch.get_num_threads()
    yield
    torch.set_num_threads(previous)


def test_cpu_calculators_run_agree_and_tabulate(tmp_path, capsys):
    out = tmp_path / "cpu.json"
    argv = ["--sizes", "small", "--precisions", "64", "--molecule", "acac"]
    assert main([*argv, "--rounds", "2", "--calls", "1", "--warmup", "0", "--out", str(out)]) == 0
    results = json.loads(out.read_text())
    assert results["torch_threads"] == 1 and results["molecule"]["n_atoms"] == 15
    records = {r["implementation"]: r for r in results["records"]}
    assert set(records) == {"macelab", "mace-torch"}
    for record in records.values():
        assert record["calls"] == 2 and record["median_ms"] > 0
        assert record["energy_rel_diff_max"] < 1e-12 and record["forces_rel_diff_max"] < 1e-10
    capsys.readouterr()
    assert main(["--table", str(out)]) == 0
    table = capsys.readouterr().out
    assert "| small (64 ch, L_max 1) | 64 |" in table and "15 atoms (AcAc)" in table
