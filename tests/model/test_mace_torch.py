"""Parity with mace-torch, the reference implementation, in both directions (float64).

``from_mace_torch``: a randomly initialised mace-torch model and its conversion give the
same energies, forces and stress. ``to_mace_torch``: a macelab model with perturbed weights
and its conversion agree as well (so the check does not rely on a round trip). Both on a
batch of real molecules and a periodic cell, over a grid of hyperparameters, and through the
two ASE calculators.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from macelab.data.statistics import DatasetStatistics
from macelab.interop import (
    UnsupportedModelError,
    from_mace_torch,
    load_mace_torch_file,
    mace_torch_inputs,
    to_mace_torch,
)
from macelab.model import MACE, build_model, count_parameters

from .helpers import (
    E0,
    ELEMENTS,
    batch,
    compose_model_config,
    default_dtype,
    e3nn_without_script,
    read_molecule,
    relative_error,
    silicon_cell,
    small_model,
)

mace_modules = pytest.importorskip("mace.modules")
pytestmark = pytest.mark.mace_torch

PARITY = 1e-10  # the bound on relative differences in float64
RESIDUAL = "RealAgnosticResidualInteractionBlock"
PLAIN = "RealAgnosticInteractionBlock"


def mace_torch_model(
    *,
    max_ell: int = 2,
    max_L: int = 1,
    correlation: int | list[int] = 2,
    num_interactions: int = 2,
    first: str = RESIDUAL,
    scale_shift: bool = True,
    channels: int = 4,
    scale: float | list[float] = 1.4,
    shift: float | list[float] = -0.3,
    seed: int = 0,
    **extra,
) -> torch.nn.Module:
    """A randomly initialised float64 mace-torch model with the given hyperparameters."""
    from e3nn import o3

    hidden = o3.Irreps([(channels, (L, (-1) ** L)) for L in range(max_L + 1)])
    kwargs = {
        "r_max": 5.0,
        "num_bessel": 6,
        "num_polynomial_cutoff": 5,
        "max_ell": max_ell,
        "interaction_cls": mace_modules.interaction_classes[RESIDUAL],
        "interaction_cls_first": mace_modules.interaction_classes[first],
        "num_interactions": num_interactions,
        "num_elements": len(ELEMENTS),
        "hidden_irreps": hidden,
        "MLP_irreps": o3.Irreps("16x0e"),
        "atomic_energies": np.array(E0),
        "avg_num_neighbors": 7.5,
        "atomic_numbers": ELEMENTS,
        "correlation": correlation,
        "gate": torch.nn.functional.silu,
        "radial_MLP": [8, 8],
        # mace_run_train's default. The class default (True) picks cuEquivariance's reduced
        # basis whenever cuequivariance is installed (macelab[cueq]), e3nn's full one otherwise.
        "use_reduced_cg": False,
    }
    kwargs.update(extra)
    torch.manual_seed(seed)
    with default_dtype(torch.float64), e3nn_without_script():
        if scale_shift:
            return mace_modules.ScaleShiftMACE(
                atomic_inter_scale=scale, atomic_inter_shift=shift, **kwargs
            )
        return mace_modules.MACE(**kwargs)


@pytest.fixture(autouse=True)
def quick_e3nn_builds():
    """Both libraries build their e3nn blocks without TorchScript here (same numbers, half
    the construction time); the calculator tests load scripted models from files."""
    with e3nn_without_script():
        yield


@pytest.fixture(scope="module")
def structures():
    """3BPA (H C N O), ethanol and a periodic Si cell with C and O: every element, in one
    batch with molecules and a cell."""
    return [
        read_molecule("3bpa", 4),
        read_molecule("ethanol", 2),
        silicon_cell(seed=5),
    ]


def _compare(ours: MACE, reference: torch.nn.Module, structures) -> dict[str, float]:
    """Relative differences of energy, forces and stress (of the periodic cell)."""
    graphs = batch(structures, r_max=ours.r_max)
    out = ours(graphs, compute_forces=True, compute_stress=True)
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
    """Move every weight by random noise, so that no value is left from a conversion."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            noise = torch.randn(parameter.shape, generator=generator, dtype=parameter.dtype)
            parameter.add_(0.3 * noise)


def _grid() -> list[dict]:
    """All 27 (correlation, max_ell, max_L); num_interactions (1-3), interaction_first and
    scale_shift vary along Latin-square diagonals, so each of their values meets every value
    of each of the first three."""
    cases = []
    for corr, max_ell, max_L in itertools.product([1, 2, 3], [1, 2, 3], [0, 1, 2]):
        cases.append(
            {
                "correlation": corr,
                "max_ell": max_ell,
                "max_L": max_L,
                "num_interactions": 1 + (corr + max_ell + max_L) % 3,
                "first": PLAIN if (corr + max_L) % 2 else RESIDUAL,
                "scale_shift": (max_ell + max_L) % 2 == 0,
            }
        )
    return cases


