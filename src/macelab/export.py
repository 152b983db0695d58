"""``python -m macelab.export``: a trained model as a file that runs without macelab.

    python -m macelab.export ckpt_path=<run>/checkpoints/best.ckpt format=pt2 out=model.pt2

Formats (``docs/use.md`` says when to use which):

``pt2`` (default)
    A ``torch.export`` ExportedProgram of energies *and* forces (and stress): the model and
    its force backward traced by ``make_fx`` into one graph of plain aten operations, with
    symbolic numbers of atoms, edges and graphs, then exported. ``torch.export.load`` in plain
    torch runs it (no macelab, e3nn or mace-torch); the results equal the Python model's
    exactly (same operations). Inputs and outputs:

    ==============  ==============  ==================================================
    positions       [n, 3]          Å, the model's dtype
    atomic_numbers  [n] int64       elements of the model's table
    edge_index      [2, E] int64    (sender j, receiver i) of every pair within r_max
    unit_shifts     [E, 3]          integer cell shifts S (model dtype):
                                    r_ji = r_i - r_j + S @ cell
    cell            [G, 3, 3]       lattice vectors as rows (zeros for a molecule)
    batch           [n] int64       graph of each atom (zeros for one structure)
    -> energy       [G]             eV
    -> forces       [n, 3]          eV/Å
    -> stress       [G, 3, 3]       eV/Å^3, ASE's sign (only with ``stress=true``)
    ==============  ==============  ==================================================

    Atomic numbers outside the table raise a RuntimeError ("unknown element").

``aoti``
    The ``pt2`` program compiled ahead of time by AOTInductor for the export's ``device``
    and ``dtype`` (C++ on the CPU, C++ and Triton kernels on CUDA), packaged as a ``.pt2``
    file with the same metadata: ``torch._inductor.aoti_load_package`` runs it with the
    ``pt2`` inputs and outputs and no Python model code; :class:`macelab.aoti.AOTIPotential`
    and :class:`macelab.calculator.MACECalculator` load it by path. It runs only on that
    kind of device, with the torch version that compiled it. Compiling takes a while
    (about a minute for a tiny model on one shared CPU core).

``mace_torch``
    :func:`macelab.interop.to_mace_torch` saved with ``torch.save``: a mace-torch model file
    for mace-torch's calculator and its LAMMPS export (needs mace-torch to load).

``torchscript``
    The same mace-torch model compiled to TorchScript (as mace-torch compiles its own):
    ``torch.jit.load`` (Python or C++) runs it without macelab, e3nn or mace-torch; inputs and
    outputs are mace-torch's dictionaries (``node_attrs`` one-hot over the table, ``shifts``
    in Å). Our own traced graph does not script, and a ``jit.trace`` of it fixes the number of
    atoms, hence the detour through mace-torch (``embedding=full`` models only).

A molecule with the ``pt2`` file, without any neighbour-list code (all pairs within r_max)::

    import torch
    program = torch.export.load("model.pt2").module()
    z = torch.tensor([8, 1, 1])
    pos = torch.tensor([[0.0, 0.0, 0.0], [0.96, 0.0, 0.0], [-0.24, 0.93, 0.0]], dtype=torch.float64)
    r_max = 5.0                                        # the model's cutoff (in the file's meta)
    close = (torch.cdist(pos, pos) < r_max) & ~torch.eye(len(z), dtype=torch.bool)
    edge_index = close.nonzero().T                     # [2, E]: (sender, receiver)
    shifts = torch.zeros(edge_index.shape[1], 3, dtype=torch.float64)
    cell = torch.zeros(1, 3, 3, dtype=torch.float64)
    batch = torch.zeros(len(z), dtype=torch.int64)
    energy, forces = program(pos, z, edge_index, shifts, cell, batch)[:2]

``torch.export.load("model.pt2", extra_files={"macelab.json": ""})`` also fills that dict
with the model's element table, cutoff, dtype and the list of outputs.
"""

from __future__ import annotations

import contextlib
import json
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hydra
import torch
from omegaconf import DictConfig

