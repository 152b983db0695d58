"""Convert models between macelab and mace-torch (``mace.modules.MACE`` / ``ScaleShiftMACE``).

Both are built from the same e3nn blocks (``o3.Linear``, ``o3.TensorProduct``,
``o3.FullyConnectedTensorProduct``, ``nn.FullyConnectedNet``, ``nn.Activation``) with the
same irreps and path order, so their weights copy one to one; only the product basis uses
different (own) Clebsch-Gordan bases, whose weights are translated by
:func:`macelab.interop.cg_basis.translate_path_weights`. Energies and forces agree to
rounding (relative 1e-10 in float64 is tested).

What :func:`from_mace_torch` accepts, and refuses with :class:`UnsupportedModelError`:

- ``MACE`` and ``ScaleShiftMACE`` with Bessel radial basis, polynomial cutoff, O(3)
  spherical harmonics, the ZBL pair repulsion (``pair_repulsion=True``) and the
  ``Agnesi``/``Soft`` distance transforms (the MACE-MP-0b family) with mace-torch's fixed
  constants, ``RealAgnosticResidualInteractionBlock`` layers (the first may be
  ``RealAgnosticInteractionBlock``), the non-linear readout on the last layer, element-
  dependent product basis, any correlation (1-4), max_ell, max_L, number of layers and
  element table, ``apply_cutoff`` either way, reduced or full CG bases;
- multi-head models: pick one head with ``head=`` (refused without it);
- refused: Gaussian/Chebyshev radial bases,
  trainable Bessel frequencies, other interaction or readout classes, ``edge_irreps``,
  agnostic products, SO(3) models, ``use_last_readout_only``, extra embeddings (charges,
  spins), dipole/polarisability models, and models converted to cuequivariance or
  openequivariance kernels (convert them back with ``mace.cli.convert_cueq_e3nn`` /
  ``convert_oeq_e3nn`` first).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from e3nn import nn as e3nn_nn
from e3nn import o3

from macelab._compat import quiet_e3nn_build
from macelab.dtypes import default_dtype
from macelab.errors import ConfigError, MacelabError, MissingDataError
from macelab.interop.cg_basis import translate_path_weights
from macelab.loading import load_pickle
from macelab.model import radial, repulsion
from macelab.model.irreps import hidden_irreps
from macelab.model.mace import MACE
from macelab.model.readout import GATES

_INSTALL_HINT = (
    "install mace-torch (pip install 'macelab[mace]'; it pins e3nn 0.4.4) to convert "
    "models to or from mace-torch"
)
_RESIDUAL = "RealAgnosticResidualInteractionBlock"
_PLAIN = "RealAgnosticInteractionBlock"


class UnsupportedModelError(MacelabError, ValueError):
    """A mace-torch model with a feature macelab's MACE does not implement."""


def _import_mace() -> Any:
    try:
        import mace.modules as mace_modules
    except ImportError as error:
        raise ImportError(_INSTALL_HINT) from error
    return mace_modules


# ----------------------------------------------------------------------------------- files
def load_mace_torch_file(
    path: str | Path,
    map_location: str | torch.device = "cpu",
    *,
    trust_pickle: bool = False,
) -> Any:
    """Load a mace-torch ``.model`` file (a pickled module, e.g. a foundation model).

    A mace-torch model file is a pickle: loading it runs code stored in the file. It is
    loaded only with ``trust_pickle=True``, your statement that the file comes from a
    source you trust; without it :class:`~macelab.errors.UntrustedFileError` is raised and
    nothing from the file runs (docs/security.md).
    """
    _import_mace()
    path = Path(path)
    if not path.is_file():
        raise MissingDataError(
            "no such mace-torch model file; give the path of a .model file written by "
            "mace-torch (mace_run_train's <name>.model, or a downloaded foundation model).",
            file=path,
        )
    model = load_pickle(path, map_location, trust_pickle=trust_pickle, what="mace-torch model file")
    if not isinstance(model, torch.nn.Module):
        raise UnsupportedModelError(
            f"{path} holds a {type(model).__name__}, not a mace-torch model; training "
            "checkpoints (.pt) hold state dicts only: use the .model file mace-torch writes "
            "next to them."
        )
    return model


