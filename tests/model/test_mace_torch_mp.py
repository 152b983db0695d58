"""Parity with mace-torch for the MACE-MP-0b additions: the ZBL pair repulsion and the
Agnesi and Soft distance transforms (float64), both conversion directions.

The structures are compressed (molecules by 0.8, the Si cell by 0.85) so that many pairs lie
inside the sum of their covalent radii, where the ZBL term is not zero. mace-torch computes
some of the ZBL constants in torch's default dtype, so its models run here under a float64
default, as its own calculator does for a float64 model.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from macelab.interop import (
    UnsupportedModelError,
    from_mace_torch,
    mace_torch_inputs,
    to_mace_torch,
)
from macelab.model import count_parameters

from .helpers import (
    E0,
    ELEMENTS,
    batch,
    default_dtype,
    e3nn_without_script,
    read_molecule,
    relative_error,
    silicon_cell,
    small_model,
)

mace_modules = pytest.importorskip("mace.modules")
pytestmark = pytest.mark.mace_torch

PARITY = 1e-10
RESIDUAL = "RealAgnosticResidualInteractionBlock"


def mp_style_model(scale_shift: bool = True, seed: int = 0, **options) -> torch.nn.Module:
    """A small random float64 mace-torch model (4 channels, L = 1, nu = 2, two layers)."""
    from e3nn import o3

    kwargs = {
        "r_max": 4.5,
        "num_bessel": 6,
        "num_polynomial_cutoff": 5,
        "max_ell": 2,
        "interaction_cls": mace_modules.interaction_classes[RESIDUAL],
        "interaction_cls_first": mace_modules.interaction_classes[RESIDUAL],
        "num_interactions": 2,
        "num_elements": len(ELEMENTS),
        "hidden_irreps": o3.Irreps("4x0e + 4x1o"),
        "MLP_irreps": o3.Irreps("16x0e"),
        "atomic_energies": np.array(E0),
        "avg_num_neighbors": 7.5,
        "atomic_numbers": ELEMENTS,
        "correlation": 2,
        "gate": torch.nn.functional.silu,
        "radial_MLP": [8, 8],
        "use_reduced_cg": False,
        **options,
    }
    torch.manual_seed(seed)
    with default_dtype(torch.float64), e3nn_without_script():
        if scale_shift:
            return mace_modules.ScaleShiftMACE(
                atomic_inter_scale=1.4, atomic_inter_shift=-0.3, **kwargs
            )
        return mace_modules.MACE(**kwargs)


@pytest.fixture(autouse=True)
def quick_e3nn_builds():
    with e3nn_without_script():
        yield


@pytest.fixture(scope="module")
def structures():
    """Compressed 3BPA (H C N O) and ethanol, and a compressed periodic Si cell with C, O."""
    molecules = [
        read_molecule("3bpa", 4),
        read_molecule("ethanol", 2),
    ]
    for atoms in molecules:
        atoms.positions *= 0.8
    cell = silicon_cell(seed=5)
    cell.set_cell(cell.cell.array * 0.85, scale_atoms=True)
    return [*molecules, cell]


def _compare(ours, reference, structures) -> dict[str, float]:
    graphs = batch(structures, r_max=ours.r_max)
    out = ours(graphs, compute_forces=True, compute_stress=True)
    with default_dtype(torch.float64):
        ref = reference(
            mace_torch_inputs(graphs, ours.atomic_numbers, ours.dtype),
            compute_force=True,
            compute_stress=True,
        )
    return {
        "energy": relative_error(out["energy"], ref["energy"]),
        "forces": relative_error(out["forces"], ref["forces"]),
        "stress": relative_error(out["stress"][-1], ref["stress"][-1]),
    }


def _perturb(model: torch.nn.Module, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            noise = torch.randn(parameter.shape, generator=generator, dtype=parameter.dtype)
            parameter.add_(0.3 * noise)


@pytest.mark.parametrize(
    ("options", "scale_shift"),
    [
        ({"pair_repulsion": True}, True),
        ({"distance_transform": "Agnesi"}, False),
        ({"distance_transform": "Soft"}, True),
        ({"pair_repulsion": True, "distance_transform": "Agnesi", "apply_cutoff": False}, False),
    ],
    ids=["zbl", "agnesi", "soft", "zbl-agnesi-plain"],
)
def test_mp_parity(structures, options, scale_shift):
    reference = mp_style_model(scale_shift=scale_shift, **options)
    ours = from_mace_torch(reference)
    h = ours.hyperparameters
    assert h["pair_repulsion"] == options.get("pair_repulsion", False)
    assert h["distance_transform"] == options.get("distance_transform", "none").lower()
    assert count_parameters(ours) == count_parameters(reference)
    for quantity, error in _compare(ours, reference, structures).items():
        assert error < PARITY, f"from_mace_torch {quantity}: {error:.1e}"
    _perturb(ours, seed=1)
    converted = to_mace_torch(ours)
    assert hasattr(converted, "pair_repulsion_fn") == h["pair_repulsion"]
    for quantity, error in _compare(ours, converted, structures).items():
        assert error < PARITY, f"to_mace_torch {quantity}: {error:.1e}"


def test_zbl_is_repulsive_at_short_range(structures):
    """The ZBL stage alone: positive, larger for closer pairs, zero beyond the radii."""
    model = small_model(seed=4, channels=4, max_L=0, max_ell=1, correlation=1,
                        num_interactions=1, radial_mlp=[8], pair_repulsion=True)  # fmt: skip
    graphs = batch(structures[1:2], r_max=model.r_max)
    _, lengths = model.edges(
        graphs.positions, graphs.edge_index, graphs.unit_shifts, graphs.cell.reshape(-1, 3, 3),
        graphs.batch,
    )  # fmt: skip
    energy = model.pair_repulsion(lengths, graphs.atomic_numbers, graphs.edge_index)  # [n]
    assert energy.shape == (graphs.num_nodes,) and (energy >= 0).all() and energy.max() > 0
    far = model.pair_repulsion(lengths + 3.0, graphs.atomic_numbers, graphs.edge_index)
    assert float(far.abs().max()) == 0.0
    closer = model.pair_repulsion(0.9 * lengths, graphs.atomic_numbers, graphs.edge_index)
    assert float(closer.sum()) > float(energy.sum())


def test_changed_constants_are_refused():
    reference = mp_style_model(distance_transform="Agnesi", pair_repulsion=True)
    with torch.no_grad():
        reference.radial_embedding.distance_transform.q.fill_(1.1)
    with pytest.raises(UnsupportedModelError, match="AgnesiTransform with trained"):
        from_mace_torch(reference)
    reference = mp_style_model(pair_repulsion=True)
    with torch.no_grad():
        reference.pair_repulsion_fn.a_exp.fill_(0.25)
    with pytest.raises(UnsupportedModelError, match="ZBL pair repulsion with other"):
        from_mace_torch(reference)
