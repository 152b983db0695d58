"""The time-to-accuracy study's headline and the merge of its two sides (each side's file
as a device call writes it)."""

from __future__ import annotations

import json

import pytest

from benchmarks.studies.time_to_accuracy import headline, main, time_to_reach


def _side(name: str, times: list[float], errors: list[float], **extra) -> dict:
    side = {
        "wall_s": times[-1],
        "curve_time_s": times,
        "curve_epoch": list(range(len(times))),
        "curve_val_forces_rmse_meV_per_A": errors,
        "test": {"test_MD_300K": {"energy_rmse_meV": 1.5, "forces_rmse_meV_per_A": 9.25}},
        **extra,
    }
    return {"budget_s": 480.0, "device_name": "test", "command": f"--only {name}", name: side}


def test_time_to_reach_is_the_first_time_at_or_below():
    assert time_to_reach([10, 20, 30], [50.0, 20.0, 10.0], 20.0) == 20
    assert time_to_reach([10, 20, 30], [50.0, 40.0, 30.0], 20.0) is None
    assert time_to_reach(None, [], 1.0) is None


def test_merge_tables_both_sides_and_the_headline(tmp_path, capsys):
    ours = _side("macelab", [30, 60, 120, 240], [40.0, 20.0, 12.0, 9.0], path="precision=32")
    theirs = _side("mace-torch", [100, 300, 460], [60.0, 25.0, 12.0], dtype="float64")
    (tmp_path / "macelab.json").write_text(json.dumps(ours))
    with pytest.raises(SystemExit, match=r"no mace-torch\.json"):
        main(["--merge", "--out", str(tmp_path)])
    (tmp_path / "mace-torch.json").write_text(json.dumps(theirs))
    assert main(["--merge", "--out", str(tmp_path)]) == 0
    record = json.loads((tmp_path / "time_to_accuracy.json").read_text())
    # mace-torch's best (12.0) came at 460 s; macelab was there at 120 s
    assert record["headline"] == {
        "target_val_forces_rmse_meV_per_A": 12.0,
        "mace_torch_s": 460,
        "macelab_s": 120,
        "speedup": pytest.approx(460 / 120),
    }
    assert headline({**record, "macelab": {**record["macelab"], "curve_time_s": []}}) is None
    table = capsys.readouterr().out
    assert "| macelab | `precision=32` | 480 | 4 | 9.00 | 1.50 / 9.25 |" in table
    assert "macelab reached it after 120 s: 3.8x sooner" in table
    assert (tmp_path / "time_to_accuracy.png").stat().st_size > 5_000
