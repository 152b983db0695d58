"""The symmetric contraction (Eq. 10-11) through NVIDIA cuEquivariance (``runtime.backend=cueq``).

cuEquivariance's ``SymmetricContraction`` computes the same function space as ours in its
own basis: the product basis of correlation orders 1..N, one weight per basis element,
element and channel. macelab's parameters stay the truth (state dicts, checkpoints, the other
backends are unchanged): each call maps our weights ``W [E, P, C]`` to cuEquivariance's
``W' = M W`` (``M [P', P]``, a constant) and runs cuEquivariance's module with ``W'`` through
``torch.func.functional_call``, so gradients reach our parameters.

``M`` is found by probing, not by matching the two libraries' conventions: both
contractions are linear in their weights, so each basis element of either side is a
polynomial of A that can be evaluated on random features; ``M`` is the least-squares solution
of ``cueq(M e_p) = ours(e_p)`` over those evaluations, computed once per module in float64
and checked on fresh features (a residual above 1e-9 raises: the bases do not match).

On a GPU with ``cuequivariance-ops-torch`` installed the contraction runs in cuEquivariance's
CUDA kernel; elsewhere in its pure-PyTorch ("naive") method, which is what CI tests.
"""

from __future__ import annotations

import importlib.util
import math
import weakref
from typing import Any

import torch
from e3nn import o3

from macelab.kernels.sparse_cg import _contractions

_PROBE_TOLERANCE = 1e-9
_CACHE: weakref.WeakKeyDictionary[torch.nn.Module, dict[tuple, Any]] = weakref.WeakKeyDictionary()


def cueq_available() -> str | None:
    """None if the cueq backend can run here, else why not."""
    for name in ("cuequivariance", "cuequivariance_torch"):
        if importlib.util.find_spec(name) is None:
            return (
                f"{name} is not installed (pip install 'macelab[cueq]'; on a GPU also "
                "cuequivariance-ops-torch-cu12 or -cu13 for its CUDA kernels)"
            )
    return None


def cuda_kernels_available() -> bool:
    """Whether cuEquivariance's CUDA kernels (``cuequivariance_ops_torch``) are installed."""
    return importlib.util.find_spec("cuequivariance_ops_torch") is not None


def _cue_irreps(irreps: o3.Irreps, channels: int) -> Any:
    import cuequivariance as cue

    return cue.Irreps("O3", " + ".join(f"{channels}x{ir}" for _, ir in irreps))


def _cueq_module(module: torch.nn.Module, channels: int, num_elements: int, method: str | None):
    """cuEquivariance's contraction for the irreps of ``module`` (a SymmetricContraction)
    with ``channels`` channels: A in ``ir_mul`` layout in, our (e3nn, ``mul_ir``) layout out."""
    import cuequivariance as cue
    import cuequivariance_torch as cuet

    return cuet.SymmetricContraction(
        _cue_irreps(module.irreps_in, channels),
        _cue_irreps(module.irreps_out, channels),
        contraction_degree=max(c.correlation for c in _contractions(module)),
        num_elements=num_elements,
        layout_in=cue.ir_mul,
        layout_out=cue.mul_ir,
        dtype=torch.float64,
        method=method,
    )


def _our_basis(module: torch.nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, list]:
    """Every basis function of ours (one column per (irrep, order, path)) evaluated on the
    features ``x [S, K]`` of one channel: ``[S * D_out, P]``, and the column keys."""
    S = x.shape[0]
    blocks, keys, offset = [], [], 0
    contractions = _contractions(module)
    total = sum(c.irrep_out.dim for c in contractions)
    for j, contraction in enumerate(contractions):
        D = contraction.irrep_out.dim
        for nu in range(1, contraction.correlation + 1):
            if str(nu) not in contraction.weights:
                continue
            U = contraction._constants[nu].to(x)  # [D, K, ..., K, P], the float64 master
            P = U.shape[-1]
            powers = x
            for _ in range(nu - 1):  # x^(x nu): [S, K**nu]
                powers = (powers[:, :, None] * x[:, None, :]).reshape(S, -1)
            value = powers @ U.movedim(-1, 1).reshape(D * P, -1).T  # [S, D * P]
            columns = torch.zeros(S, total, P, dtype=x.dtype)
            columns[:, offset : offset + D] = value.reshape(S, D, P)
            blocks.append(columns.reshape(S * total, P))
            keys.append((j, nu, P))
        offset += D
    return torch.cat(blocks, dim=1), keys


