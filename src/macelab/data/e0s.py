"""Isolated-atom reference energies E0 (eV per element), three ways.

* ``file``: from isolated-atom configurations, either a separate file (3BPA ``iso_atoms.xyz``,
  AcAc ``isolated_atoms.xyz``) or frames of the training file whose ``config_type`` is
  ``IsolatedAtom`` / ``isolated_atom`` (which are then not trained on, as in mace-torch).
* a mapping ``{Z or symbol: eV}`` from the config.
* ``least_squares``: the E0s that best explain the training energies as a sum of per-element
  terms, ``min ||N E0 - E||`` with ``N[g, e]`` the count of element e in graph g (mace-torch's
  ``E0s="average"``). With a single composition (one rMD17 molecule) only the sum is fixed;
  numpy's minimum-norm solution is then used, which is what mace-torch does too.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from ase.data import atomic_numbers as SYMBOL_TO_Z
from ase.data import chemical_symbols

from macelab.data.store import GraphStore
from macelab.errors import ConfigError, DataError

log = logging.getLogger(__name__)


def is_isolated_atom(config_type: str | None) -> bool:
    """Whether a ``config_type`` marks an isolated atom (``IsolatedAtom``, ``isolated_atom``)."""
    if config_type is None:
        return False
    return config_type.replace("_", "").replace("-", "").replace(" ", "").lower() == "isolatedatom"


def isolated_atom_mask(store: GraphStore) -> np.ndarray:
    """``[n_graphs]`` bool: which graphs are marked as isolated atoms by their config_type."""
    return np.array([is_isolated_atom(t) for t in store.config_types], dtype=bool)


def e0s_from_isolated_atoms(store: GraphStore) -> dict[int, float]:
    """E0s from a store of isolated-atom graphs (one atom each, with an energy)."""
    e0s: dict[int, float] = {}
    natoms = store.num_atoms.tolist()
    for g in range(len(store)):
        record = int(store.tensors["index"][g])
        if natoms[g] != 1:
            raise DataError(
                f"an isolated-atom configuration must hold one atom, this one holds {natoms[g]}; "
                "fix its config_type or the E0 file.",
                file=store.source,
                record=record,
                field="config_type",
            )
        if not bool(store.tensors["has_energy"][g]):
            raise DataError(
                "this isolated-atom configuration has no energy; check data.energy_key.",
                file=store.source,
                record=record,
                field="energy",
            )
        z = int(store.tensors["atomic_numbers"][store.tensors["node_ptr"][g]])
        energy = float(store.tensors["energy"][g])
        if z in e0s and not np.isclose(e0s[z], energy, rtol=0, atol=1e-8):
            raise DataError(
                f"gives E0({chemical_symbols[z]}) = {energy} eV, but an earlier record gives "
                f"{e0s[z]} eV; keep one isolated-atom energy per element.",
                file=store.source,
                record=record,
                field="energy",
            )
        e0s[z] = energy
    return e0s


def e0s_from_mapping(mapping: Mapping[Any, Any]) -> dict[int, float]:
    """``{1: -13.6, "C": -1029.5, "8": ...}`` -> ``{Z: eV}``; keys are Z or element symbols."""
    e0s: dict[int, float] = {}
    for key, value in mapping.items():
        text = str(key).strip()
        if text.isdigit():
            z = int(text)
        elif text in SYMBOL_TO_Z:
            z = SYMBOL_TO_Z[text]
        else:
            raise ConfigError(
                f"data.e0s has the key {key!r}, which is neither an atomic number nor an "
                "element symbol; write e.g. {1: -13.6, 6: -1029.5} or {H: -13.6, C: -1029.5}."
            )
        try:
            e0s[z] = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"data.e0s[{key!r}] = {value!r} is not a number (eV).") from None
        if not np.isfinite(e0s[z]):
            raise ConfigError(f"data.e0s[{key!r}] = {value!r} is not finite.")
    return e0s


def e0s_least_squares(store: GraphStore, elements: list[int]) -> dict[int, float]:
    """Least-squares E0s for ``elements`` from the energies of the graphs in ``store``."""
    has_energy = store.tensors["has_energy"].numpy()
    if not has_energy.any():
        raise DataError(
            "no configuration has an energy, so E0s cannot be fitted; check data.energy_key.",
            file=store.source,
            field="energy",
        )
    columns = torch.as_tensor(np.searchsorted(elements, store.tensors["atomic_numbers"].numpy()))
    counts = torch.zeros(len(store), len(elements), dtype=torch.float64)
    counts.index_put_(
        (store.graph_of_atom, columns), torch.ones(columns.shape[0], dtype=torch.float64), True
    )
    matrix = counts.numpy()[has_energy]  # [n_graphs, n_elements]
    energies = store.tensors["energy"].numpy()[has_energy]
    solution, _, rank, _ = np.linalg.lstsq(matrix, energies, rcond=None)
    if rank < len(elements):
        log.info(
            "least-squares E0s: the training compositions fix only %d of %d element energies; "
            "using the minimum-norm solution (as mace-torch's E0s='average' does).",
            rank,
            len(elements),
        )
    return {z: float(e) for z, e in zip(elements, solution, strict=True)}


def e0s_for_elements(e0s: Mapping[int, float], elements: list[int], origin: str) -> list[float]:
    """E0s in the order of ``elements``; error naming each element that has none."""
    missing = [z for z in elements if z not in e0s]
    if missing:
        names = ", ".join(f"{chemical_symbols[z]} (Z={z})" for z in missing)
        raise ConfigError(
            f"no E0 for {names}, which the training set contains; E0s came from {origin}. "
            "Add them (data.e0s as a mapping), or set data.e0s=least_squares."
        )
    return [float(e0s[z]) for z in elements]