# ------------------------------------------------------------------------------- inputs
def mace_torch_inputs(
    graph: Any, atomic_numbers: list[int], dtype: torch.dtype = torch.float64
) -> dict[str, torch.Tensor]:
    """The input dict of a mace-torch model for a macelab graph or batch.

    Args:
        graph: an ``AtomicGraph`` or a torch-geometric batch of them.
        atomic_numbers: the model's element table (order of the one-hot attributes).
        dtype: the model's dtype.
    """
    positions = graph.positions.to(dtype).clone()
    lookup = {int(z): i for i, z in enumerate(atomic_numbers)}
    index = torch.tensor([lookup[int(z)] for z in graph.atomic_numbers], dtype=torch.int64)
    batch = getattr(graph, "batch", None)
    if batch is None:
        batch = torch.zeros(positions.shape[0], dtype=torch.int64)
    ptr = getattr(graph, "ptr", None)
    if ptr is None:
        ptr = torch.tensor([0, positions.shape[0]], dtype=torch.int64)
    cell = graph.cell.to(dtype).reshape(-1, 3, 3)
    unit_shifts = graph.unit_shifts.to(dtype)
    shifts = torch.einsum("ei,eij->ej", unit_shifts, cell[batch[graph.edge_index[0]]])
    return {
        "positions": positions,
        "node_attrs": torch.nn.functional.one_hot(index, len(atomic_numbers)).to(dtype),
        "edge_index": graph.edge_index,
        "shifts": shifts,
        "unit_shifts": unit_shifts,
        "cell": cell.reshape(-1, 3),
        "batch": batch,
        "ptr": ptr,
    }


# -------------------------------------------------------------------------- inspection
def _refuse(what: str, advice: str = "") -> UnsupportedModelError:
    return UnsupportedModelError(
        f"this mace-torch model uses {what}, which macelab's MACE does not implement"
        + (f"; {advice}" if advice else ".")
    )


def _gate_name(activation: Any) -> str:
    """Name (in macelab's GATES) of the function an e3nn ``nn.Activation`` applies."""
    act = activation.acts[0]
    if act is None:
        return "none"
    function = getattr(act, "f", act)
    for name, candidate in GATES.items():
        if candidate is not None and function is candidate:
            return name
    raise _refuse(f"the readout activation {function!r}", f"supported: {', '.join(GATES)}")


