"""The CPU calculator study: both calculators run on the same molecule with the same
weights, agree in float64, and the table is printed from the results file."""

from __future__ import annotations

import json

import pytest
import torch

pytest.importorskip("mace")

from benchmarks.run import main as run_harness
from benchmarks.studies.cpu_calculators import SIZES, main


@pytest.fixture(autouse=True)
def threads():
    """The study sets torch's thread count (one by default); the others' is kept."""
    previous = torch.get_num_threads()
    yield
    torch.set_num_threads(previous)


def test_cpu_calculators_run_agree_and_tabulate(tmp_path, capsys):
    out = tmp_path / "cpu.json"
    argv = ["--sizes", "c64_L1", "--precisions", "64", "--molecule", "acac"]
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
    assert "| c64_L1 (64 ch, L_max 1) | 64 |" in table and "15 atoms (AcAc)" in table


def test_sizes_are_the_configs_sizes():
    """Every conf/model/size is timed, with its own channels and L_max."""
    assert (SIZES["medium"].channels, SIZES["medium"].max_L) == (128, 1)
    assert (SIZES["paper"].channels, SIZES["paper"].max_L) == (256, 2)
    assert {"tiny", "small", "medium", "large", "paper", "c64_L1"} == set(SIZES)


def test_harness_cpu_suite_writes_results_and_table(tmp_path):
    assert run_harness(["--suite", "cpu", "--tiny", "--out", str(tmp_path)]) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    assert {(r["size"], r["precision"]) for r in results["records"]} == {
        ("tiny", "32"),
        ("tiny", "64"),
    }
    assert all(r["calls"] == 4 for r in results["records"])
    assert "| tiny (16 ch, L_max 1) | 64 |" in (tmp_path / "results.md").read_text()
    with pytest.raises(SystemExit, match="--suite cpu takes only"):
        run_harness(["--suite", "cpu", "--device", "cuda", "--out", str(tmp_path)])
