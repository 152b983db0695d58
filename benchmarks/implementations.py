"""The compared paths: one implementation in one precision, all with the same weights.

The model is built once, in float64, by mace-torch exactly as its command line builds it
(``ScaleShiftMACE`` with ``RealAgnosticResidualInteractionBlock``, ``use_reduced_cg=False``).
Every other path is derived from it, so weights are identical everywhere:

* ``macelab``: ``macelab.interop.from_mace_torch(reference)``, copied and cast per precision;
* ``mace-torch``: the reference itself, copied and cast (e3nn backend);
* ``mace-torch+cueq``: mace-torch's own converter (``mace.cli.convert_e3nn_cueq``) to NVIDIA
  cuEquivariance kernels;
* ``macelab+graphs``: the macelab model replayed from CUDA graphs (``macelab.speed``):
  inference through ``GraphedPotential``, training steps through ``GraphedTrainStep``
  (inputs padded to shape buckets, padding included in the timing);
* ``macelab+triton``, ``macelab+triton+graphs``: the macelab model with its symmetric
  contractions in the fused Triton kernel (``model.backend=triton``; forward and first
  backward in Triton, the double backward of force training through sparse torch terms)
  and its convolutions in the fused Triton convolution (Eq. 8, every derivative order),
  called eagerly or replayed from CUDA graphs as ``macelab+graphs``;
* ``macelab+conv``, ``macelab+conv+graphs``, ``macelab+conv+cueq``: the fused Triton
  convolution beside the e3nn contraction (eager or graphed) or the cuEquivariance one
  (``model.fused_convolution=true``);
* ``macelab+cueq``: the macelab model with its symmetric contractions through NVIDIA
  cuEquivariance (``model.backend=cueq``; the rest of the model stays e3nn, unlike
  ``mace-torch+cueq``, whose converter also replaces the convolution and linear layers);
* ``macelab+compiled``: inference through ``CompiledPotential`` (the call traced through
  its force backward by ``make_fx``, compiled by Inductor, replayed from CUDA graphs;
  compile time is in ``setup_s`` of the first record only), training steps through
  ``CompiledTrainStep`` (the same, through the loss's double backward too; compile time in
  the record's ``compile_s``; precision 32 or 64 only).

A :class:`Path` runs ``(energy [n_graphs], forces [n_atoms, 3])`` on an inputs object that
:meth:`Path.prepare` makes once per batch, so input conversion is never timed.
"""

from __future__ import annotations

import contextlib
import copy
import importlib
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch_geometric.data import Batch

from benchmarks.precisions import PrecisionSpec, macelab_precisions, precision, undescribed
from benchmarks.settings import ModelSpec
from macelab.dtypes import default_dtype
from macelab.runtime import RuntimePlan, apply_runtime

log = logging.getLogger(__name__)