def _check_supported(model: torch.nn.Module) -> None:
    """Raise :class:`UnsupportedModelError` for anything :func:`from_mace_torch` cannot map."""
    kind = type(model).__name__
    module = type(model).__module__
    if kind not in ("MACE", "ScaleShiftMACE") or not module.startswith("mace."):
        raise UnsupportedModelError(
            f"from_mace_torch converts mace-torch's MACE and ScaleShiftMACE models, not "
            f"{module}.{kind}."
        )
    if hasattr(model, "pair_repulsion_fn"):
        _check_zbl(model.pair_repulsion_fn, int(model.radial_embedding.cutoff_fn.p))
    if hasattr(model, "joint_embedding") or hasattr(model, "embedding_readout"):
        raise _refuse("extra embeddings (embedding_specs, e.g. charges or spins)")
    if getattr(model, "use_agnostic_product", False):
        raise _refuse("an element-agnostic product basis (use_agnostic_product=True)")
    if getattr(model, "edge_irreps", None) is not None:
        raise _refuse("separate edge irreps (edge_irreps)")
    radial = model.radial_embedding
    if hasattr(radial, "distance_transform"):
        _check_distance_transform(radial.distance_transform)
    if type(radial.bessel_fn).__name__ != "BesselBasis":
        raise _refuse(f"the radial basis {type(radial.bessel_fn).__name__}", "only Bessel.")
    weights = radial.bessel_fn.bessel_weights
    expected = math.pi / float(radial.bessel_fn.r_max) * torch.arange(1, len(weights) + 1)
    if not torch.allclose(weights.detach().cpu().to(torch.float64), expected.double()):
        raise _refuse("trained Bessel frequencies (radial basis with trainable=True)")
    if type(radial.cutoff_fn).__name__ != "PolynomialCutoff":
        raise _refuse(f"the cutoff {type(radial.cutoff_fn).__name__}")
    sh = model.spherical_harmonics
    if not isinstance(sh, o3.SphericalHarmonics):
        raise _refuse(f"spherical harmonics of type {type(sh).__name__}")
    if sh.irreps_out != o3.Irreps.spherical_harmonics(sh.irreps_out.lmax):
        raise _refuse("SO(3) spherical harmonics (use_so3=True)")
    if not (sh.normalize and sh.normalization == "component"):
        raise _refuse("spherical harmonics other than normalize=True, 'component'")
    n = len(model.interactions)
    if len(model.readouts) != n or len(model.products) != n:
        raise _refuse("a readout on the last layer only (use_last_readout_only=True)")
    for t, interaction in enumerate(model.interactions):
        name = type(interaction).__name__
        allowed = (_RESIDUAL, _PLAIN) if t == 0 else (_RESIDUAL,)
        if name not in allowed:
            raise _refuse(f"the interaction block {name} in layer {t}")
        if hasattr(interaction, "conv_fusion"):
            raise _refuse("fused convolutions", "convert the model back to e3nn first.")
        for attr, cls in (
            ("linear_up", o3.Linear),
            ("linear", o3.Linear),
            ("conv_tp", o3.TensorProduct),
            ("skip_tp", o3.FullyConnectedTensorProduct),
            ("conv_tp_weights", e3nn_nn.FullyConnectedNet),
        ):
            if not isinstance(getattr(interaction, attr, None), cls):
                raise _refuse(
                    f"a non-e3nn {attr} ({type(getattr(interaction, attr, None)).__name__}) in "
                    f"layer {t}",
                    "cuequivariance/openequivariance models must be converted back first: "
                    "python -m mace.cli.convert_cueq_e3nn <model> (or convert_oeq_e3nn).",
                )
        layer0 = interaction.conv_tp_weights.layer0
        if getattr(layer0.act, "f", None) is not torch.nn.functional.silu:
            raise _refuse("a radial MLP activation other than SiLU")
    for t, product in enumerate(model.products):
        contraction = product.symmetric_contractions
        if type(contraction).__module__ != "mace.modules.symmetric_contraction":
            raise _refuse(
                f"a {type(contraction).__name__} product basis in layer {t}",
                "cuequivariance models must be converted back first: "
                "python -m mace.cli.convert_cueq_e3nn <model>.",
            )
        if not isinstance(product.linear, o3.Linear):
            raise _refuse(f"a non-e3nn product linear in layer {t}")
    last = model.readouts[-1]
    expected_last = "LinearReadoutBlock" if n == 1 else "NonLinearReadoutBlock"
    for t, readout in enumerate(model.readouts):
        expected_kind = expected_last if t == n - 1 else "LinearReadoutBlock"
        if type(readout).__name__ != expected_kind:
            raise _refuse(f"the readout {type(readout).__name__} in layer {t}")
    if n > 1:
        _gate_name(last.non_linearity)
    if model.products[-1].linear.irreps_out.lmax > 0:
        raise _refuse("non-scalar features after the last layer (keep_last_layer_irreps)")


def _same_constants(found: dict[str, Any], expected: dict[str, Any]) -> bool:
    """Whether mace-torch's buffers hold macelab's constants, to float32 rounding (mace-torch
    builds them in the default dtype of the moment, which may have been float32)."""
    return all(
        np.allclose(np.asarray(found[key], dtype=np.float64), expected[key], rtol=1e-6, atol=0)
        for key in expected
    )


def _covalent_radii_match(module: Any) -> bool:
    from ase.data import covalent_radii

    return _same_constants({"r": module.covalent_radii.detach().cpu()}, {"r": covalent_radii})


def _check_zbl(zbl: Any, p: int) -> None:

    if type(zbl).__name__ != "ZBLBasis":
        raise _refuse(f"the pair repulsion {type(zbl).__name__}", "only ZBLBasis.")
    found = {
        "c": zbl.c.detach().cpu(),
        "a_exp": float(zbl.a_exp),
        "a_prefactor": float(zbl.a_prefactor),
        "p": int(zbl.p),
    }
    expected = {
        "c": list(repulsion.PHI_COEFFICIENTS),
        "a_exp": repulsion.SCREENING_EXPONENT,
        "a_prefactor": repulsion.SCREENING_PREFACTOR,
        "p": p,
    }
    if not (_same_constants(found, expected) and _covalent_radii_match(zbl)):
        raise _refuse("a ZBL pair repulsion with other constants than mace-torch's defaults")