def _case_id(case: dict) -> str:
    first = "plain" if case["first"] == PLAIN else "res"
    return (
        f"nu{case['correlation']}-ell{case['max_ell']}-L{case['max_L']}-"
        f"T{case['num_interactions']}-{first}-{'ss' if case['scale_shift'] else 'noss'}"
    )


GRID = _grid()
# By default a subset runs in which every value of every factor occurs (and max_L > 0 with
# several layers); the other cases are marked slow.
QUICK = {"nu1-ell1-L2-T2", "nu2-ell2-L1-T3", "nu3-ell3-L1-T2", "nu2-ell1-L0-T1", "nu3-ell2-L2-T2"}


@pytest.mark.parametrize(
    "case",
    [
        pytest.param(
            case,
            id=_case_id(case),
            marks=() if _case_id(case).rsplit("-", 2)[0] in QUICK else pytest.mark.slow,
        )
        for case in GRID
    ],
)
def test_parity_grid(structures, case):
    reference = mace_torch_model(**case, seed=len(_case_id(case)))
    ours = from_mace_torch(reference)
    assert ours.hyperparameters["correlation"] == [case["correlation"]] * case["num_interactions"]
    assert count_parameters(ours) == count_parameters(reference)
    for quantity, error in _compare(ours, reference, structures).items():
        assert error < PARITY, f"from_mace_torch {quantity}: {error:.1e}"
    # The other direction, from weights that never came from mace-torch.
    _perturb(ours, seed=1)
    converted = to_mace_torch(ours)
    assert type(converted).__name__ == ("ScaleShiftMACE" if case["scale_shift"] else "MACE")
    for quantity, error in _compare(ours, converted, structures).items():
        assert error < PARITY, f"to_mace_torch {quantity}: {error:.1e}"


@pytest.mark.parametrize(
    "options",
    [
        {"correlation": 4, "max_ell": 2, "max_L": 1},
        {"correlation": [3, 1], "max_ell": 2, "max_L": 2},
        {"apply_cutoff": False},
        {"gate": torch.tanh, "first": PLAIN},
    ],
    ids=["nu4", "correlation-list", "no-apply-cutoff", "tanh-plain"],
)
def test_parity_options(structures, options):
    reference = mace_torch_model(**options)
    ours = from_mace_torch(reference)
    for quantity, error in _compare(ours, reference, structures).items():
        assert error < PARITY, f"{quantity}: {error:.1e}"
    _perturb(ours, seed=2)
    for quantity, error in _compare(ours, to_mace_torch(ours), structures).items():
        assert error < PARITY, f"to_mace_torch {quantity}: {error:.1e}"


def test_parity_with_reduced_basis(structures):
    """macelab's reduced CG basis represents mace-torch's full one exactly, and back."""
    reference = mace_torch_model(max_ell=2, max_L=2, correlation=3)
    ours = from_mace_torch(reference, reduced_cg=True)
    assert count_parameters(ours) < count_parameters(reference)
    for quantity, error in _compare(ours, reference, structures).items():
        assert error < PARITY, f"{quantity}: {error:.1e}"
    _perturb(ours, seed=3)
    for quantity, error in _compare(ours, to_mace_torch(ours), structures).items():
        assert error < PARITY, f"to_mace_torch {quantity}: {error:.1e}"


def test_parity_float32(structures):
    """A float32 mace-torch model converts to a float32 macelab model with float32 parity."""
    reference = mace_torch_model().float()
    ours = from_mace_torch(reference)
    assert ours.dtype == torch.float32
    errors = _compare(ours, reference, structures)
    assert errors["energy"] < 1e-6 and errors["forces"] < 1e-4


def test_multi_head_models_need_a_head(structures):
    reference = mace_torch_model(
        heads=["pbe", "r2scan"],
        atomic_energies=np.array([E0, [e + 1.0 for e in E0]]),
        scale=[1.4, 0.8],
        shift=[-0.3, 0.1],
        max_ell=2,
        max_L=1,
        num_interactions=2,
    )
    with pytest.raises(UnsupportedModelError, match="2 heads"):
        from_mace_torch(reference)
    with pytest.raises(UnsupportedModelError, match="no head 'pbe0'"):
        from_mace_torch(reference, head="pbe0")
    graphs = batch(structures)
    for index, name in enumerate(reference.heads):
        ours = from_mace_torch(reference, head=name)
        inputs = mace_torch_inputs(graphs, ours.atomic_numbers)
        inputs["head"] = torch.full((len(structures),), index, dtype=torch.int64)
        ref = reference(inputs, compute_force=True)
        out = ours(graphs)
        assert relative_error(out["energy"], ref["energy"]) < PARITY
        assert relative_error(out["forces"], ref["forces"]) < PARITY