MACELAB = "macelab"
MACE_TORCH = "mace-torch"
MACE_CUEQ = "mace-torch+cueq"
MACELAB_GRAPHS = "macelab+graphs"
MACELAB_COMPILED = "macelab+compiled"
MACELAB_TRITON = "macelab+triton"
MACELAB_TRITON_GRAPHS = "macelab+triton+graphs"
MACELAB_CUEQ = "macelab+cueq"
MACELAB_CONV = "macelab+conv"
MACELAB_CONV_GRAPHS = "macelab+conv+graphs"
MACELAB_CONV_CUEQ = "macelab+conv+cueq"
MACELAB_CONV_COMPILED = "macelab+conv+compiled"
MACELAB_CONV_CUEQ_GRAPHS = "macelab+conv+cueq+graphs"
MACELAB_TRITON_COMPILED = "macelab+triton+compiled"
GRAPHS_PRECISIONS = ("32", "bf16-mixed")
TRITON_PRECISIONS = ("32",)
# Each macelab path is a runtime plan (conf/runtime, macelab.runtime) in a precision: the
# path's name is a short label of its plan, which builds its model (apply_runtime) and is
# written into each of its records ("runtime"). The harness's compiled paths replay their
# Inductor programs from CUDA graphs, as the trainer's runtime.compile + runtime.cuda_graphs.
PLANS: dict[str, RuntimePlan] = {
    MACELAB: RuntimePlan(),
    MACELAB_GRAPHS: RuntimePlan(cuda_graphs=True),
    MACELAB_COMPILED: RuntimePlan(compile=True, cuda_graphs=True),
    MACELAB_TRITON: RuntimePlan(backend="triton"),
    MACELAB_TRITON_GRAPHS: RuntimePlan(backend="triton", cuda_graphs=True),
    MACELAB_CUEQ: RuntimePlan(backend="cueq"),
    MACELAB_CONV: RuntimePlan(fused_convolution=True),
    MACELAB_CONV_GRAPHS: RuntimePlan(fused_convolution=True, cuda_graphs=True),
    MACELAB_CONV_CUEQ: RuntimePlan(backend="cueq", fused_convolution=True),
    MACELAB_CONV_COMPILED: RuntimePlan(fused_convolution=True, compile=True, cuda_graphs=True),
    MACELAB_CONV_CUEQ_GRAPHS: RuntimePlan(backend="cueq", fused_convolution=True, cuda_graphs=True),
    MACELAB_TRITON_COMPILED: RuntimePlan(backend="triton", compile=True, cuda_graphs=True),
}
# CUDA-graph replays of the eager model; make_fx + Inductor + CUDA graphs
GRAPHED = tuple(name for name, plan in PLANS.items() if plan.cuda_graphs and not plan.compile)
COMPILED = tuple(name for name, plan in PLANS.items() if plan.compile)
MACELAB_FAMILY = tuple(PLANS)  # paths that take macelab's inputs


def runtime_overrides(plan: RuntimePlan) -> str:
    """The ``runtime.*`` overrides that give ``plan`` (its fields that differ from the
    default), as a user would type them; empty for the reference."""
    default = RuntimePlan()
    return " ".join(
        f"runtime.{key}={str(value).lower() if isinstance(value, bool) else value}"
        for key, value in plan.to_dict().items()
        if value != getattr(default, key)
    )


@dataclass
class ModelStatistics:
    """What the model needs from the data, computed on the benchmark molecules."""

    atomic_energies: dict[int, float]
    avg_num_neighbors: float
    scale: float
    shift: float
    source: str


def build_reference_mace(spec: ModelSpec, stats: ModelStatistics) -> torch.nn.Module:
    """The float64 mace-torch model every path is derived from (mace-torch's CLI defaults)."""
    from e3nn import o3
    from mace import modules

    hidden = o3.Irreps(
        (spec.channels * o3.Irreps.spherical_harmonics(spec.max_L)).sort().irreps.simplify()
    )
    interaction = modules.interaction_classes[spec.interaction]
    with default_dtype(torch.float64):
        model = modules.ScaleShiftMACE(
            r_max=spec.r_max,
            num_bessel=spec.num_bessel,
            num_polynomial_cutoff=spec.num_polynomial_cutoff,
            max_ell=spec.max_ell,
            interaction_cls=interaction,
            interaction_cls_first=interaction,
            num_interactions=spec.num_interactions,
            num_elements=len(spec.atomic_numbers),
            hidden_irreps=hidden,
            MLP_irreps=o3.Irreps(f"{spec.readout_hidden}x0e"),
            atomic_energies=np.array([stats.atomic_energies[z] for z in spec.atomic_numbers]),
            avg_num_neighbors=stats.avg_num_neighbors,
            atomic_numbers=list(spec.atomic_numbers),
            correlation=spec.correlation,
            gate=modules.gate_dict[spec.gate],
            radial_MLP=list(spec.radial_mlp),
            atomic_inter_scale=stats.scale,
            atomic_inter_shift=stats.shift,
            use_reduced_cg=False,
        )
    return model.eval()