def _check_distance_transform(transform: Any) -> str:
    """macelab's name of a (supported) mace-torch distance transform."""

    kind = type(transform).__name__
    if kind == "AgnesiTransform":
        found = {key: float(getattr(transform, key)) for key in radial.AGNESI}
        expected: dict[str, Any] = dict(radial.AGNESI)
    elif kind == "SoftTransform":
        found, expected = {"alpha": float(transform.alpha)}, {"alpha": radial.SOFT_ALPHA}
    else:
        raise _refuse(f"the distance transform {kind}", "supported: Agnesi, Soft.")
    if not (_same_constants(found, expected) and _covalent_radii_match(transform)):
        raise _refuse(f"a {kind} with trained or changed constants")
    return "agnesi" if kind == "AgnesiTransform" else "soft"


def _heads(model: torch.nn.Module) -> list[str]:
    return list(getattr(model, "heads", None) or ["Default"])


def _head_index(model: torch.nn.Module, head: str | int | None) -> int:
    heads = _heads(model)
    if head is None:
        if len(heads) > 1:
            raise UnsupportedModelError(
                f"this mace-torch model has {len(heads)} heads {heads}; macelab's MACE has "
                "one: choose it with from_mace_torch(model, head=...)."
            )
        return 0
    if isinstance(head, int) and not isinstance(head, bool):
        if not 0 <= head < len(heads):
            raise UnsupportedModelError(f"head {head} out of range for heads {heads}")
        return head
    if head not in heads:
        raise UnsupportedModelError(f"no head {head!r}; this model's heads are {heads}")
    return heads.index(head)


def _per_head(value: torch.Tensor | float, index: int) -> float:
    tensor = torch.atleast_1d(torch.as_tensor(value))
    return float(tensor[index] if tensor.numel() > 1 else tensor[0])


def mace_torch_hyperparameters(model: torch.nn.Module, head: str | int | None = None) -> dict:
    """The macelab hyperparameters of a (supported) mace-torch model."""
    _check_supported(model)
    h = _head_index(model, head)
    n_heads = len(_heads(model))
    n = len(model.interactions)
    channels = model.node_embedding.linear.irreps_out.count(o3.Irrep(0, 1))
    max_L = 0
    if n > 1:
        hidden = model.interactions[1].node_feats_irreps
        max_L = hidden.lmax
        if hidden != hidden_irreps(channels, max_L):
            raise _refuse(f"hidden irreps {hidden}", f"expected {hidden_irreps(channels, max_L)}")
    avg = {float(i.avg_num_neighbors) for i in model.interactions}
    if len(avg) != 1:
        raise _refuse(f"different avg_num_neighbors per layer {sorted(avg)}")
    hs = [list(i.conv_tp_weights.hs[1:-1]) for i in model.interactions]
    if any(x != hs[0] for x in hs):
        raise _refuse(f"different radial MLPs per layer {hs}")
    energies = torch.atleast_2d(model.atomic_energies_fn.atomic_energies.detach().cpu())
    scale_shift = type(model).__name__ == "ScaleShiftMACE"
    readout_mlp, gate = 16, "silu"
    if n > 1:
        readout_mlp = model.readouts[-1].linear_1.irreps_out.dim // n_heads
        gate = _gate_name(model.readouts[-1].non_linearity)
    radial = model.radial_embedding
    return {
        "atomic_numbers": [int(z) for z in model.atomic_numbers.tolist()],
        "atomic_energies": energies[h if energies.shape[0] > 1 else 0].double().tolist(),
        "avg_num_neighbors": avg.pop(),
        "channels": channels,
        "max_L": max_L,
        "max_ell": model.spherical_harmonics.irreps_out.lmax,
        "correlation": [
            int(p.symmetric_contractions.contractions[0].correlation) for p in model.products
        ],
        "num_interactions": n,
        "r_max": float(model.r_max),
        "num_bessel": len(radial.bessel_fn.bessel_weights),
        "num_polynomial_cutoff": int(radial.cutoff_fn.p),
        "radial_mlp": hs[0],
        "readout_mlp": readout_mlp,
        "gate": gate,
        "interaction_first": (
            "plain" if type(model.interactions[0]).__name__ == _PLAIN else "residual"
        ),
        "scale_shift": scale_shift,
        "scale": _per_head(model.scale_shift.scale, h) if scale_shift else 1.0,
        "shift": _per_head(model.scale_shift.shift, h) if scale_shift else 0.0,
        "apply_cutoff": bool(getattr(radial, "apply_cutoff", True)),
        "pair_repulsion": hasattr(model, "pair_repulsion_fn"),
        "distance_transform": (
            _check_distance_transform(radial.distance_transform)
            if hasattr(radial, "distance_transform")
            else "none"
        ),
    }


