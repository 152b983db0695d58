"""AOTInductor packages (``format=aoti``): compiled on the CPU with the installed C++
compiler, loaded by MACECalculator by path and by plain torch in a subprocess that cannot
import macelab, e3nn or mace; energies, forces and stress equal the Python model's.

One package of the smallest model (4 channels, L = 0, one layer) is compiled for the module,
without SIMD (``cpp.vec_isa_ok=False``), which halves the compile time here (about 40 s on
one shared core instead of 80 s); the default export uses SIMD.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from macelab import export
from macelab.aoti import AOTIPotential, is_aoti_package
from macelab.calculator import MACECalculator
from macelab.errors import ConfigError, UntrustedFileError
from macelab.model.embedding import UnknownElementError
from tests.model.helpers import batch, read_molecule, silicon_cell, small_model
from tests.plain_torch import REFUSE_MACELAB

ELEMENTS = [1, 6, 8, 14]
E0 = [-13.6, -1029.0, -2041.0, -7800.0]

# Runs in a fresh interpreter: plain torch only (macelab, e3nn and mace refused on import).
PLAIN_TORCH = (
    REFUSE_MACELAB
    + """
import torch
package, inputs_file, outputs_file = sys.argv[1:]
runner = torch._inductor.aoti_load_package(package)
outputs = [t.detach() for t in runner(*torch.load(inputs_file))]
assert not {"macelab", "e3nn", "mace"} & set(sys.modules)
torch.save(outputs, outputs_file)
"""
)


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    return small_model(
        seed=3, atomic_numbers=ELEMENTS, atomic_energies=E0, channels=4, max_L=0, max_ell=1,
        correlation=2, num_interactions=1, radial_mlp=[8],
    ).eval()  # fmt: skip


@pytest.fixture(scope="module")
def package(model, tmp_path_factory):
    path = tmp_path_factory.mktemp("aoti") / "model.pt2"
    return export.export_aoti(
        model, path, compute_stress=True, inductor_configs={"cpp.vec_isa_ok": False}
    )


def _results(calc, atoms) -> dict[str, np.ndarray]:
    atoms = atoms.copy()
    atoms.calc = calc
    out = {"energy": atoms.get_potential_energy(), "forces": atoms.get_forces()}
    if atoms.pbc.all():
        out["stress"] = atoms.get_stress()
    return out


@pytest.mark.slow
def test_package_in_calculator_and_plain_torch(model, package, tmp_path):
    assert is_aoti_package(package)
    potential = AOTIPotential(package, trust_pickle=True)
    assert potential.atomic_numbers == ELEMENTS and potential.dtype == torch.float64
    assert potential.compute_stress and potential.r_max == model.r_max
    compiled, python = MACECalculator(package, trust_pickle=True), MACECalculator(model)
    for atoms in (read_molecule("acac", 2), silicon_cell(seed=4)):
        got, expected = _results(compiled, atoms), _results(python, atoms)
        assert set(got) == set(expected) - {"node_energies"}
        assert got["energy"] == pytest.approx(expected["energy"], rel=0, abs=1e-9)
        for key in set(got) - {"energy"}:
            np.testing.assert_allclose(got[key], expected[key], rtol=0, atol=1e-10)
    # the package alone, in an interpreter where macelab, e3nn and mace cannot be imported
    graphs = batch([read_molecule("ethanol", 1), silicon_cell()], r_max=5.0)
    inputs = (
        graphs.positions, graphs.atomic_numbers, graphs.edge_index, graphs.unit_shifts,
        graphs.cell.reshape(-1, 3, 3), graphs.batch,
    )  # fmt: skip
    torch.save(inputs, tmp_path / "inputs.pt")
    (tmp_path / "plain.py").write_text(PLAIN_TORCH)
    result = subprocess.run(
        [sys.executable, "plain.py", str(package), "inputs.pt", "outputs.pt"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"},
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    energy, forces, stress = torch.load(tmp_path / "outputs.pt")
    reference = model(graphs, compute_forces=True, compute_stress=True)
    torch.testing.assert_close(energy, reference["energy"].detach(), rtol=0, atol=1e-9)
    torch.testing.assert_close(forces, reference["forces"], rtol=0, atol=1e-10)
    torch.testing.assert_close(stress, reference["stress"], rtol=0, atol=1e-10)


@pytest.mark.slow
def test_package_refusals(package):
    with pytest.raises(UntrustedFileError, match="runs its code"):
        MACECalculator(package)  # loading a package runs compiled code: opt-in
    with pytest.raises(ConfigError, match="compiled for float64"):
        MACECalculator(package, precision="32", trust_pickle=True)
    with pytest.raises(ConfigError, match="already compiled"):
        MACECalculator(package, edge_chunk=100, trust_pickle=True)
    atoms = read_molecule("3bpa", 0)  # has nitrogen
    atoms.calc = MACECalculator(package, trust_pickle=True)
    with pytest.raises(UnknownElementError, match="N \\(Z=7\\)"):
        atoms.get_potential_energy()


def test_export_dispatches_aoti(model, tmp_path, monkeypatch):
    """``python -m macelab.export format=aoti`` (run_export) compiles the loaded model into
    ``out``; the compilation itself is the slow test above."""
    from macelab.data.statistics import DatasetStatistics
    from macelab.training.artifact import save_artifact

    h = model.hyperparameters
    statistics = DatasetStatistics(ELEMENTS, E0, h["avg_num_neighbors"], 0.0, 1.0, 1.0, 1, 5.0)
    folder = save_artifact(model, dict(h), statistics.to_dict(), tmp_path / "model")
    calls = []
    monkeypatch.setattr(export, "export_aoti", lambda *a, **k: calls.append((a, k)))
    cfg = OmegaConf.create({
        "ckpt_path": str(folder), "format": "aoti", "out": str(tmp_path / "m.pt2"),
        "use_ema": True, "stress": True, "dtype": "float32", "device": "cpu",
        "paths": {"output_dir": str(tmp_path)},
    })  # fmt: skip
    assert export.run_export(cfg) == tmp_path / "m.pt2"
    (exported, out), kwargs = calls[0]
    assert exported.dtype == torch.float32 and out == tmp_path / "m.pt2"
    assert kwargs == {"compute_stress": True}
    monkeypatch.undo()
    with pytest.raises(ConfigError, match=r"named \*\.pt2"):
        export.export_aoti(model, tmp_path / "model.so")