def mace_inputs(
    batch: Batch, atomic_numbers: tuple[int, ...], dtype: torch.dtype
) -> dict[str, torch.Tensor]:
    """A macelab batch as mace-torch's input dictionary (same edges, same shift convention)."""
    table = torch.as_tensor(atomic_numbers, device=batch.atomic_numbers.device)
    species = torch.searchsorted(table, batch.atomic_numbers)
    cell = batch.cell.reshape(-1, 3, 3)
    edge_cell = cell[batch.batch[batch.edge_index[1]]]
    shifts = torch.einsum("ei,eij->ej", batch.unit_shifts, edge_cell)
    return {
        "positions": batch.positions.to(dtype),
        "node_attrs": torch.nn.functional.one_hot(species, len(atomic_numbers)).to(dtype),
        "edge_index": batch.edge_index,
        "shifts": shifts.to(dtype),
        "unit_shifts": batch.unit_shifts.to(dtype),
        "cell": cell.reshape(-1, 3).to(dtype),
        "batch": batch.batch,
        "ptr": batch.ptr,
        "head": torch.zeros(batch.num_graphs, dtype=torch.long, device=batch.batch.device),
    }


@dataclass
class Path:
    """One implementation in one precision.

    Attributes:
        implementation: ``macelab``, ``mace-torch`` or ``mace-torch+cueq``.
        spec: the precision it runs in.
        build: makes the model (on the device) from the float64 reference.
        unavailable: why the path cannot run here (None if it can).
    """

    implementation: str
    spec: PrecisionSpec
    build: Callable[[], torch.nn.Module] | None = None
    unavailable: str | None = None
    model: torch.nn.Module | None = field(default=None, repr=False)
    setup_s: float | None = None
    atomic_numbers: tuple[int, ...] = ()
    graphed: Any = field(default=None, repr=False)

    @property
    def name(self) -> str:
        return f"{self.implementation}/{self.spec.name}"

    @property
    def runtime(self) -> RuntimePlan | None:
        """The runtime plan of a macelab path (None for mace-torch's)."""
        return PLANS.get(self.implementation)

    def ensure_model(self) -> torch.nn.Module:
        """Build the model on first use (timed into ``setup_s``)."""
        if self.model is None:
            assert self.build is not None, self.unavailable
            start = time.perf_counter()
            with default_dtype(self.spec.param_dtype):
                self.model = self.build()
            self.setup_s = time.perf_counter() - start
        return self.model

    def prepare(self, batch: Batch) -> Any:
        """The inputs this path's model takes, made once per batch (not timed)."""
        if self.implementation in MACELAB_FAMILY:
            # The graph's float64 fields cast to the model's dtype once here, as mace-torch's
            # inputs are below, so that neither implementation pays for the cast per call.
            inputs = batch.clone()
            for key in ("positions", "unit_shifts", "cell"):
                inputs[key] = inputs[key].to(self.spec.param_dtype)
            return inputs
        return mace_inputs(batch, self.atomic_numbers, self.spec.param_dtype)

    def forward(
        self, inputs: Any, training: bool, model: torch.nn.Module | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Energy and forces (forces with ``create_graph`` when ``training``), by this path's
        model or by ``model`` (a copy being trained)."""
        if self.implementation in GRAPHED and not training and model is None:
            out = self.graphed_potential()(inputs)
            return out["energy"], out["forces"]
        if self.implementation in COMPILED:
            if training or model is not None:
                raise NotImplementedError(f"{self.implementation} is an inference path")
            out = self.graphed_potential()(inputs)
            return out["energy"], out["forces"]
        model = model if model is not None else self.ensure_model()
        with self.spec.active(_device_type(inputs)):
            if self.implementation in MACELAB_FAMILY:
                out = model(inputs, compute_forces=True, compute_stress=False, training=training)
            else:
                out = model(dict(inputs), training=training, compute_force=True)
        return out["energy"], out["forces"]

    def graph_context(self) -> Callable[[], contextlib.AbstractContextManager]:
        """This path's precision as a context for CUDA-graph capture (autocast without its
        weight-cast cache, which must not outlive a capture)."""
        spec = self.spec

        @contextlib.contextmanager
        def active() -> Iterator[None]:
            previous = torch.get_float32_matmul_precision()
            torch.set_float32_matmul_precision(spec.matmul_precision)
            try:
                if spec.autocast_dtype is None:
                    yield
                else:
                    with torch.autocast("cuda", dtype=spec.autocast_dtype, cache_enabled=False):
                        yield
            finally:
                torch.set_float32_matmul_precision(previous)

        return active

    def graphed_potential(self) -> Any:
        """The CUDA-graph potential of this path's model (built on first use)."""
        if self.graphed is None and self.implementation in COMPILED:
            from macelab.speed.compiled import CompiledPotential

            self.graphed = CompiledPotential(self.ensure_model(), context=self.graph_context())
        elif self.graphed is None:
            from macelab.speed.cuda_graphs import GraphedPotential

            self.graphed = GraphedPotential(self.ensure_model(), context=self.graph_context())
        return self.graphed

    def release(self) -> None:
        """Drop the model (and its device memory)."""
        self.model = None
        self.graphed = None