from macelab._compat import quiet_e3nn_build
from macelab.aoti import FORMAT, METADATA_KEY
from macelab.cli import prepare_argv, user_errors_exit
from macelab.config import CONFIG_DIR
from macelab.devices import resolve_device
from macelab.errors import ConfigError
from macelab.foundations import FOUNDATION_MODELS, open_model
from macelab.interop import to_mace_torch
from macelab.runtime import entry_plan
from macelab.speed.compiled import plain_copy
from macelab.training.checkpoint import artifact_from_checkpoint

log = logging.getLogger("macelab.export")

FORMATS = {
    "pt2": ".pt2",
    "aoti": ".pt2",
    "mace_torch": ".model",
    "torchscript": ".pt",
    "artifact": "",
}
METADATA_FILE = "macelab.json"
INPUT_NAMES = ("positions", "atomic_numbers", "edge_index", "unit_shifts", "cell", "batch")


class ForceField(torch.nn.Module):
    """The exported function: tensors in, ``(energy, forces[, stress])`` out.

    Wraps a macelab MACE (plain e3nn code, frozen weights) so that every input is a tensor
    and the number of graphs is the cell's first size (symbolic when traced); unknown
    elements fail an assertion that the exported graph keeps.
    """

    def __init__(self, model: torch.nn.Module, compute_stress: bool) -> None:
        super().__init__()
        self.model = model
        self.compute_stress = compute_stress

    def forward(
        self,
        positions: torch.Tensor,
        atomic_numbers: torch.Tensor,
        edge_index: torch.Tensor,
        unit_shifts: torch.Tensor,
        cell: torch.Tensor,
        batch: torch.Tensor,
    ) -> tuple[torch.Tensor, ...]:
        table = self.model.elements
        index = table.lookup[atomic_numbers.clamp(0, table.lookup.shape[0] - 1)]
        torch._assert_async(
            (index >= 0).all(), "unknown element: an atomic number outside the model's table"
        )
        ptr = torch.zeros(cell.shape[0] + 1, dtype=torch.int64, device=positions.device)
        graph = {
            "positions": positions,
            "atomic_numbers": atomic_numbers,
            "edge_index": edge_index,
            "unit_shifts": unit_shifts,
            "cell": cell,
            "batch": batch,
            "ptr": ptr,
        }
        out = self.model(graph, compute_forces=True, compute_stress=self.compute_stress)
        if self.compute_stress:
            return out["energy"], out["forces"], out["stress"]
        return out["energy"], out["forces"]


@contextlib.contextmanager
def _python_spherical_harmonics() -> Iterator[None]:
    """Run e3nn's spherical harmonics as Python while tracing.

    e3nn 0.4.4 compiles ``_spherical_harmonics`` with TorchScript; the interpreter turns the
    symbolic number of edges into a constant, so the trace would only accept one size. The
    Python original (kept by ``torch.jit.script`` for Dynamo) traces symbolically.
    """
    from e3nn.o3 import _spherical_harmonics as module

    scripted = module._spherical_harmonics
    original = getattr(scripted, "_torchdynamo_inline", scripted)
    module._spherical_harmonics = original
    try:
        yield
    finally:
        module._spherical_harmonics = scripted


def example_inputs(model: torch.nn.Module) -> tuple[torch.Tensor, ...]:
    """Two small all-pairs molecules (7 and 5 atoms) of the model's elements: inputs to trace.

    Sizes above 1 and all different, so that the tracer keeps each one symbolic.
    """
    dtype, device = model.dtype, next(model.parameters()).device
    generator = torch.Generator().manual_seed(0)
    sizes = (7, 5)
    table = model.elements.atomic_numbers.cpu()
    n = sum(sizes)
    numbers = table[torch.arange(n) % len(table)]
    side = 0.5 * float(model.r_max)
    positions = torch.rand(n, 3, generator=generator, dtype=torch.float64) * side
    batch = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))
    same = batch[:, None] == batch[None, :]
    edge_index = (same & ~torch.eye(n, dtype=torch.bool)).nonzero().T.contiguous()
    unit_shifts = torch.zeros(edge_index.shape[1], 3, dtype=torch.float64)
    cell = torch.zeros(len(sizes), 3, 3, dtype=torch.float64)
    tensors = (positions.to(dtype), numbers, edge_index, unit_shifts.to(dtype), cell.to(dtype))
    return tuple(t.to(device) for t in (*tensors, batch))


