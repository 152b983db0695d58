"""The coefficients of Eq. 8's channel-wise tensor product, read off e3nn by probing.

The tensor product of an :class:`~macelab.model.interaction.Interaction` couples the sender's
features ``h_j`` (irreps ``C x l_2`` blocks) with the spherical harmonics ``Y(r_ji)`` into one
output block ``C x l_3`` per path p, each weighted per channel by the radial weights:

    m_{ji, c, p, m_3} = R_{ji, c, p} sum_{m_1, m_2} C^p_{m_1 m_2 m_3} Y_{m_1}(r_ji) h_{j, c, m_2}

``C^p`` holds the Clebsch-Gordan coefficients times e3nn's path and irrep normalisations.
Rather than re-derive e3nn's conventions, :func:`conv_plan` evaluates the module's own tensor
product on unit inputs (one spherical-harmonic component times one feature component of
channel 0, unit weights) in float64 and records every nonzero output: the entries
``(p, m_1, block, m_2, m_3, C)`` of a :class:`ConvPlan`. A second probe on channel 1 and
random inputs checks that the plan reproduces the module (else ValueError), so a change of
e3nn's layout cannot go unnoticed.

Layouts (e3nn's flat "mul_ir"): feature (block b, channel c, m_2) sits at
``node_offsets[b] + c * node_dims[b] + m_2``; output (path p, c, m_3) at
``mid_offsets[p] + c * mid_dims[p] + m_3``; radial weight (p, c) at ``p * C + c``.
"""

from __future__ import annotations

import copy
import weakref
from dataclasses import dataclass

import torch

from macelab.model.stages import implementation

_PLANS: weakref.WeakKeyDictionary[torch.nn.Module, ConvPlan] = weakref.WeakKeyDictionary()


@dataclass(frozen=True)
class ConvPlan:
    """Everything the fused kernels need to know about one channel-wise tensor product."""

    channels: int  # C, the multiplicity of every block
    sh_dim: int  # (max_ell + 1)**2
    node_offsets: tuple[int, ...]  # per input block b
    node_dims: tuple[int, ...]  # 2 l_2 + 1
    mid_offsets: tuple[int, ...]  # per path p (= output block)
    mid_dims: tuple[int, ...]  # 2 l_3 + 1
    entries: tuple[tuple[int, int, int, int, int, float], ...]  # (p, m1, b, m2, m3, coeff)

    @property
    def num_paths(self) -> int:
        return len(self.mid_dims)

    @property
    def node_dim(self) -> int:
        return self.channels * sum(self.node_dims)

    @property
    def mid_dim(self) -> int:
        return self.channels * sum(self.mid_dims)

    def flops_per_edge(self) -> int:
        """Multiply-adds x 2 of one edge's messages: each entry is ``coeff * Y * h``, each
        output component once more times R (the neighbour sum adds one more add)."""
        return 2 * self.channels * (len(self.entries) + sum(self.mid_dims))


def conv_plan(tensor_product: torch.nn.Module) -> ConvPlan:
    """The :class:`ConvPlan` of an e3nn ``o3.TensorProduct`` built by
    :func:`~macelab.model.irreps.channelwise_instructions` (cached per module)."""
    plan = _PLANS.get(tensor_product)
    if plan is None:
        plan = _probe(tensor_product)
        _check(tensor_product, plan)
        _PLANS[tensor_product] = plan
    return plan


def _blocks(irreps) -> tuple[tuple[int, ...], tuple[int, ...], set[int]]:
    offsets, dims, muls, start = [], [], set(), 0
    for mul, ir in irreps:
        offsets.append(start)
        dims.append(ir.dim)
        muls.add(mul)
        start += mul * ir.dim
    return tuple(offsets), tuple(dims), muls