def _cueq_basis(cueq: torch.nn.Module, x: torch.Tensor, channels: int) -> torch.Tensor:
    """cuEquivariance's basis functions on the features ``x [S, K]`` of channel 0:
    ``[S * D_out, P']``, all in one call (weight ``j`` of channel 0 is "element" ``j``, a
    unit vector; the other channels are zero)."""
    S, K = x.shape
    P = cueq.weight.shape[1]
    weight = torch.zeros(P, P, channels, dtype=x.dtype, device=x.device)
    weight[:, :, 0] = torch.eye(P, dtype=x.dtype, device=x.device)
    inputs = torch.zeros(P * S, K, channels, dtype=x.dtype, device=x.device)
    inputs[:, :, 0] = x.repeat(P, 1)  # ir_mul: [n, (K, C)]
    indices = torch.arange(P, device=x.device).repeat_interleave(S)
    out = torch.func.functional_call(
        cueq, {"weight": weight}, (inputs.reshape(P * S, -1), indices)
    )  # [P * S, (D_out, C)] in mul_ir blocks
    blocks, offset = [], 0
    for mul, ir in _irreps_out(cueq):
        block = out[:, offset : offset + mul * ir.dim].reshape(P, S, mul, ir.dim)
        blocks.append(block[:, :, 0])  # channel 0: [P, S, 2L+1]
        offset += mul * ir.dim
    return torch.cat(blocks, dim=-1).reshape(P, -1).T  # [S * D_out, P']


def _irreps_out(cueq: torch.nn.Module) -> list[tuple[int, o3.Irrep]]:
    return [(mul, o3.Irrep(str(ir))) for mul, ir in cueq.irreps_out]


def probe_mapping(
    module: torch.nn.Module, cueq: torch.nn.Module, seed: int = 0
) -> tuple[torch.Tensor, list]:
    """``M [P', P]`` with ``cueq(M w) = ours(w)`` for every weight vector ``w`` of one channel
    and element (``cueq`` built for ``module``, in float64), and the (irrep, order, paths)
    keys of the columns; ValueError if cuEquivariance's basis cannot represent ours."""
    channels = module.irreps_in[0].mul
    K = module.irreps_in.dim // channels
    D_out = module.irreps_out.dim // channels
    num_weights = cueq.weight.shape[1]
    samples = math.ceil(2 * num_weights / D_out) + 8
    generator = torch.Generator().manual_seed(seed)
    fit, check = (
        torch.randn(samples, K, dtype=torch.float64, generator=generator) for _ in range(2)
    )
    device = cueq.weight.device
    ours, keys = _our_basis(module, fit)
    theirs = _cueq_basis(cueq, fit.to(device), channels).cpu()
    M = torch.linalg.lstsq(theirs, ours).solution  # [P', P]
    ours_check, _ = _our_basis(module, check)
    residual = _cueq_basis(cueq, check.to(device), channels).cpu() @ M - ours_check
    relative = float(residual.norm() / ours_check.norm())
    if not relative < _PROBE_TOLERANCE:
        raise ValueError(
            f"cuEquivariance's symmetric-contraction basis does not reproduce macelab's for "
            f"{module.irreps_in} -> {module.irreps_out} (relative residual {relative:.1e}); "
            "use runtime.backend=e3nn"
        )
    return M, keys


def _state(module: torch.nn.Module, device: torch.device, dtype: torch.dtype) -> dict:
    """The cuEquivariance module and mapping of ``module``, cached per device, dtype and
    active orders."""
    contractions = _contractions(module)
    active = tuple(c.active_correlation for c in contractions)
    key = (device, dtype, active)
    per_module = _CACHE.setdefault(module, {})
    if key not in per_module:
        channels = module.irreps_in[0].mul
        first = contractions[0]
        num_elements = first.weights[next(iter(first.weights))].shape[0]
        if first.element_factors is not None:
            num_elements = first.element_factors.shape[0]
        method = None if device.type == "cuda" and cuda_kernels_available() else "naive"
        cueq = _cueq_module(module, channels, num_elements, method).to(device=device)
        M, keys = probe_mapping(module, cueq)
        mask = torch.tensor(
            [nu <= contractions[j].active_correlation for j, nu, p in keys for _ in range(p)]
        )
        per_module[key] = {
            "cueq": cueq.to(dtype=dtype),
            "M": (M * mask).to(device=device, dtype=dtype),  # skipped orders contribute 0
            "keys": keys,
        }
    return per_module[key]


def cueq_contract(
    module: torch.nn.Module, features: torch.Tensor, node_attrs: torch.Tensor
) -> torch.Tensor:
    """The forward of a SymmetricContraction through cuEquivariance: A ``[n, C, K]``,
    one-hot ``[n, E]`` -> ``[n, irreps_out.dim]`` (the e3nn layout of the reference)."""
    n, C, K = features.shape
    contractions = _contractions(module)
    dtype = contractions[0].weights[next(iter(contractions[0].weights))].dtype
    state = _state(module, features.device, dtype)
    ours = torch.cat(
        [contractions[j].element_weights(nu) for j, nu, _ in state["keys"]], dim=1
    )  # [E, P, C]
    weight = torch.einsum("qp,epc->eqc", state["M"], ours)  # [E, P', C]
    x = features.transpose(1, 2).reshape(n, K * C)  # ir_mul: [n, (K, C)]
    elements = node_attrs.argmax(dim=1)
    return torch.func.functional_call(state["cueq"], {"weight": weight}, (x, elements))