def _device_type(inputs: Any) -> str:
    positions = inputs["positions"] if isinstance(inputs, dict) else inputs.positions
    return positions.device.type


def _importable(*modules: str) -> str | None:
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception as exc:  # any import failure means the path cannot run
            return f"{name} not importable ({type(exc).__name__}: {exc})"
    return None


def _macelab_from(reference: torch.nn.Module) -> Callable[[], Any]:
    cache: dict[str, torch.nn.Module] = {}

    def converted() -> torch.nn.Module:
        if "model" not in cache:
            from macelab.interop import from_mace_torch

            cache["model"] = from_mace_torch(reference).eval()
        return cache["model"]

    return converted


def _backend_paths(
    macelab_model: Callable[[], torch.nn.Module], device: torch.device, missing: str | None
) -> list[Path]:
    """The macelab model with another contraction backend or the fused convolution, in
    ``TRITON_PRECISIONS``: ``macelab+triton`` and ``macelab+conv`` (eager; on a CPU only in
    Triton's interpreter, ``TRITON_INTERPRET=1``, which checks the path but is no speed),
    the ``+graphs`` and ``+compiled`` paths (CUDA only; ``macelab+conv+compiled``: make_fx +
    Inductor + CUDA graphs around the fused convolution, training and inference;
    ``macelab+triton+compiled``: the same with the Triton contraction too) and the
    ``cueq`` paths (CUDA only: cuEquivariance's CPU method is no speed reference)."""
    from macelab.kernels import check_backend

    def why_not(backend: str, cuda_only: str | None) -> str | None:
        if missing is not None:
            return missing
        try:
            check_backend(backend)
        except ValueError as error:
            return str(error)
        return cuda_only if device.type != "cuda" else None

    graphs = "CUDA graphs need a CUDA device"
    cueq = "cuEquivariance's kernels need CUDA; its CPU fallback is not a speed reference"
    conv = why_not("triton", None)
    variants = [  # (path, why not)
        (MACELAB_TRITON, why_not("triton", None)),
        (MACELAB_TRITON_GRAPHS, why_not("triton", graphs)),
        (MACELAB_CUEQ, why_not("cueq", cueq)),
        (MACELAB_CONV, conv),
        (MACELAB_CONV_GRAPHS, conv or why_not("e3nn", graphs)),
        (MACELAB_CONV_CUEQ, conv or why_not("cueq", cueq)),
        (MACELAB_CONV_COMPILED, conv or why_not("e3nn", graphs)),
        (MACELAB_TRITON_COMPILED, conv or why_not("triton", graphs)),
        # the cuEquivariance paths are host-bound on large systems (docs/benchmarks.md)
        (MACELAB_CONV_CUEQ_GRAPHS, conv or why_not("cueq", cueq)),
    ]
    paths = []
    for implementation, unavailable in variants:
        for name in TRITON_PRECISIONS:
            p = precision(name)

            def build(
                p: PrecisionSpec = p, plan: RuntimePlan = PLANS[implementation]
            ) -> torch.nn.Module:
                model = copy.deepcopy(macelab_model()).to(device=device, dtype=p.param_dtype)
                return apply_runtime(model, plan)

            paths.append(Path(implementation, p, build, unavailable))
    return paths