# ---------------------------------------------------------------------------- weights
def _pairs(mace_model: torch.nn.Module, ours: MACE) -> Iterator[tuple[str, Any, Any]]:
    """(name, mace-torch module, macelab module) of every e3nn block with weights."""
    yield "embedding", mace_model.node_embedding.linear, ours.embedding.linear
    layers = zip(mace_model.interactions, ours.interactions, strict=True)
    for t, (m_int, o_int) in enumerate(layers):
        yield f"interactions.{t}.linear_up", m_int.linear_up, o_int.linear_up
        for k in range(len(m_int.conv_tp_weights.hs) - 1):
            yield (
                f"interactions.{t}.radial_mlp.layer{k}",
                getattr(m_int.conv_tp_weights, f"layer{k}"),
                getattr(o_int.radial_mlp, f"layer{k}"),
            )
        yield f"interactions.{t}.linear", m_int.linear, o_int.linear
        skip = o_int.element_mixing
        if skip is None:
            skip = ours.products[t].update.self_connection
        yield f"interactions.{t}.skip_tp", m_int.skip_tp, skip
        yield f"products.{t}.linear", mace_model.products[t].linear, ours.products[t].update.linear


def _check_same_block(name: str, a: Any, b: Any) -> None:
    for attr in ("irreps_in", "irreps_in1", "irreps_in2", "irreps_out"):
        if hasattr(a, attr) and getattr(a, attr) != getattr(b, attr):
            raise UnsupportedModelError(
                f"{name}: {attr} {getattr(a, attr)} (mace-torch) != {getattr(b, attr)} (macelab)"
            )
    if a.weight.shape != b.weight.shape:
        raise UnsupportedModelError(
            f"{name}: weight shape {tuple(a.weight.shape)} != {tuple(b.weight.shape)}"
        )


def _check_tensor_products(mace_model: torch.nn.Module, ours: MACE) -> None:
    layers = zip(mace_model.interactions, ours.interactions, strict=True)
    for t, (m_int, o_int) in enumerate(layers):
        a, b = m_int.conv_tp, o_int.tensor_product
        paths_a = [(i.i_in1, i.i_in2, i.i_out, i.connection_mode) for i in a.instructions]
        paths_b = [(i.i_in1, i.i_in2, i.i_out, i.connection_mode) for i in b.instructions]
        if a.irreps_out != b.irreps_out or paths_a != paths_b:
            raise UnsupportedModelError(
                f"interactions.{t}: the tensor-product paths differ ({a.irreps_out} vs "
                f"{b.irreps_out}); the radial MLP's weights would not line up."
            )


def _mace_contraction_weights(contraction: Any) -> dict[int, torch.Tensor]:
    """``nu -> [n_elements, P, C]`` of one mace-torch ``Contraction``."""
    corr = contraction.correlation
    weights = {corr: contraction.weights_max}
    for i, w in enumerate(contraction.weights):
        weights[corr - 1 - i] = w
    return weights


def _mace_U(contraction: Any, nu: int, dim: int) -> torch.Tensor:
    U = contraction.U_tensors(nu)
    return U.unsqueeze(0) if dim == 1 else U  # mace-torch squeezes the axis of 2L+1 = 1


