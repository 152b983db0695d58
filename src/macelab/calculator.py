"""An ASE calculator around a macelab MACE model.

    from macelab.calculator import MACECalculator
    atoms.calc = MACECalculator(model, device="cpu", precision="64")
    atoms.get_potential_energy(), atoms.get_forces(), atoms.get_stress()

The calculator owns a copy of the model (or of each model of an ensemble), cast to the
requested precision and device, in eval mode. A model is a macelab model object, a macelab
checkpoint path (its EMA weights), a model folder, a mace-torch ``.model`` file (a pickle:
``trust_pickle=True``), a foundation model name such as ``"mace-off-small"``
(:mod:`macelab.foundations`), or an AOTInductor package (``python -m macelab.export
format=aoti``, :mod:`macelab.aoti`: compiled code, no Python model); a list of them is an
ensemble whose mean energy and forces are the results, with their spread across members as
the uncertainty.

Each new geometry (ASE reports changed positions, cell, pbc or numbers) gets a neighbour
list from the data layer (:func:`macelab.data.graph.atoms_to_graph`), the same one training
uses, built at ``r_max + skin`` and reused while atoms move little; each plain call gives
the model the list's edges shorter than ``r_max`` only, as a fresh list would have. A plain
call (no ``accelerate``) also reuses the weighted product-basis tensors of the calculator's
fixed weights (:func:`macelab.kernels.freeze_contractions`) instead of recomputing
them: the same numbers, about a third less work for a small model on a CPU. Stress is
computed for fully periodic cells only. Two atoms closer than ``min_distance`` (0.3 Å by
default) raise a :class:`~macelab.errors.DataError` naming them, instead of returning the
NaN energies and forces a model gives for coincident atoms.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from ase import Atoms
from ase.calculators.calculator import Calculator, all_changes
from ase.stress import full_3x3_to_voigt_6_stress
from torch_geometric.data import Batch

from macelab.aoti import AOTIPotential, is_aoti_package
from macelab.data.graph import atoms_to_graph
from macelab.data.neighbors import DEFAULT_MIN_DISTANCE, closest_pair, too_close_error
from macelab.devices import resolve_device
from macelab.errors import ConfigError
from macelab.foundations import open_model
from macelab.kernels import freeze_contractions
from macelab.precision.inference import for_inference
from macelab.runtime import RuntimePlan, apply_runtime
from macelab.speed.compiled import CompiledPotential
from macelab.speed.cuda_graphs import GraphedPotential

ACCELERATIONS = (None, "graphs", "compiled")


class MACECalculator(Calculator):
    """ASE calculator for a :class:`macelab.model.MACE`, or an ensemble of them.

    Args:
        model: a macelab model; the path of a macelab checkpoint (EMA weights), a model
            folder, a mace-torch ``.model`` file or an AOTInductor package (``.pt2`` of
            ``python -m macelab.export format=aoti``); a foundation model name of
            :data:`macelab.foundations.FOUNDATION_MODELS`; or a list of these (an
            ensemble). Models are copied; the originals are left as they are.
        device: torch device to run on, e.g. ``"cpu"`` or ``"cuda"``. A package runs on
            the kind of device it was compiled for.
        precision: any precision name (``macelab.precision.precision_names()``): ``"64"``
            (float64, the default for models), ``"32"``, ``"tf32"``, ``"bf16-mixed"``,
            ``"16-mixed"`` or a per-stage policy such as ``"policy_safe"``. A package
            computes in the dtype it was compiled for: ``None`` (the default), or ``"64"`` /
            ``"32"`` naming that dtype.
        accelerate: ``None`` (plain calls), ``"graphs"`` (CUDA graphs, ~7x faster for small
            molecules on an H100) or ``"compiled"`` (make_fx + Inductor + CUDA graphs, faster
            still, but each new shape bucket compiles for about a minute); CUDA only.
        skin: Å added to the cutoff of the neighbour list, which is then reused until an
            atom has moved by more than ``skin / 2`` (or numbers, cell or pbc change). The
            extra edges lie beyond the cutoff, where the radial envelope is exactly zero;
            a plain call leaves them out (lengths checked on the host every call), so
            results equal a fresh list's to rounding. ``0`` rebuilds it every call.
        edge_chunk: compute messages in chunks of this many edges with activation
            checkpointing (:meth:`macelab.model.MACE.set_edge_chunk`): less memory for very
            large systems, a little more time; with ``accelerate=None`` only.
        runtime: how the models compute, a :class:`~macelab.runtime.RuntimePlan` or a
            ``conf/runtime`` mapping (contraction backend, fused convolution, edge chunking;
            ``cuda_graphs`` is ``accelerate="graphs"``, ``compile`` is
            ``accelerate="compiled"``, ``precision_policy`` is ``precision``). ``accelerate``
            and ``edge_chunk`` are its older names, still taken. None: the models as given.
        trust_pickle: load checkpoints that hold more than tensors and plain values,
            mace-torch ``.model`` files (pickles) and AOTInductor packages (compiled code),
            which runs code stored in them (trusted files only; by default such a file raises
            :class:`~macelab.errors.UntrustedFileError`, see docs/security.md). A
            foundation model name needs it on first use only: its converted model is
            cached as safetensors (:func:`macelab.foundations.load`).
        min_distance: Å; two atoms closer than this raise a ``DataError`` naming them
            (``0`` or ``None``: no check). Checked on the neighbour list's edges, every call.
        **kwargs: passed to :class:`ase.calculators.calculator.Calculator`.

    Results: ``energy`` and ``free_energy`` (eV), ``forces`` (eV/Å), ``stress`` (eV/Å^3,
    Voigt order, periodic cells only), ``node_energies`` and ``energies`` (eV per atom, E0
    included; ``energies`` is ASE's name). An ensemble reports the member means, plus
    ``energy_std`` (eV), ``forces_std`` ``[n_atoms, 3]`` (eV/Å, standard deviation over
    members per component) and ``forces_uncertainty`` ``[n_atoms]`` (the norm of
    ``forces_std`` per atom, eV/Å): large values flag structures the models disagree on.
    A package returns no per-atom energies (``node_energies``, ``energies``), and a stress
    only if it was exported with ``stress=true``.
    """

    implemented_properties: ClassVar[list[str]] = [
        "energy",
        "free_energy",
        "forces",
        "stress",
        "node_energies",
        "energies",
    ]

    def __init__(
        self,
        model: torch.nn.Module | str | Path | Sequence[torch.nn.Module | str | Path],
        device: str | torch.device = "cpu",
        precision: str | int | None = None,
        accelerate: str | None = None,
        skin: float = 0.5,
        edge_chunk: int | None = None,
        trust_pickle: bool = False,
        min_distance: float | None = DEFAULT_MIN_DISTANCE,
        runtime: RuntimePlan | Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.device = resolve_device(device)
        plan = None
        if runtime is not None:
            plan = (
                runtime if isinstance(runtime, RuntimePlan) else RuntimePlan.from_mapping(runtime)
            )
            accelerate = accelerate or _accelerate(plan)
            edge_chunk = edge_chunk if edge_chunk is not None else plan.edge_chunk
            precision = precision if precision is not None else plan.precision_policy
        if accelerate not in ACCELERATIONS:
            raise ConfigError(
                f"unknown accelerate={accelerate!r} for MACECalculator; choose None (null on "
                "the command line), 'graphs' or 'compiled'."
            )
        if accelerate is not None and self.device.type != "cuda":
            raise ConfigError(
                f"accelerate={accelerate!r} needs a CUDA device, not {self.device}; on the "
                "CPU leave accelerate unset (None; accelerate=null on the command line)."
            )
        sources = list(model) if isinstance(model, list | tuple) else [model]
        if not sources:
            raise ConfigError("MACECalculator needs at least one model or checkpoint path.")
        self.members = []
        self.packages = []  # AOTInductor packages: compiled, no Python model
        for source in sources:
            if _is_package(source):
                self.packages.append(_load_package(source, self.device, precision, trust_pickle))
                continue
            model_object = _as_model(source, trust_pickle)
            member, context = for_inference(model_object, str(precision or "64"), self.device)
            if plan is not None:  # the kernels; graphs, compilation and chunking below
                kernels = RuntimePlan(plan.backend, plan.fused_convolution)
                apply_runtime(member, kernels)
            for parameter in member.parameters():
                parameter.requires_grad_(False)
            if accelerate is None:
                with context():  # in the call's precision (autocast), as computed per call
                    freeze_contractions(member)  # fixed weights: T_nu once, not per call
            self.members.append((member, context))
        if self.packages and (accelerate is not None or edge_chunk is not None):
            raise ConfigError(
                "an AOTInductor package is already compiled: use it with accelerate=None and "
                "edge_chunk=None."
            )
        if edge_chunk is not None:
            if accelerate is not None:
                raise ConfigError(
                    "edge_chunk trades time for memory by recomputing messages, which CUDA "
                    "graphs and compilation do not take; leave accelerate unset (None; "
                    "accelerate=null on the command line) with edge_chunk."
                )
            for member, _ in self.members:
                member.set_edge_chunk(edge_chunk)
        self.model, self.context = self.members[0] if self.members else (None, None)
        r_max = {float(m.r_max) for m, _ in self.members} | {p.r_max for p in self.packages}
        if len(r_max) > 1:
            raise ConfigError(
                f"the ensemble's models have different cutoffs {sorted(r_max)} Å; combine "
                "models trained with one r_max."
            )
        self.dtype = self.model.dtype if self.model is not None else self.packages[0].dtype
        self.r_max = r_max.pop()
        self.accelerate = accelerate
        self.skin = float(skin)
        self.min_distance = float(min_distance or 0.0)
        self.neighbour_list_builds = 0
        self._graph: Any = None
        self._reference: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None = None
        self._potentials: dict[tuple[int, bool], Any] = {}

    def _neighbour_graph(self, atoms: Atoms):
        """The graph of ``atoms``: the cached neighbour list with new positions while no atom
        has moved more than ``skin / 2`` since it was built, else a new list."""
        reference = self._reference
        if (
            self.skin > 0
            and reference is not None
            and np.array_equal(reference[1], atoms.numbers)
            and np.array_equal(reference[2], atoms.cell.array)
            and np.array_equal(reference[3], atoms.pbc)
            and np.abs(atoms.positions - reference[0]).max() < 0.5 * self.skin
        ):
            self._graph.positions = torch.as_tensor(
                atoms.positions, dtype=self._graph.positions.dtype
            )
            return self._graph
        self._graph = atoms_to_graph(atoms, self.r_max + self.skin, min_distance=None)
        self._reference = (
            atoms.positions.copy(),
            atoms.numbers.copy(),
            atoms.cell.array.copy(),
            atoms.pbc.copy(),
        )
        self.neighbour_list_builds += 1
        return self._graph

    @staticmethod
    def _edge_lengths(atoms: Atoms, graph: Any) -> np.ndarray:
        """Length of every edge of the current list at the current positions, Å."""
        edge_index = graph.edge_index.numpy()
        shifts = graph.unit_shifts.numpy() @ graph.cell.reshape(3, 3).numpy()
        vectors = atoms.positions[edge_index[1]] - atoms.positions[edge_index[0]] + shifts
        return np.linalg.norm(vectors, axis=-1)

    def _check_distances(self, atoms: Atoms, graph: Any, lengths: np.ndarray) -> None:
        """Raise if two atoms are closer than ``min_distance`` (edges of the current list)."""
        if self.min_distance <= 0 or graph.edge_index.shape[1] == 0:
            return
        edge_index = graph.edge_index.numpy()
        if lengths.min() < self.min_distance:
            raise too_close_error(
                closest_pair(edge_index, lengths),
                self.min_distance,
                option="the calculator's min_distance",
                atomic_numbers=atoms.numbers,
            )

    def _model_inputs(self, graph: Any, lengths: np.ndarray) -> dict[str, torch.Tensor]:
        """The model's inputs for a plain call: the graph's fields on the device, without
        the edges of the skin (``r_max <= length < r_max + skin``), whose radial envelope
        is exactly zero: the model computes on the edges a fresh list would have."""
        edge_index, unit_shifts = graph.edge_index, graph.unit_shifts
        within = lengths < self.r_max
        if not within.all():
            keep = torch.from_numpy(np.flatnonzero(within))
            edge_index, unit_shifts = edge_index[:, keep], unit_shifts[keep]
        fields = {
            "positions": graph.positions,
            "atomic_numbers": graph.atomic_numbers,
            "edge_index": edge_index,
            "unit_shifts": unit_shifts,
            "cell": graph.cell,
        }
        return {key: value.to(self.device) for key, value in fields.items()}

    def _potential(self, index: int, periodic: bool):
        """The accelerated potential of member ``index`` (built on first use)."""
        key = (index, periodic)
        if key not in self._potentials:
            model, context = self.members[index]
            if self.accelerate == "graphs":
                potential = GraphedPotential(model, compute_stress=periodic, context=context)
            else:
                potential = CompiledPotential(model, compute_stress=periodic, context=context)
            self._potentials[key] = potential
        return self._potentials[key]

    def _member_output(
        self, index: int, batch: Batch | Mapping[str, torch.Tensor], periodic: bool
    ) -> dict[str, np.ndarray]:
        if self.accelerate is not None:
            output = self._potential(index, periodic)(batch)
        else:
            model, context = self.members[index]
            with context():
                output = model(batch, compute_forces=True, compute_stress=periodic)
        result = {
            "energy": _numpy(output["energy"])[0],
            "forces": _numpy(output["forces"]),
            "node_energies": _numpy(output["node_energy"]),
        }
        if periodic:
            result["stress"] = _numpy(output["stress"])[0]
        return result

    def _package_output(self, package: Any, batch: Batch, periodic: bool) -> dict:
        output = package.from_graph(batch)
        result = {"energy": _numpy(output["energy"])[0], "forces": _numpy(output["forces"])}
        if periodic and "stress" in output:
            result["stress"] = _numpy(output["stress"])[0]
        return result

    def calculate(
        self,
        atoms: Atoms | None = None,
        properties: list[str] | None = None,
        system_changes: list[str] = all_changes,
    ) -> None:
        properties = properties or ["energy"]
        super().calculate(atoms, properties, system_changes)
        atoms = self.atoms
        for member, _ in self.members:
            member.elements.check(atoms.numbers)  # UnknownElementError names the elements
        for package in self.packages:
            package.check_elements(atoms.numbers)
        periodic = bool(np.all(atoms.pbc))
        if "stress" in properties and not all(p.compute_stress for p in self.packages):
            raise ConfigError(
                "this AOTInductor package computes no stress; export it with stress=true "
                "(python -m macelab.export format=aoti stress=true)."
            )
        graph = self._neighbour_graph(atoms)
        lengths = self._edge_lengths(atoms, graph)
        self._check_distances(atoms, graph, lengths)
        batch = None  # a torch-geometric batch for packages and accelerated potentials only
        if self.packages or self.accelerate is not None:
            batch = Batch.from_data_list([graph]).to(self.device)
        inputs = batch if self.accelerate is not None else self._model_inputs(graph, lengths)
        outputs = [self._member_output(i, inputs, periodic) for i in range(len(self.members))]
        outputs += [self._package_output(p, batch, periodic) for p in self.packages]
        keys = set.intersection(*(set(o) for o in outputs))
        mean = {key: np.mean([o[key] for o in outputs], axis=0) for key in keys}
        energy = float(mean["energy"])
        self.results = {"energy": energy, "free_energy": energy, "forces": mean["forces"]}
        if "node_energies" in mean:
            self.results["node_energies"] = mean["node_energies"]
            self.results["energies"] = mean["node_energies"]
        if periodic and "stress" in mean:
            self.results["stress"] = full_3x3_to_voigt_6_stress(mean["stress"])
        if len(outputs) > 1:
            forces_std = np.std([o["forces"] for o in outputs], axis=0)
            self.results["energy_std"] = float(np.std([o["energy"] for o in outputs]))
            self.results["forces_std"] = forces_std
            self.results["forces_uncertainty"] = np.linalg.norm(forces_std, axis=-1)


def _accelerate(plan: RuntimePlan) -> str | None:
    """The ``accelerate`` mode of a runtime plan."""
    if plan.compile:
        return "compiled"
    return "graphs" if plan.cuda_graphs else None


def _as_model(source: torch.nn.Module | str | Path, trust_pickle: bool) -> torch.nn.Module:
    """A model object from a model, a path (checkpoint: EMA weights; model folder;
    mace-torch file) or a foundation model name."""
    if isinstance(source, torch.nn.Module):
        return source
    if Path(source).suffix == ".pt2" and Path(source).is_file():
        raise ConfigError(
            f"{source} is a torch.export program (format=pt2), which runs with "
            "torch.export.load; the calculator takes the AOTInductor package of the model "
            "(python -m macelab.export format=aoti) or its checkpoint."
        )
    return open_model(source, trust_pickle=trust_pickle)


def _is_package(source: Any) -> bool:
    if not isinstance(source, str | Path) or Path(source).suffix != ".pt2":
        return False
    return is_aoti_package(source)


def _load_package(
    source: str | Path, device: torch.device, precision: str | int | None, trust_pickle: bool
) -> Any:
    """The :class:`~macelab.aoti.AOTIPotential` of ``source``, checked against the requested
    device and precision (loading runs its compiled code: only with ``trust_pickle``)."""
    package = AOTIPotential(source, device, trust_pickle=trust_pickle)
    named = {"64": torch.float64, "32": torch.float32}.get(str(precision))
    if precision is not None and named != package.dtype:
        dtype = str(package.dtype).removeprefix("torch.")
        raise ConfigError(
            f"{source} is compiled for {dtype} and computes in it; drop precision="
            f"{precision!r} (or give {'64' if package.dtype == torch.float64 else '32'}), or "
            f"export a package with dtype=... for another precision."
        )
    return package


def _numpy(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().to(torch.float64).cpu().numpy()
