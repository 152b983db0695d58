"""The symmetric contraction of a model whose weights stay fixed: the calculator's copy.

In Eq. 10-11 (:mod:`macelab.model.symmetric_contraction`) the weighted basis
``T_nu = sum_eta W^(nu)_{z eta} C_eta`` depends on the weights only, yet the reference
forward builds it at every call, and contracts every atom's A with the tensors of every
element (all but its own are zeros). :class:`FrozenIrrepContraction` keeps every ``T_nu``
from one call to the next, in the layout its matrix products read:

* on a CPU, ``[E, C, K, X]``: the atoms of each element present are multiplied with their
  own element's tensors only (``1 / E`` of the arithmetic; a host-side grouping per call,
  the sums equal to rounding);
* elsewhere, ``[C, E K, X]``: one batched product over all elements, the reference's own
  product with ``T_nu`` kept (no host synchronisation; bit-identical results).

The kept tensors are used only while no weight requires a gradient and none has been
changed or replaced since they were made (identity, storage and in-place version of every
weight, checked per call); otherwise the reference forward runs. A cast or move drops them.
:func:`freeze_contractions` swaps it in for the reference contraction of a model, as the
other implementations of :mod:`macelab.kernels` are swapped in; the calculator does so for
its plain (not graphed or compiled) calls.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Self

import torch

from macelab.model.stages import set_implementation
from macelab.model.symmetric_contraction import IrrepContraction, SymmetricContraction

# Devices where the kept tensors multiply each element's atoms on their own (fewer
# operations, a host-side grouping per call); elsewhere all elements at once (no sync).
GROUPED_DEVICE_TYPES = ("cpu",)

# (the weights' state when made, grouped by element, {nu: T_nu})
_Kept = tuple[tuple, bool, dict[int, torch.Tensor]]


class FrozenIrrepContraction(IrrepContraction):
    """:class:`IrrepContraction` with its ``T_nu`` kept between calls (module docstring);
    :meth:`freeze` makes (or remakes) them."""

    _kept: _Kept | None = None

    def freeze(self) -> None:
        """Make every ``T_nu`` from the current weights, in the current default autocast
        (the calculator's precision), in the layout of this device."""
        grouped = torch.device(self.U(1).device).type in GROUPED_DEVICE_TYPES
        tensors = {}
        with torch.no_grad():
            for nu in range(1, self.correlation + 1):
                if str(nu) not in self.weights:
                    continue
                T = self.element_tensors(nu)  # [E, C, X, K]
                E, C, X, K = T.shape
                if grouped:  # [E, C, K, X]: one product per element present
                    tensors[nu] = T.transpose(2, 3).contiguous()
                else:  # [C, E K, X]: one product over all elements (zeros routed)
                    tensors[nu] = T.permute(1, 0, 3, 2).reshape(C, E * K, X).contiguous()
        self._kept = (self._weights_state(), grouped, tensors)

    def _weights_state(self) -> tuple:
        """Identity, storage and in-place version of every weight: changes when one does."""
        parameters = [*self.weights.values(), self.element_factors]
        return tuple(
            (id(p), p.data_ptr(), p._version, p.dtype, p.device)
            for p in parameters
            if p is not None
        )

    def _usable(self) -> _Kept | None:
        """The kept tensors, or None where they may not be used (training, changed weights)."""
        if self._kept is None:
            return None
        parameters = [*self.weights.values(), self.element_factors]
        if any(p is not None and p.requires_grad for p in parameters):
            return None
        return self._kept if self._kept[0] == self._weights_state() else None

    def forward(self, features: torch.Tensor, node_attrs: torch.Tensor) -> torch.Tensor:
        """As :meth:`IrrepContraction.forward` (``[n, C, K]`` -> ``[n, C * (2L+1)]``)."""
        kept = self._usable()
        if kept is None:
            return super().forward(features, node_attrs)
        _, grouped, tensors = kept
        if grouped:
            return self._grouped_forward(features, node_attrs, tensors)
        return self._batched_forward(features, node_attrs, tensors)

    def _horner(
        self,
        tensors: dict[int, torch.Tensor],
        times_a: Callable[[torch.Tensor], torch.Tensor],
        term: Callable[[torch.Tensor], torch.Tensor],
    ) -> torch.Tensor | None:
        """``((T_N A + T_{N-1}) A + ... + T_1) A`` from the kept tensors, in the layout that
        ``times_a`` (one more factor of A) and ``term`` (``T_nu`` A) compute in; None where
        no order has a path."""
        out: torch.Tensor | None = None
        for nu in range(self.active_correlation, 0, -1):
            if out is not None:
                out = times_a(out)
            if nu in tensors:
                out = term(tensors[nu]) if out is None else out + term(tensors[nu])
        return out

    def _batched_forward(
        self, features: torch.Tensor, node_attrs: torch.Tensor, tensors: dict[int, torch.Tensor]
    ) -> torch.Tensor:
        """The reference's Horner scheme with ``T_nu`` kept as ``[C, E K, X]``."""
        n, C, K = features.shape
        D = self.irrep_out.dim
        routed = node_attrs[:, :, None, None] * features[:, None, :, :]  # [n, E, C, K]
        left = routed.permute(2, 0, 1, 3).reshape(C, n, -1)  # [C, n, E K]
        out = self._horner(
            tensors,
            # one more factor of A: [n, C, X, K] x [n, C, K] -> [n, C, X]
            lambda out: torch.einsum("ncxk,nck->ncx", out.reshape(n, C, -1, K), features),
            lambda T: torch.bmm(left, T).permute(1, 0, 2),  # [n, C, X]
        )
        if out is None:  # no path reaches this irrep at any order: the feature is zero
            return features.new_zeros(n, C * D)
        return out.reshape(n, C * D)

    def _grouped_forward(
        self, features: torch.Tensor, node_attrs: torch.Tensor, tensors: dict[int, torch.Tensor]
    ) -> torch.Tensor:
        """The Horner scheme with the atoms grouped by element, ``T_nu`` as ``[E, C, K, X]``:
        each element's atoms are multiplied with that element's tensors only."""
        n, C, K = features.shape
        D = self.irrep_out.dim
        if n == 0:
            return features.new_zeros(0, C * D)
        element = node_attrs.argmax(dim=1)
        order = torch.argsort(element, stable=True)
        counts = torch.bincount(element, minlength=node_attrs.shape[1]).tolist()
        per_channel = features.index_select(0, order).transpose(0, 1).contiguous()  # [C, n, K]
        segments, start = [], 0  # (element, first atom, end) in element order
        for z, count in enumerate(counts):
            if count:
                segments.append((z, start, start + count))
            start += count

        def term(T: torch.Tensor) -> torch.Tensor:  # [E, C, K, X] -> [C, n, X]
            parts = [torch.bmm(per_channel[:, a:b], T[z]) for z, a, b in segments]
            return torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]

        out = self._horner(
            tensors,
            # one more factor of A: [C, n, X, K] x [C, n, K] -> [C, n, X]
            lambda out: torch.einsum("cnxk,cnk->cnx", out.reshape(C, n, -1, K), per_channel),
            term,
        )
        if out is None:  # no path reaches this irrep at any order: the feature is zero
            return features.new_zeros(n, C * D)
        inverse = torch.empty_like(order)
        inverse[order] = torch.arange(n, device=order.device)
        out = out.index_select(1, inverse)  # [C, n, D], the atoms in their order again
        return out.transpose(0, 1).reshape(n, C * D)

    def _apply(self, fn: Callable[[torch.Tensor], torch.Tensor], recurse: bool = True) -> Self:
        """Cast or move as :class:`IrrepContraction`, dropping the kept tensors."""
        self._kept = None
        return super()._apply(fn, recurse)


def freeze_contractions(model: torch.nn.Module) -> bool:
    """Compute every reference symmetric contraction of ``model`` (the e3nn backend) with
    :class:`FrozenIrrepContraction`, its ``T_nu`` made now from the current weights (see the
    module docstring). Contractions on another backend, or under a precision policy's
    layer (whose stage dtype the kept tensors would not follow), are left as they are.
    Returns whether any was frozen. :func:`macelab.kernels.set_backend` puts the reference
    back."""
    frozen = False
    for module in model.modules():
        if type(module) is not SymmetricContraction:
            continue  # a kernel computes the whole module, or a policy layer wraps it
        for contraction in module.contractions:
            if type(contraction) in (IrrepContraction, FrozenIrrepContraction):
                set_implementation(contraction, FrozenIrrepContraction)
                contraction.freeze()
                frozen = True
    return frozen
