"""The MD throughput benchmark on the CPU: every row runs, and macelab's and mace-torch's
calculators drive the same trajectory (same model, same start), so they end at the same
potential energy."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("mace")

from benchmarks.studies.md_throughput import main


def test_md_throughput_rows_run_and_agree(tmp_path):
    argv = ["--tiny", "--device", "cpu", "--systems", "small", "--precisions", "64", "32"]
    assert main([*argv, "--accelerate", "none", "--out", str(tmp_path)]) == 0
    records = json.loads((tmp_path / "md_throughput.json").read_text())["records"]
    timed = {(r["implementation"], r["precision"]): r for r in records}
    assert set(timed) == {("macelab", "64"), ("macelab", "32"), ("mace-torch", "64"),
                          ("mace-torch", "32")}  # fmt: skip
    for record in timed.values():
        assert record["steps"] == 20 and record["steps_per_s"] > 0, record
    ours, theirs = timed["macelab", "64"], timed["mace-torch", "64"]
    assert ours["final_potential_energy_eV"] == pytest.approx(
        theirs["final_potential_energy_eV"], abs=1e-8
    )
    assert ours["neighbour_list_builds"] >= 1
    assert "| small | macelab | 64 | none |" in (tmp_path / "md_throughput.md").read_text()