def make_paths(
    reference: torch.nn.Module,
    spec: ModelSpec,
    device: torch.device,
    cueq_precisions: tuple[str, ...] = ("32",),
) -> list[Path]:
    """Every compared path, in table order, built lazily from ``reference``.

    macelab runs in every precision it supports, mace-torch (e3nn) in float64 and float32,
    mace-torch+cueq in ``cueq_precisions`` (each is a separate conversion, which rebuilds the
    model: float32 is what a speed-minded user runs).
    """
    paths: list[Path] = []
    macelab_missing = _importable("macelab.model", "macelab.interop")
    if macelab_missing is None:
        try:
            from macelab.interop import from_mace_torch  # noqa: F401
        except ImportError as exc:
            macelab_missing = f"macelab.interop.from_mace_torch not importable ({exc})"
    macelab_model = _macelab_from(reference)
    described, unknown = macelab_precisions()
    for p in described:

        def build(p: PrecisionSpec = p) -> torch.nn.Module:
            model = copy.deepcopy(macelab_model()).to(device=device, dtype=p.param_dtype)
            if p.policy is not None:
                from macelab.precision import load_precision, policy_of
                from macelab.precision.policy import apply_policy

                apply_policy(model, policy_of(load_precision(p.policy)))
            return model

        paths.append(Path(MACELAB, p, build, macelab_missing))
    for name in unknown:
        reason = (
            f"macelab precision {name!r} has no entry in benchmarks/precisions.py (dtype, "
            "autocast, bound): add one to benchmark it"
        )
        paths.append(Path(MACELAB, undescribed(name), None, reason))
    graphs_missing = macelab_missing
    if graphs_missing is None and device.type != "cuda":
        graphs_missing = "CUDA graphs need a CUDA device"
    for implementation in (MACELAB_GRAPHS, MACELAB_COMPILED):
        for name in GRAPHS_PRECISIONS:
            p = precision(name)

            def build_graphed(
                p: PrecisionSpec = p, plan: RuntimePlan = PLANS[implementation]
            ) -> torch.nn.Module:
                model = copy.deepcopy(macelab_model()).to(device=device, dtype=p.param_dtype)
                return apply_runtime(model, plan)

            paths.append(Path(implementation, p, build_graphed, graphs_missing))
    paths.extend(_backend_paths(macelab_model, device, macelab_missing))
    for name in ("64", "32"):
        p = precision(name)

        def build_mace(p: PrecisionSpec = p) -> torch.nn.Module:
            return copy.deepcopy(reference).to(device=device, dtype=p.param_dtype).eval()

        paths.append(Path(MACE_TORCH, p, build_mace))
    cueq_missing = _importable("cuequivariance", "cuequivariance_torch")
    if cueq_missing is None and device.type != "cuda":
        cueq_missing = (
            "cuEquivariance's kernels need CUDA; its CPU fallback is not a speed reference"
        )
    elif cueq_missing is None:
        cueq_missing = _importable("cuequivariance_ops_torch")
    for name in cueq_precisions:
        p = precision(name)

        def build_cueq(p: PrecisionSpec = p) -> torch.nn.Module:
            from mace.cli.convert_e3nn_cueq import run as convert

            source = copy.deepcopy(reference).to(dtype=p.param_dtype)
            model = convert(source, device=device.type, return_model=True)
            return model.to(device=device, dtype=p.param_dtype).eval()

        paths.append(Path(MACE_CUEQ, p, build_cueq, cueq_missing))
    for path in paths:
        path.atomic_numbers = tuple(spec.atomic_numbers)
    return paths


def reference_path(paths: list[Path]) -> Path:
    """The float64 reference: macelab/64 if it can run, else mace-torch/64."""
    for name in (f"{MACELAB}/64", f"{MACE_TORCH}/64"):
        for path in paths:
            if path.name == name and path.unavailable is None:
                return path
    raise RuntimeError("neither macelab/64 nor mace-torch/64 can run: no float64 reference")
