"""AOTInductor packages: a model compiled ahead of time, run without macelab's model code.

``python -m macelab.export format=aoti`` compiles the ``pt2`` program (energies and forces,
the force backward traced in; :mod:`macelab.export`) with AOTInductor
(``torch._inductor.aoti_compile_and_package``) for one device and dtype into a ``.pt2``
package: generated C++ (CPU) or C++ and Triton kernels (CUDA) in a shared library, the
weights, and macelab's metadata (element table, cutoff, dtype, outputs). Loading it
(``torch._inductor.aoti_load_package``) needs torch only, of the version that compiled it;
no Python model code runs. :class:`AOTIPotential` is that loaded package with its metadata,
and :class:`macelab.calculator.MACECalculator` takes the package's path (it still builds
the neighbour list). The inputs and outputs are those of the ``pt2`` program::

    potential = AOTIPotential("model.pt2", trust_pickle=True)   # it runs compiled code
    energy, forces = potential(positions, atomic_numbers, edge_index, unit_shifts, cell, batch)

A package runs only on the kind of device it was compiled for (a CUDA package on the GPU
architecture it was compiled on), with the torch version that compiled it.

Loading a package loads the shared library inside it, which runs its code: like every file
that runs code as it loads (docs/security.md), a package loads only with
``trust_pickle=True``, macelab's one opt-in for such files (for packages you built yourself
or got from a source you trust).
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from macelab.errors import ConfigError, UntrustedFileError
from macelab.model.embedding import UnknownElementError

METADATA_KEY = "macelab.json"  # the key of macelab's metadata in the package
FORMAT = "macelab-aoti"


def is_aoti_package(path: str | Path) -> bool:
    """True for a file that is an AOTInductor package (a zip with compiled model code)."""
    path = Path(path)
    if not path.is_file() or not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any("/data/aotinductor/" in name for name in archive.namelist())


class AOTIPotential:
    """A loaded AOTInductor package of a macelab model.

    Args:
        path: the ``.pt2`` package written by ``python -m macelab.export format=aoti``.
        device: where to run; must be the kind of device it was compiled for (default:
            that device).
        trust_pickle: say that you trust the package: loading it runs the compiled code
            inside (without it, :class:`~macelab.errors.UntrustedFileError`).

    Attributes:
        atomic_numbers: the element table; ``r_max`` (Å), ``dtype``, ``device``;
        compute_stress: whether the package also returns the stress;
        hyperparameters: the model's hyperparameters, for reference.
    """

    def __init__(
        self,
        path: str | Path,
        device: str | torch.device | None = None,
        *,
        trust_pickle: bool = False,
    ) -> None:
        path = Path(path)
        if not is_aoti_package(path):
            raise ConfigError(
                f"{path} is not an AOTInductor package; write one with python -m "
                "macelab.export format=aoti."
            )
        if not trust_pickle:
            raise UntrustedFileError(
                f"{path} is an AOTInductor package: loading it loads the compiled shared "
                "library inside, which runs its code, so macelab loads one only when you say "
                "you trust it. For a package you built (python -m macelab.export format=aoti) "
                "or got from a source you trust, pass trust_pickle=True (trust_pickle=true on "
                "the command line), macelab's opt-in for files that run code (docs/security.md).",
                file=path,
            )
        runner = torch._inductor.aoti_load_package(str(path))
        raw = runner.get_metadata().get(METADATA_KEY)
        if raw is None:
            raise ConfigError(
                f"{path} is an AOTInductor package without macelab's metadata; only packages "
                "written by python -m macelab.export format=aoti can be used here."
            )
        meta = json.loads(raw)
        self.path = path
        self.runner = runner
        self.device = torch.device(meta["device"])
        if device is not None and torch.device(device).type != self.device.type:
            raise ConfigError(
                f"{path} was compiled for {self.device.type} and cannot run on "
                f"{torch.device(device)}; export another package with device="
                f"{torch.device(device).type}."
            )
        self.atomic_numbers: list[int] = [int(z) for z in meta["atomic_numbers"]]
        self.r_max = float(meta["r_max"])
        self.dtype: torch.dtype = getattr(torch, meta["dtype"])
        self.outputs: list[str] = list(meta["outputs"])
        self.compute_stress = "stress" in self.outputs
        self.hyperparameters: dict[str, Any] = meta.get("hyperparameters", {})
        self.torch_version = meta.get("torch")

    def check_elements(self, atomic_numbers: Sequence[int] | torch.Tensor) -> None:
        """Raise :class:`UnknownElementError` for atomic numbers outside the table."""
        present = {int(z) for z in torch.as_tensor(atomic_numbers).unique().tolist()}
        unknown = sorted(present - set(self.atomic_numbers))
        if unknown:
            from ase.data import chemical_symbols

            names = ", ".join(f"{chemical_symbols[z]} (Z={z})" for z in unknown)
            table = ", ".join(chemical_symbols[z] for z in self.atomic_numbers)
            raise UnknownElementError(
                f"this model knows the elements [{table}] but the structure contains {names}; "
                "use a model trained on these elements, or remove those atoms."
            )

    def __call__(
        self,
        positions: torch.Tensor,  # [n, 3] Å
        atomic_numbers: torch.Tensor,  # [n] int64
        edge_index: torch.Tensor,  # [2, E] int64 (sender, receiver)
        unit_shifts: torch.Tensor,  # [E, 3]
        cell: torch.Tensor,  # [G, 3, 3]
        batch: torch.Tensor,  # [n] int64
    ) -> dict[str, torch.Tensor]:
        """``energy [G]`` (eV), ``forces [n, 3]`` (eV/Å) and, if exported, ``stress
        [G, 3, 3]`` (eV/Å^3); floating inputs are cast to the package's dtype."""
        if edge_index.shape[1] == 0:
            raise ConfigError(
                "the structure has no pair of atoms within the cutoff; the compiled package "
                "needs at least one edge (use the Python model for isolated atoms)."
            )
        inputs = [
            positions.to(self.device, self.dtype),
            atomic_numbers.to(self.device, torch.int64),
            edge_index.to(self.device, torch.int64),
            unit_shifts.to(self.device, self.dtype),
            cell.to(self.device, self.dtype),
            batch.to(self.device, torch.int64),
        ]
        return dict(zip(self.outputs, self.runner(*inputs), strict=True))

    def from_graph(self, graph: Any) -> dict[str, torch.Tensor]:
        """The outputs for a macelab graph or torch-geometric batch of graphs."""
        return self(
            graph.positions,
            graph.atomic_numbers,
            graph.edge_index,
            graph.unit_shifts,
            graph.cell.reshape(-1, 3, 3),
            graph.batch if getattr(graph, "batch", None) is not None else
            torch.zeros(graph.positions.shape[0], dtype=torch.int64),
        )  # fmt: skip