def test_ase_calculators_agree(structures, tmp_path):
    """mace-torch's calculator on a saved .model file vs ours on its conversion."""
    from mace.calculators import MACECalculator as MaceTorchCalculator

    from macelab.calculator import MACECalculator

    reference = mace_torch_model(max_ell=2, max_L=1, correlation=3, num_interactions=2)
    path = tmp_path / "reference.model"
    torch.save(reference, path)
    ours = from_mace_torch(load_mace_torch_file(path, trust_pickle=True))
    theirs_calc = MaceTorchCalculator(model_paths=str(path), device="cpu", default_dtype="float64")
    ours_calc = MACECalculator(ours, precision="64")
    for atoms in structures:
        expected, actual = atoms.copy(), atoms.copy()
        expected.calc, actual.calc = theirs_calc, ours_calc
        assert relative_error(actual.get_potential_energy(), expected.get_potential_energy()) < (
            PARITY
        )
        assert relative_error(actual.get_forces(), expected.get_forces()) < PARITY
        if atoms.pbc.all():
            assert relative_error(actual.get_stress(), expected.get_stress()) < PARITY


def test_macelab_model_runs_in_mace_torch_calculator(structures, tmp_path):
    """to_mace_torch's result saved as a .model file works in mace-torch's calculator."""
    from mace.calculators import MACECalculator as MaceTorchCalculator

    from macelab.calculator import MACECalculator

    ours = small_model(seed=12, channels=4, max_L=1, max_ell=2, correlation=2)
    path = tmp_path / "from_macelab.model"
    torch.save(to_mace_torch(ours), path)
    theirs_calc = MaceTorchCalculator(model_paths=str(path), device="cpu", default_dtype="float64")
    atoms = structures[-1].copy()
    atoms.calc = theirs_calc
    energy, stress = atoms.get_potential_energy(), atoms.get_stress()
    atoms.calc = MACECalculator(ours)
    assert relative_error(atoms.get_potential_energy(), energy) < PARITY
    assert relative_error(atoms.get_stress(), stress) < PARITY


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"radial_type": "gaussian"}, "radial basis GaussianBasis"),
        ({"use_agnostic_product": True}, "agnostic"),
        ({"use_last_readout_only": True}, "last layer only"),
        (
            {"interaction_cls": "RealAgnosticDensityResidualInteractionBlock"},
            "RealAgnosticDensityResidualInteractionBlock",
        ),
    ],
    ids=["gaussian", "agnostic-product", "last-readout", "density"],
)
def test_unsupported_models_are_refused(options, message):
    if "interaction_cls" in options:
        options = {"interaction_cls": mace_modules.interaction_classes[options["interaction_cls"]]}
    reference = mace_torch_model(max_ell=1, max_L=0, correlation=1, **options)
    with pytest.raises(UnsupportedModelError, match=message):
        from_mace_torch(reference)


def test_other_model_classes_are_refused():
    with pytest.raises(UnsupportedModelError, match="MACE and ScaleShiftMACE"):
        from_mace_torch(torch.nn.Linear(2, 2))


def test_load_refuses_missing_files_and_state_dicts(tmp_path):
    from macelab.errors import MissingDataError

    with pytest.raises(MissingDataError, match="no such mace-torch model file"):
        load_mace_torch_file(tmp_path / "absent.model")
    path = tmp_path / "state.pt"
    torch.save({"model": {}}, path)
    with pytest.raises(UnsupportedModelError, match="holds a dict"):
        load_mace_torch_file(path, trust_pickle=True)


@pytest.mark.parametrize(
    ("size", "channels", "max_L"),
    [
        ("small", 128, 0),
        pytest.param("medium", 128, 1, marks=pytest.mark.slow),
        pytest.param("large", 128, 2, marks=pytest.mark.slow),
        ("paper", 256, 2),
    ],
)
def test_parameter_counts_match_mace_torch(tmp_path, size, channels, max_L):
    """The models conf/model builds (model=mace, model/size=...) have mace-torch's parameter
    count for the same architecture (its mace_run_train defaults, use_reduced_cg=False),
    here with the element table of aspirin (H, C, O)."""
    cfg = compose_model_config(tmp_path, [f"model/size={size}"])
    statistics = DatasetStatistics(
        atomic_numbers=[1, 6, 8],
        atomic_energies=[0.0, 0.0, 0.0],
        avg_num_neighbors=10.0,
        mean_interaction_energy_per_atom=0.0,
        std_interaction_energy_per_atom=1.0,
        rms_forces=1.0,
        num_configurations=1,
        r_max=5.0,
    )
    with default_dtype(torch.float64):
        ours = build_model(cfg, statistics)
    assert (ours.hyperparameters["channels"], ours.hyperparameters["max_L"]) == (channels, max_L)
    reference = mace_torch_model(
        channels=channels,
        max_L=max_L,
        max_ell=cfg.max_ell,
        correlation=cfg.correlation,
        num_interactions=cfg.num_interactions,
        radial_MLP=list(cfg.radial_mlp),
        num_bessel=cfg.num_bessel,
        num_polynomial_cutoff=cfg.num_polynomial_cutoff,
        r_max=cfg.r_max,
        atomic_numbers=[1, 6, 8],
        num_elements=3,
        atomic_energies=np.zeros(3),
    )
    assert count_parameters(ours) == count_parameters(reference)
