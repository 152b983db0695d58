"""Exported models run without macelab and give the Python model's energies and forces.

The ``pt2`` and ``torchscript`` files are loaded in a subprocess that imports only torch
(an import hook refuses macelab, e3nn and mace there, and the test asserts that none of
them was imported); the ``mace_torch`` file is loaded by mace-torch's own ASE
calculator and its LAMMPS export. All in float64, on real molecules of the shared data, a
periodic cell and batches of several sizes (the exported program has dynamic sizes).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from ase.build import molecule

from macelab import export
from macelab.interop import mace_torch_inputs
from tests.cli import cli_env
from tests.model.helpers import batch, read_molecule, silicon_cell, small_model
from tests.plain_torch import REFUSE_MACELAB
from tests.training.conftest import TINY, compose_config  # noqa: F401 (fixture)

ELEMENTS = [1, 6, 8, 14]
E0 = [-13.6, -1029.0, -2041.0, -7800.0]

# Runs in a fresh interpreter: plain torch only. argv: kind (pt2|torchscript), model, inputs,
# outputs. A meta-path finder placed first refuses macelab, e3nn and mace whatever way they
# are installed (editable .pth, import hook or site-packages), so loading the file cannot
# reach them; the last line also checks none of them was imported.
PLAIN_TORCH = (
    REFUSE_MACELAB
    + """
import importlib.util
try:
    importlib.util.find_spec("macelab")
    raise AssertionError("macelab is importable")
except ImportError:
    pass
import torch
kind, model_file, inputs_file, outputs_file = sys.argv[1:]
cases = torch.load(inputs_file)
results = []
if kind == "pt2":
    program = torch.export.load(model_file).module()
    for inputs in cases:
        results.append([t.detach() for t in program(*inputs)])
else:
    scripted = torch.jit.load(model_file)
    for inputs in cases:
        out = scripted(inputs, compute_force=True)
        results.append([out["energy"].detach(), out["forces"].detach()])