def exported_program(
    model: torch.nn.Module, *, compute_stress: bool = False
) -> torch.export.ExportedProgram:
    """``model``'s energies and forces as an ExportedProgram with dynamic sizes.

    ``make_fx`` traces the call, the force backward included, into aten operations with
    symbolic sizes (duck sizing off, so that sizes that happen to be equal in the example
    stay distinct); ``torch.export`` then checks and packages that graph.
    """
    import torch.fx.experimental._config as fx_config
    from torch.export import Dim
    from torch.fx.experimental.proxy_tensor import make_fx

    # plain aten operations only: the Triton kernels of runtime.backend=triton (custom
    # operators) would tie the file to macelab; the copy computes the same function
    wrapper = ForceField(plain_copy(model, keep_kernels=False), compute_stress)
    inputs = example_inputs(model)
    with _python_spherical_harmonics(), fx_config.patch(use_duck_shape=False):
        traced = make_fx(wrapper, tracing_mode="symbolic", _allow_non_fake_inputs=True)(*inputs)
    atoms, edges = Dim("n_atoms", min=1), Dim("n_edges", min=1)
    graphs = Dim("n_graphs", min=1)
    shapes = ({0: atoms}, {0: atoms}, {1: edges}, {0: edges}, {0: graphs}, {0: atoms})
    return torch.export.export(traced, inputs, dynamic_shapes=shapes, strict=False)


def metadata(model: torch.nn.Module, compute_stress: bool) -> dict[str, Any]:
    """What a user of the file needs to know: elements, cutoff, dtype, inputs, outputs."""
    outputs = ["energy", "forces", *(["stress"] if compute_stress else [])]
    return {
        "atomic_numbers": model.atomic_numbers,
        "r_max": float(model.r_max),
        "dtype": str(model.dtype).removeprefix("torch."),
        "inputs": list(INPUT_NAMES),
        "outputs": outputs,
        "hyperparameters": model.hyperparameters,
    }


def export_pt2(model: torch.nn.Module, path: str | Path, *, compute_stress: bool = False) -> Path:
    """Write ``model`` as a ``.pt2`` ExportedProgram (see the module docstring)."""
    program = exported_program(model, compute_stress=compute_stress)
    extra = {METADATA_FILE: json.dumps(metadata(model, compute_stress))}
    with warnings.catch_warnings():  # torch's, about its own archive format: harmless here
        warnings.filterwarnings("ignore", message="No complete tensor found in the group")
        torch.export.save(program, str(path), extra_files=extra)
    return Path(path)


def export_aoti(
    model: torch.nn.Module,
    path: str | Path,
    *,
    compute_stress: bool = False,
    inductor_configs: dict[str, Any] | None = None,
) -> Path:
    """Write ``model`` as an AOTInductor package (see the module docstring) for the device
    and dtype it is on; ``inductor_configs`` are passed to AOTInductor (e.g.
    ``{"cpp.vec_isa_ok": False}`` compiles faster CPU code without SIMD)."""
    path = Path(path)
    if path.suffix != ".pt2":
        raise ConfigError(f"an AOTInductor package must be named *.pt2, not {path.name}.")
    program = exported_program(model, compute_stress=compute_stress)
    device = next(model.parameters()).device
    info = {
        **metadata(model, compute_stress),
        "format": FORMAT,
        "device": device.type,
        "torch": torch.__version__,
    }
    configs = {"aot_inductor.metadata": {METADATA_KEY: json.dumps(info)}}
    configs.update(inductor_configs or {})
    path.parent.mkdir(parents=True, exist_ok=True)
    torch._inductor.aoti_compile_and_package(
        program, package_path=str(path), inductor_configs=configs
    )
    return path


def export_mace_torch(model: torch.nn.Module, path: str | Path) -> Path:
    """Write ``model`` as a mace-torch model file (``torch.save`` of the converted model)."""
    torch.save(to_mace_torch(model), str(path))
    return Path(path)


