"""Sizes, repetitions and the model of one harness run: the full (GPU) run and ``--tiny``.

Everything a run measures is decided here, so that the record can say exactly what was run
and ``--tiny`` shrinks every workload in one place.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any


@dataclass(frozen=True)
class ModelSpec:
    """MACE hyperparameters (macelab's names, docs/design.md) of the benchmarked model.

    The default is the paper's rMD17 model: 256 channels, L_max 2, l_max 3, correlation 3,
    two interactions, r_max 5 Å, 8 Bessel functions, polynomial envelope p = 5, radial MLP
    [64, 64, 64], 16 hidden readout channels, elements H C N O.
    """

    channels: int = 256
    max_L: int = 2  # noqa: N815 (the contract's hyperparameter name)
    max_ell: int = 3
    correlation: int = 3
    num_interactions: int = 2
    r_max: float = 5.0
    num_bessel: int = 8
    num_polynomial_cutoff: int = 5
    radial_mlp: tuple[int, ...] = (64, 64, 64)
    readout_hidden: int = 16
    atomic_numbers: tuple[int, ...] = (1, 6, 7, 8)
    gate: str = "silu"
    interaction: str = "RealAgnosticResidualInteractionBlock"


@dataclass(frozen=True)
class Reps:
    """Warm-up calls, timed repetitions and a wall-clock cap per measurement."""

    warmup: int
    repeat: int
    max_seconds: float


@dataclass(frozen=True)
class Settings:
    """One harness run: model, systems, repetitions and which paths to time where."""

    name: str
    model: ModelSpec = field(default_factory=ModelSpec)
    train_batch_sizes: tuple[int, ...] = (5, 32)
    num_rotating_batches: int = 4
    small_molecule_atoms: int = 27
    # 2100 atoms: e3nn inference with forces holds ~0.4 MiB per edge in float32 (measured on
    # CPU, peak RSS, 150-atom box), so 3000 atoms (162k edges) would need ~65 GB and float64
    # twice that; 2100 atoms (~114k edges) leaves float32 well inside an H100's 80 GB.
    water_molecules: int = 700
    check_water_molecules: int = 64
    scaling_atoms: tuple[int, ...] = (100, 300, 1000, 3000, 10000, 20000)
    scaling_paths: tuple[str, ...] = (
        "macelab/32",
        "macelab/bf16-mixed",
        "macelab+triton/32",
        "macelab+conv/32",
        "macelab+conv+cueq/32",
        "macelab+conv+cueq+graphs/32",
        "mace-torch/32",
        "mace-torch+cueq/32",
    )
    cueq_precisions: tuple[str, ...] = ("32",)
    profile_paths: tuple[str, ...] = (
        "macelab/64",
        "macelab/32",
        "macelab+triton/32",
        "macelab+triton+graphs/32",
        "macelab+conv/32",
        "macelab+conv+graphs/32",
        "macelab+conv+compiled/32",
        "macelab+triton+compiled/32",
        "macelab/bf16-mixed",
        "mace-torch/64",
        "mace-torch/32",
        "mace-torch+cueq/32",
    )
    profile_large_paths: tuple[str, ...] = (
        "macelab+triton/32",
        "macelab+triton+graphs/32",
        "macelab+conv/32",
        "macelab+conv+cueq/32",
        "macelab+triton+compiled/32",
        "mace-torch/32",
        "mace-torch+cueq/32",
    )
    train_reps: Reps = Reps(warmup=5, repeat=20, max_seconds=8.0)
    infer_small_reps: Reps = Reps(warmup=10, repeat=50, max_seconds=6.0)
    infer_large_reps: Reps = Reps(warmup=1, repeat=10, max_seconds=6.0)
    scaling_reps: Reps = Reps(warmup=1, repeat=5, max_seconds=4.0)
    profile_reps: Reps = Reps(warmup=3, repeat=5, max_seconds=5.0)
    ceiling_matmul_n: int = 8192
    ceiling_copy_mib: int = 1024
    memory_headroom: float = 0.85

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


FULL = Settings(name="full")

TINY = Settings(
    name="tiny",
    model=ModelSpec(
        channels=8,
        max_L=1,
        max_ell=2,
        correlation=2,
        radial_mlp=(8, 8),
        readout_hidden=4,
    ),
    train_batch_sizes=(2, 3),
    num_rotating_batches=2,
    small_molecule_atoms=27,
    water_molecules=40,
    check_water_molecules=8,
    scaling_atoms=(30, 90),
    scaling_paths=("macelab/32", "mace-torch/32"),
    profile_paths=("macelab/32", "mace-torch/32"),
    profile_large_paths=("macelab/32", "mace-torch/32"),
    train_reps=Reps(warmup=0, repeat=2, max_seconds=2.0),
    infer_small_reps=Reps(warmup=1, repeat=2, max_seconds=1.0),
    infer_large_reps=Reps(warmup=0, repeat=2, max_seconds=1.0),
    scaling_reps=Reps(warmup=0, repeat=2, max_seconds=1.0),
    profile_reps=Reps(warmup=0, repeat=1, max_seconds=1.0),
    ceiling_matmul_n=128,
    ceiling_copy_mib=16,
)


# The precision issue's "large-L model": equivariant features up to L = 3 (128 channels per
# degree: 128 x (1 + 3 + 5 + 7) = 2048 values per node against the paper model's 2304), so
# the tensor products carry more and higher-degree paths. The water box is smaller: e3nn's
# per-edge tensors grow with L and the float64 reference of the check must fit as well.
LARGE_L = replace(
    FULL,
    name="full-large_L",
    model=ModelSpec(channels=128, max_L=3, max_ell=3),
    water_molecules=400,
)

MODELS = {"paper": FULL, "large_L": LARGE_L}


def settings_for(tiny: bool, model: str = "paper") -> Settings:
    """The settings of a full run (the paper model, or ``large_L``) or of a ``--tiny`` smoke
    run (``model`` then picks nothing: the tiny model is always the same)."""
    if tiny:
        return TINY
    if model not in MODELS:
        raise SystemExit(f"unknown model {model!r}; choose from {sorted(MODELS)}")
    return MODELS[model]