assert "macelab" not in sys.modules and "e3nn" not in sys.modules and "mace" not in sys.modules
torch.save(results, outputs_file)
"""
)


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    """A small float64 MACE with random weights, elements H C O Si."""
    return small_model(
        seed=3,
        atomic_numbers=ELEMENTS,
        atomic_energies=E0,
        channels=4,
        max_L=1,
        max_ell=2,
        correlation=2,
        radial_mlp=[8],
    ).eval()


@pytest.fixture(scope="module")
def structures() -> list[list]:
    """Batches of different sizes: one AcAc, ethanol + a periodic cell, three AcAc frames."""
    acac = [read_molecule("acac", i) for i in range(3)]
    ethanol = read_molecule("ethanol", 5)
    return [[acac[0]], [ethanol, silicon_cell()], acac]


def pt2_inputs(graphs) -> tuple[torch.Tensor, ...]:
    return (
        graphs.positions,
        graphs.atomic_numbers,
        graphs.edge_index,
        graphs.unit_shifts.to(torch.float64),
        graphs.cell.reshape(-1, 3, 3).to(torch.float64),
        graphs.batch,
    )


def run_plain_torch(kind: str, model_file: Path, cases: list, tmp_path: Path) -> list:
    inputs, outputs = tmp_path / f"{kind}_inputs.pt", tmp_path / f"{kind}_outputs.pt"
    torch.save(cases, inputs)
    script = tmp_path / "plain_torch.py"
    script.write_text(PLAIN_TORCH)
    result = subprocess.run(
        [sys.executable, str(script), kind, str(model_file), str(inputs), str(outputs)],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"},
        cwd=tmp_path,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return torch.load(outputs)


@pytest.fixture(scope="module")
def pt2_file(model, tmp_path_factory) -> Path:
    """``model`` exported with stress (about 20 s on a CPU: made once for the tests below; the
    export without stress runs in test_cli_exports_a_trained_checkpoint)."""
    return export.export_pt2(
        model, tmp_path_factory.mktemp("pt2") / "model.pt2", compute_stress=True
    )


@pytest.mark.slow
def test_pt2_runs_in_plain_torch_on_any_size(model, structures, pt2_file, tmp_path):
    path = pt2_file
    graphs = [batch(s, r_max=model.r_max) for s in structures]
    results = run_plain_torch("pt2", path, [pt2_inputs(g) for g in graphs], tmp_path)
    for g, (energy, forces, stress) in zip(graphs, results, strict=True):
        ref = model(g, compute_forces=True, compute_stress=True)
        assert energy.shape == (g.num_graphs,) and forces.shape == (g.num_nodes, 3)
        torch.testing.assert_close(energy, ref["energy"].detach(), rtol=0, atol=1e-10)
        torch.testing.assert_close(forces, ref["forces"], rtol=0, atol=1e-10)
        torch.testing.assert_close(stress, ref["stress"], rtol=0, atol=1e-10)
    assert results[1][2][1].abs().max() > 0  # the periodic cell has a stress


@pytest.mark.slow
def test_pt2_metadata_and_unknown_elements(model, structures, pt2_file):
    extra = {export.METADATA_FILE: ""}
    program = torch.export.load(str(pt2_file), extra_files=extra).module()
    meta = __import__("json").loads(extra[export.METADATA_FILE])
    assert meta["atomic_numbers"] == ELEMENTS
    assert meta["outputs"] == ["energy", "forces", "stress"]
    assert meta["r_max"] == model.r_max and meta["dtype"] == "float64"
    inputs = list(pt2_inputs(batch(structures[0], r_max=model.r_max)))
    inputs[1] = inputs[1].clone()
    inputs[1][0] = 7  # nitrogen: not in the table
    with pytest.raises(RuntimeError, match="unknown element"):
        program(*inputs)


def test_neighbour_list_free_example_matches(model):
    """The docstring's recipe (torch.cdist, all pairs within r_max) gives the model's edges."""
    atoms = read_molecule("ethanol", 0)
    pos = torch.tensor(atoms.positions)
    close = (torch.cdist(pos, pos) < model.r_max) & ~torch.eye(len(atoms), dtype=torch.bool)
    edge_index = close.nonzero().T
    graphs = batch([atoms], r_max=model.r_max)
    ours = sorted(map(tuple, edge_index.T.tolist()))
    assert ours == sorted(map(tuple, graphs.edge_index.T.tolist()))


mace_torch = pytest.mark.mace_torch


@mace_torch
@pytest.mark.slow
def test_mace_torch_file_in_mace_calculator(model, tmp_path):
    pytest.importorskip("mace.calculators")
    from mace.calculators import MACECalculator as MaceTorchCalculator

    from macelab.calculator import MACECalculator

    path = export.export_mace_torch(model, tmp_path / "model.model")
    theirs = MaceTorchCalculator(model_paths=str(path), device="cpu", default_dtype="float64")
    ours = MACECalculator(model, device="cpu", precision="64")
    for atoms in (read_molecule("acac", 4), silicon_cell(seed=1)):
        a, b = atoms.copy(), atoms.copy()
        a.calc, b.calc = theirs, ours
        assert a.get_potential_energy() == pytest.approx(b.get_potential_energy(), abs=1e-9)
        np.testing.assert_allclose(a.get_forces(), b.get_forces(), rtol=0, atol=1e-10)


@mace_torch
@pytest.mark.slow
def test_mace_torch_lammps_model(model, tmp_path):
    """mace-torch's create_lammps_model compiles the exported file; its forces are ours."""
    pytest.importorskip("mace.calculators")
    path = export.export_mace_torch(model, tmp_path / "model.model")
    result = subprocess.run(
        [sys.executable, "-m", "mace.cli.create_lammps_model", str(path)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lammps = torch.jit.load(str(path) + "-lammps.pt")
    graphs = batch([silicon_cell(seed=2)], r_max=model.r_max)  # LAMMPS: one periodic graph
    data = mace_torch_inputs(graphs, ELEMENTS, torch.float64)
    local = torch.ones(graphs.num_nodes, dtype=torch.float64)
    out = lammps(data, local, compute_virials=False)
    ref = model(graphs, compute_forces=True)
    torch.testing.assert_close(out["total_energy_local"], ref["energy"].detach(), rtol=0, atol=1e-9)
    torch.testing.assert_close(out["forces"], ref["forces"], rtol=0, atol=1e-10)


@mace_torch
@pytest.mark.slow
def test_torchscript_runs_in_plain_torch(model, structures, tmp_path):
    pytest.importorskip("mace.modules")
    path = export.export_torchscript(model, tmp_path / "model.pt")
    graphs = [batch(s, r_max=model.r_max) for s in structures]
    cases = [mace_torch_inputs(g, ELEMENTS, torch.float64) for g in graphs]
    results = run_plain_torch("torchscript", path, cases, tmp_path)
    for g, (energy, forces) in zip(graphs, results, strict=True):
        ref = model(g, compute_forces=True)
        torch.testing.assert_close(energy, ref["energy"].detach(), rtol=0, atol=1e-9)
        torch.testing.assert_close(forces, ref["forces"], rtol=0, atol=1e-10)


# ---------------------------------------------------------------------------- the command line


def _cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "macelab.export", *args, f"hydra.run.dir={cwd / 'export'}"],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=cli_env(),
        timeout=600,
    )