def _probe(tp: torch.nn.Module) -> ConvPlan:
    node_offsets, node_dims, node_muls = _blocks(tp.irreps_in1)
    mid_offsets, mid_dims, mid_muls = _blocks(tp.irreps_out)
    sh_dim = tp.irreps_in2.dim
    if len(node_muls | mid_muls) != 1 or any(mul != 1 for mul, _ in tp.irreps_in2):
        raise ValueError(
            "the fused convolution needs one multiplicity C for every feature and output "
            f"block and single spherical harmonics; got {tp.irreps_in1} x {tp.irreps_in2} -> "
            f"{tp.irreps_out}"
        )
    channels = node_muls.pop()
    paths = [ins for ins in tp.instructions]
    if [ins.i_out for ins in paths] != list(range(len(mid_dims))) or any(
        ins.connection_mode != "uvu" or tuple(ins.path_shape) != (channels, 1) for ins in paths
    ):
        raise ValueError("the fused convolution needs one 'uvu' path per output block, in order")
    if tp.weight_numel != channels * len(paths):
        raise ValueError(f"expected {channels * len(paths)} weights, e3nn has {tp.weight_numel}")
    # one probe per (spherical-harmonic component, channel-0 feature component)
    feature_index = [(b, m2) for b, d in enumerate(node_dims) for m2 in range(d)]
    n = sh_dim * len(feature_index)
    x1 = torch.zeros(n, tp.irreps_in1.dim, dtype=torch.float64)
    x2 = torch.zeros(n, sh_dim, dtype=torch.float64)
    for row in range(n):
        m1, (b, m2) = divmod(row, len(feature_index))[0], feature_index[row % len(feature_index)]
        x2[row, m1] = 1.0
        x1[row, node_offsets[b] + m2] = 1.0
    weights = torch.ones(n, tp.weight_numel, dtype=torch.float64)
    with torch.no_grad():
        out = _run64(tp, x1, x2, weights)  # [n, mid_dim]
    entries = []
    for row in range(n):
        m1, (b, m2) = row // len(feature_index), feature_index[row % len(feature_index)]
        for p, (offset, dim) in enumerate(zip(mid_offsets, mid_dims, strict=True)):
            for m3 in range(dim):
                value = float(out[row, offset + m3])
                if abs(value) > 1e-12:
                    entries.append((p, m1, b, m2, m3, value))
    entries.sort()
    return ConvPlan(
        channels, sh_dim, node_offsets, node_dims, mid_offsets, mid_dims, tuple(entries)
    )


def _run64(tp: torch.nn.Module, *inputs: torch.Tensor) -> torch.Tensor:
    """``tp(*inputs)`` in float64 on the CPU without changing ``tp``."""
    probe = copy.deepcopy(tp).to(device="cpu", dtype=torch.float64)
    probe.__class__ = implementation(probe)  # the class's forward, not a precision policy's
    return probe(*inputs)


def reference_messages(
    plan: ConvPlan,
    node_feats: torch.Tensor,  # [n, node_dim]
    edge_sh: torch.Tensor,  # [e, sh_dim]
    weights: torch.Tensor,  # [e, P * C]
    sender: torch.Tensor,  # [e]
) -> torch.Tensor:  # [e, mid_dim]
    """The per-edge messages from the plan's entries in plain torch (checks and tests)."""
    c = plan.channels
    e = edge_sh.shape[0]
    h = node_feats[sender]
    w = weights.reshape(e, plan.num_paths, c)
    out = [
        torch.zeros(e, c, d, dtype=h.dtype, device=h.device) for d in plan.mid_dims
    ]  # per path [e, C, 2l3+1]
    for p, m1, b, m2, m3, coeff in plan.entries:
        start = plan.node_offsets[b]
        feature = h[:, start : start + c * plan.node_dims[b]].reshape(e, c, -1)[:, :, m2]
        out[p][:, :, m3] += coeff * edge_sh[:, m1, None] * feature * w[:, p]
    return torch.cat([block.reshape(e, -1) for block in out], dim=1)


def _check(tp: torch.nn.Module, plan: ConvPlan) -> None:
    """The plan reproduces ``tp`` on random inputs (every channel), to 1e-10 relative."""
    generator = torch.Generator().manual_seed(0)
    e, n = 7, 5
    node_feats = torch.randn(n, tp.irreps_in1.dim, generator=generator, dtype=torch.float64)
    edge_sh = torch.randn(e, plan.sh_dim, generator=generator, dtype=torch.float64)
    weights = torch.randn(e, tp.weight_numel, generator=generator, dtype=torch.float64)
    sender = torch.randint(0, n, (e,), generator=generator)
    with torch.no_grad():
        expected = _run64(tp, node_feats[sender], edge_sh, weights)
    got = reference_messages(plan, node_feats, edge_sh, weights, sender)
    error = (got - expected).abs().max() / expected.abs().max().clamp_min(1e-300)
    if not error < 1e-10:
        raise ValueError(
            f"the probed tensor-product plan does not reproduce e3nn (relative error "
            f"{float(error):.2e}); e3nn's layout may have changed"
        )
