"""benchmarks/plot_speed.py reads the harness's result files as they are kept in
benchmarks/results/ and draws them."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks import plot_speed

RESULTS = Path(__file__).resolve().parents[2] / "benchmarks" / "results"
FILES = [
    RESULTS / "2026-12-06_h100_harness_compiled_conv_984c394_call1.json",
    RESULTS / "2026-12-06_h100_harness_compiled_conv_984c394_call2.json",
    RESULTS / "2026-12-06_h100_profiles_scaling_984c394.json",
]


def test_series_and_bars_come_from_the_records():
    records = plot_speed.load(FILES)
    assert all(r["speed"] for r in records)  # skipped and refused records are left out
    series = plot_speed.scaling_series(records)
    triton = series["macelab+triton/32"]
    assert [atoms for atoms, _, _ in triton] == [99, 300, 999, 3000, 9999, 20001]
    assert triton[-1][1] == pytest.approx(561, rel=0.01)  # ms, the 20k-atom call
    assert triton[-1][2] == pytest.approx(46.2, rel=0.01)  # GiB
    assert len(series["mace-torch/32"]) == 4  # beyond 3,000 atoms it was skipped (memory)
    bars = plot_speed.bar_values(records)
    assert bars["training, batch 32"]["macelab+conv+compiled/32"] == pytest.approx(432, rel=0.01)
    # infer_small was measured in both calls: the later file's record wins
    assert bars["one molecule, E + F"]["macelab+conv+compiled/32"] == pytest.approx(3.23, rel=0.01)


def test_the_figure_is_written(tmp_path):
    out = plot_speed.plot(plot_speed.load(FILES), tmp_path / "figures" / "speed.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 20_000


def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(SystemExit, match=r"no such results file: .*nowhere\.json"):
        plot_speed.main([str(tmp_path / "nowhere.json"), "--out", str(tmp_path / "x.png")])