def _copy_contractions(mace_model: torch.nn.Module, ours: MACE, to_mace: bool) -> None:
    for t, product in enumerate(ours.products):
        m_sc = mace_model.products[t].symmetric_contractions
        for m_c, o_c in zip(m_sc.contractions, product.contraction.contractions, strict=True):
            dim = o_c.irrep_out.dim
            m_weights = _mace_contraction_weights(m_c)
            for nu in range(1, o_c.correlation + 1):
                U_mace, U_ours = _mace_U(m_c, nu, dim), o_c.U(nu)
                if to_mace:
                    if str(nu) not in o_c.weights or float(U_mace.abs().max()) == 0.0:
                        continue  # no path: mace-torch holds zeros ("EmptyParam") there
                    W = translate_path_weights(U_ours, o_c.weights[str(nu)].detach(), U_mace)
                    m_weights[nu].data.copy_(W.to(m_weights[nu].dtype))
                elif str(nu) in o_c.weights:
                    W = translate_path_weights(U_mace, m_weights[nu].detach(), U_ours)
                    o_c.weights[str(nu)].data.copy_(W.to(o_c.weights[str(nu)].dtype))


def _copy_readouts(mace_model: torch.nn.Module, ours: MACE, head: int, to_mace: bool) -> None:
    n_heads = len(_heads(mace_model))
    for t, (m_r, o_r) in enumerate(zip(mace_model.readouts, ours.readouts, strict=True)):
        if type(m_r).__name__ == "LinearReadoutBlock":
            pairs = [(m_r.linear, o_r.linear, "columns")]
        else:
            pairs = [(m_r.linear_1, o_r.linear_1, "blocks"), (m_r.linear_2, o_r.linear_2, "rows")]
        for m_lin, o_lin, kind in pairs:
            if to_mace:
                _check_same_block(f"readouts.{t}", m_lin, o_lin)
                m_lin.weight.data.copy_(o_lin.weight.detach().to(m_lin.weight.dtype))
                continue
            w = m_lin.weight.detach()
            if kind == "columns":  # [C, n_heads] -> column of the head
                w = w.reshape(-1, n_heads)[:, head]
            elif kind == "blocks":  # [C, n_heads * hidden] -> the head's block of columns
                hidden = o_lin.irreps_out.dim
                w = w.reshape(-1, n_heads * hidden)[:, head * hidden : (head + 1) * hidden]
            else:  # [n_heads * hidden, n_heads] -> the head's rows; fan-in n_heads x smaller
                hidden = o_lin.irreps_in.dim
                w = w.reshape(n_heads * hidden, n_heads)[head * hidden : (head + 1) * hidden, head]
                w = w / math.sqrt(n_heads)
            o_lin.weight.data.copy_(w.reshape(o_lin.weight.shape).to(o_lin.weight.dtype))


def _copy_weights(mace_model: torch.nn.Module, ours: MACE, head: int, to_mace: bool) -> None:
    _check_tensor_products(mace_model, ours)
    with torch.no_grad():
        for name, m_mod, o_mod in _pairs(mace_model, ours):
            _check_same_block(name, m_mod, o_mod)
            source, target = (o_mod, m_mod) if to_mace else (m_mod, o_mod)
            target.weight.data.copy_(source.weight.detach().to(target.weight.dtype))
        _copy_contractions(mace_model, ours, to_mace)
        _copy_readouts(mace_model, ours, head, to_mace)


def _parameter_dtype(model: torch.nn.Module) -> torch.dtype:
    return next(p.dtype for p in model.parameters() if p.is_floating_point())


# --------------------------------------------------------------------------- public API
def from_mace_torch(
    model: torch.nn.Module | str | Path,
    head: str | int | None = None,
    reduced_cg: bool = False,
    *,
    trust_pickle: bool = False,
) -> MACE:
    """The macelab MACE equivalent to a mace-torch model (same energies and forces).

    Args:
        model: a mace-torch ``MACE``/``ScaleShiftMACE`` module, or the path of a ``.model``
            file (:func:`load_mace_torch_file`).
        head: for multi-head models, the head to keep (name or index).
        reduced_cg: build the macelab model with the reduced symmetric CG basis (fewer
            weights, same function); by default the full basis, whose weights then map one
            to one onto mace-torch's.
        trust_pickle: with a path, load the file although loading runs code stored in it
            (mace-torch files are pickles): only for files from a source you trust.

    Returns:
        A :class:`~macelab.model.MACE` in the mace-torch model's dtype, on the CPU, in
        eval mode.

    Raises:
        UnsupportedModelError: the model uses a feature macelab does not implement.
        UntrustedFileError: ``model`` is a path and ``trust_pickle`` is not set.
    """
    if isinstance(model, str | Path):
        model = load_mace_torch_file(model, trust_pickle=trust_pickle)
    head_index = _head_index(model, head)
    hyperparameters = mace_torch_hyperparameters(model, head)
    hyperparameters["reduced_cg"] = reduced_cg
    source = model
    if next(model.parameters()).device.type != "cpu":
        import copy

        source = copy.deepcopy(model).cpu()
    with default_dtype(_parameter_dtype(source)):
        ours = MACE(**hyperparameters)
    _copy_weights(source, ours, head_index, to_mace=False)
    return ours.eval()