@pytest.mark.slow
def test_cli_exports_a_trained_checkpoint(compose_config, tmp_path):  # noqa: F811
    from macelab.train import run_training
    from macelab.training.checkpoint import load_model

    run_training(compose_config("train", [*TINY, "trainer.max_epochs=1"], tmp_path / "run"))
    ckpt = tmp_path / "run" / "checkpoints" / "best.ckpt"
    result = _cli([f"ckpt_path={ckpt}", "format=pt2", "out=deploy/model.pt2"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    program = torch.export.load(str(tmp_path / "deploy" / "model.pt2")).module()
    model, _ = load_model(ckpt)
    graphs = batch([read_molecule("acac", 9)], r_max=model.r_max)
    energy, forces = program(*pt2_inputs(graphs))  # two outputs: exported without stress
    ref = model(graphs, compute_forces=True)
    torch.testing.assert_close(energy, ref["energy"].detach(), rtol=0, atol=1e-10)
    torch.testing.assert_close(forces, ref["forces"], rtol=0, atol=1e-10)


def test_cli_user_errors_exit_with_one_paragraph(tmp_path):
    for args, message in (
        (["ckpt_path=missing.ckpt"], "does not exist"),
        ([f"ckpt_path={__file__}", "format=onnx"], "choose one of pt2"),
    ):
        result = _cli(args, tmp_path)
        assert result.returncode == 2, result.stderr[-2000:]
        assert result.stderr.startswith("error:") and message in result.stderr
        assert "Traceback" not in result.stderr


def test_pt2_of_a_triton_model_has_plain_aten_operations_only(monkeypatch):
    """A model trained with ``model.backend=triton`` (fused convolution and contraction,
    custom operators) exports the same function in plain aten operations: the file must run
    without macelab."""
    pytest.importorskip("triton")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    from macelab.kernels import set_backend

    triton_model = set_backend(
        small_model(seed=3, atomic_numbers=ELEMENTS, atomic_energies=E0, channels=4, max_L=1,
                    max_ell=2, correlation=2, radial_mlp=[8]).eval(),
        "triton",
    )  # fmt: skip
    program = export.exported_program(triton_model)
    targets = {str(node.target) for node in program.graph.nodes if node.op == "call_function"}
    assert not [t for t in targets if "macelab" in t], targets
    # water and formic acid (3 and 5 atoms, two graphs of a batch): the Triton kernels run in
    # their CPU interpreter, whose cost grows with atoms x neighbours (with one AcAc
    # molecule, 15 atoms, the test took ~1.4x the CPU time; the export itself is the rest)
    graphs = batch([molecule("H2O"), molecule("HCOOH")], r_max=triton_model.r_max)
    energy, forces = program.module()(*pt2_inputs(graphs))[:2]
    expected = triton_model(graphs, compute_forces=True)  # through the Triton kernels
    torch.testing.assert_close(energy, expected["energy"].detach(), rtol=0, atol=1e-10)
    torch.testing.assert_close(forces, expected["forces"].detach(), rtol=0, atol=1e-10)