def export_torchscript(model: torch.nn.Module, path: str | Path) -> Path:
    """Write ``model`` as TorchScript: its mace-torch twin, compiled as mace-torch compiles
    its own models (e3nn's ``jit.compile``: e3nn blocks scripted or traced as they ask)."""
    from e3nn.util import jit

    with quiet_e3nn_build():  # TorchScript's warnings about e3nn's classes: nothing to act on
        scripted = jit.compile(to_mace_torch(model))
    extra = {METADATA_FILE: json.dumps(metadata(model, compute_stress=True))}
    torch.jit.save(scripted, str(path), _extra_files=extra)
    return Path(path)


# An exported file computes with the reference operations in one dtype: none of the
# runtime plan goes into it.
_REFERENCE = (
    "an exported file computes with the reference e3nn operations (plain aten operations in "
    "pt2 and aoti, mace-torch's code in torchscript and mace_torch)"
)
NOT_EXPORTED = {
    "backend": _REFERENCE,
    "fused_convolution": _REFERENCE,
    "edge_chunk": _REFERENCE,
    "precision_policy": "an exported file computes in one dtype (dtype=float32 or float64)",
    "cuda_graphs": "CUDA graphs belong to the program that runs the file (format=aoti is "
    "compiled already)",
    "compile": "format=aoti is the compiled form of the model",
}


def run_export(cfg: DictConfig) -> Path:
    """Export ``cfg.ckpt_path`` (conf/export.yaml) in ``cfg.format``; returns the file."""
    if cfg.format not in FORMATS:
        raise ConfigError(f"format={cfg.format!r}; choose one of {', '.join(FORMATS)}.")
    entry_plan(cfg.get("runtime"), unused=NOT_EXPORTED)  # refuses what a file cannot keep
    if not Path(str(cfg.ckpt_path)).exists() and str(cfg.ckpt_path) not in FOUNDATION_MODELS:
        raise ConfigError(
            f"ckpt_path={cfg.ckpt_path} does not exist; give a macelab checkpoint, a model "
            f"folder, a mace-torch .model file or a foundation model name "
            f"({', '.join(FOUNDATION_MODELS)})."
        )
    if cfg.format == "artifact":  # a model folder: model.yaml + model.safetensors
        if cfg.dtype is not None or not cfg.use_ema:
            raise ConfigError(
                "format=artifact keeps the EMA weights in their own dtype; drop dtype/use_ema."
            )
        out = Path(str(cfg.out)) if cfg.out else Path(cfg.paths.output_dir) / "model"
        artifact_from_checkpoint(
            str(cfg.ckpt_path), out, trust_pickle=bool(cfg.get("trust_pickle", False))
        )
        log.info("wrote %s (model.yaml, model.safetensors)", out)
        print(out)
        return out
    model = open_model(
        str(cfg.ckpt_path),
        use_ema=bool(cfg.use_ema),
        trust_pickle=bool(cfg.get("trust_pickle", False)),
    )
    if cfg.dtype is not None:
        model = model.to(getattr(torch, str(cfg.dtype)))
    model = model.to(resolve_device(str(cfg.device))).eval()
    default = Path(cfg.paths.output_dir) / f"model{FORMATS[cfg.format]}"
    out = Path(str(cfg.out)) if cfg.out else default
    out.parent.mkdir(parents=True, exist_ok=True)
    if cfg.format == "pt2":
        export_pt2(model, out, compute_stress=bool(cfg.stress))
    elif cfg.format == "aoti":
        export_aoti(model, out, compute_stress=bool(cfg.stress))
    elif cfg.format == "mace_torch":
        export_mace_torch(model, out)
    else:
        export_torchscript(model, out)
    log.info("wrote %s (%s)", out, cfg.format)
    print(out)
    return out


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="export")
@user_errors_exit
def main(cfg: DictConfig) -> None:
    run_export(cfg)


def cli() -> None:
    """The ``macelab-export`` console script: ``python -m macelab.export`` by another name."""
    prepare_argv()
    main()


if __name__ == "__main__":
    cli()