def to_mace_torch(model: MACE) -> torch.nn.Module:
    """A mace-torch ``ScaleShiftMACE`` (or ``MACE`` without scale/shift) equal to ``model``.

    The result runs in mace-torch's own tools (its ASE calculator, LAMMPS export), in the
    dtype of ``model``. Requires mace-torch.
    """
    h: Mapping[str, Any] = model.hyperparameters
    embedding = h.get("embedding", "full")
    if embedding != "full":
        kind = {
            "low_rank": "factorises them through element factors",
            "int8": "fake-quantises them to 8 bits",
        }.get(embedding, "compresses them")
        raise ConfigError(
            f"this model compresses its element tables (embedding={embedding}: it {kind}), "
            "which mace-torch does not have; only models with embedding=full convert to "
            "mace-torch (train or fine-tune with model.embedding=full to export)."
        )
    mace_modules = _import_mace()
    classes = mace_modules.interaction_classes
    kwargs: dict[str, Any] = {
        "r_max": h["r_max"],
        "num_bessel": h["num_bessel"],
        "num_polynomial_cutoff": h["num_polynomial_cutoff"],
        "max_ell": h["max_ell"],
        "interaction_cls": classes[_RESIDUAL],
        "interaction_cls_first": classes[
            _PLAIN if h["interaction_first"] == "plain" else _RESIDUAL
        ],
        "num_interactions": h["num_interactions"],
        "num_elements": len(h["atomic_numbers"]),
        "hidden_irreps": hidden_irreps(h["channels"], h["max_L"]),
        "MLP_irreps": o3.Irreps(f"{h['readout_mlp']}x0e"),
        "atomic_energies": np.asarray(h["atomic_energies"], dtype=np.float64),
        "avg_num_neighbors": h["avg_num_neighbors"],
        "atomic_numbers": list(h["atomic_numbers"]),
        "correlation": list(h["correlation"]),
        "gate": GATES[h["gate"]],
        "radial_MLP": list(h["radial_mlp"]),
    }
    accepted = inspect.signature(mace_modules.MACE.__init__).parameters
    transform = h.get("distance_transform", "none")
    optional = {
        "apply_cutoff": h["apply_cutoff"],
        "use_reduced_cg": False,
        "pair_repulsion": bool(h.get("pair_repulsion", False)),
        "distance_transform": {"agnesi": "Agnesi", "soft": "Soft"}.get(transform, "None"),
    }
    needed = {  # options whose value here differs from what an older mace-torch computes
        "apply_cutoff": not h["apply_cutoff"],
        "pair_repulsion": optional["pair_repulsion"],
        "distance_transform": transform != "none",
    }
    for key, value in optional.items():
        if key in accepted:
            kwargs[key] = value
        elif needed.get(key):
            raise UnsupportedModelError(
                f"this mace-torch release has no {key} option; upgrade mace-torch"
            )
    with default_dtype(model.dtype), quiet_e3nn_build():  # e3nn's TorchScript warnings
        if h["scale_shift"]:
            scale = float(model.scale_shift.scale)
            shift = float(model.scale_shift.shift)
            converted = mace_modules.ScaleShiftMACE(
                atomic_inter_scale=scale, atomic_inter_shift=shift, **kwargs
            )
        else:
            converted = mace_modules.MACE(**kwargs)
    source = model if next(model.parameters()).device.type == "cpu" else _cpu_copy(model)
    _copy_weights(converted, source, head=0, to_mace=True)
    return converted.eval()


def _cpu_copy(model: MACE) -> MACE:
    import copy

    return copy.deepcopy(model).cpu()
