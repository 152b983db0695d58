"""The symmetric contraction: the product basis of Eq. 10-11.

For atom ``i`` of element ``z_i``, channel ``k`` and each output irrep ``LM`` of the hidden
features, Eq. 10 and 11 combine to

    m_{i,kLM} = sum_{nu=1..N} sum_eta W^{(nu)}_{z_i, eta, k}
                    sum_{lm} C^{LM}_{eta, lm} prod_{xi=1..nu} A_{i, k l_xi m_xi}

with ``N`` the correlation order, ``C`` the generalised Clebsch-Gordan coefficients of
:mod:`macelab.model.clebsch_gordan` (constants, buffers ``U_nu``) and ``W`` learnable weights
that depend on the receiving atom's element (``[n_elements, n_paths, channels]`` per
``nu``). The body order of the message is ``N + 1``.

The sum over ``nu`` is evaluated as a Horner scheme, one factor of A at a time, so the
largest intermediate is ``[n_atoms, channels, (2L+1) K**(N-1)]``
(``K = (max_ell+1)**2``):

    B = ((T_N A + T_{N-1}) A + ... + T_1) A,   T_nu = sum_eta W^{(nu)}_{z_i eta} C_eta

``T_nu`` depends on the weights only. A model that computes with fixed weights (the ASE
calculator's copy) can keep every ``T_nu`` from one call to the next with
:meth:`IrrepContraction.cache_element_tensors`: the same numbers, without contracting ``U``
with ``W`` (and rearranging the result) at every call. The cache is used only while no
weight requires a gradient and none has changed since it was made.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Self

import torch
from e3nn import o3

from macelab.model.clebsch_gordan import generalised_cg
from macelab.model.int8 import fake_quantize_rows

# Constants are kept in at least this precision, whatever dtype the module is cast to.
_MIN_CONSTANT_BITS = 32


class IrrepContraction(torch.nn.Module):
    """Eq. 10-11 for one output irrep ``L``: ``[n, C, K]`` A-features -> ``[n, C * (2L+1)]``.

    Args:
        coupling_irreps: the irreps of one channel of A, e.g. ``0e + 1o + 2e + 3o``.
        irrep_out: the output irrep ``L``.
        correlation: the highest correlation order N (1 to 4).
        num_elements: size of the element table (the weights depend on ``z_i``).
        channels: C, the number of channels (each channel is contracted on its own).
        reduced_cg: use the reduced symmetric basis instead of one path per coupling tree.
        element_rank: rank of the compressed element tables (None: one table per element).
        int8: fake-quantise each element's weights ``W^(nu)[z]`` to 8 bits (per element and
            order ``nu``, straight-through gradient; :mod:`.compressed_tables`).

    Buffers ``U_1 .. U_N`` (``[2L+1, K, ..., K, n_paths]``) are not saved in state dicts:
    they are recomputed from the hyperparameters. Parameters ``weights["nu"]`` exist only for
    orders with at least one path.
    """

    def __init__(
        self,
        coupling_irreps: o3.Irreps,
        irrep_out: o3.Irrep,
        correlation: int,
        num_elements: int,
        channels: int,
        reduced_cg: bool = False,
        element_rank: int | None = None,
        int8: bool = False,
    ) -> None:
        super().__init__()
        if int8 and element_rank is not None:
            raise ValueError("int8 element tables quantise full tables; they take no rank")
        self.int8 = bool(int8)
        self.irrep_out = o3.Irrep(irrep_out)
        self.correlation = correlation
        # Orders above this are skipped (progressive correlation order, see set_correlation).
        self.active_correlation = correlation
        self.channels = channels
        self.num_components = o3.Irreps(coupling_irreps).dim  # K
        self._constants: dict[int, torch.Tensor] = {}  # float64 masters of the buffers
        # (weights' state, grouped, {nu: T_nu}) of cache_element_tensors, else None
        self._cache: tuple[tuple, bool, dict[int, torch.Tensor]] | None = None
        self.weights = torch.nn.ParameterDict()
        dtype = torch.get_default_dtype()
        # Compressed element tables: W[z] = sum_r F[z, r] V[r] (rank r), else one table per z.
        self.element_factors: torch.nn.Parameter | None = None
        rows = num_elements
        if element_rank is not None:
            rows = int(element_rank)
            factors = torch.randn(num_elements, rows, dtype=dtype) / rows**0.5
            self.element_factors = torch.nn.Parameter(factors)
        for nu in range(1, correlation + 1):
            U = generalised_cg(coupling_irreps, self.irrep_out, nu, reduced=reduced_cg)
            self._constants[nu] = U
            self.register_buffer(f"U_{nu}", U.to(_constant_dtype(dtype)), persistent=False)
            num_paths = U.shape[-1]
            if num_paths > 0:
                # Initialisation as in mace-torch: N(0, 1) / n_paths.
                self.weights[str(nu)] = torch.nn.Parameter(
                    torch.randn(rows, num_paths, channels, dtype=dtype) / num_paths
                )

    def element_weights(self, nu: int) -> torch.Tensor:
        """``W^(nu)`` for every element, ``[n_elements, P, C]``: expanded from the factors of
        a low-rank table, or fake-quantised per element for an int8 table (the weights the
        forward pass computes with)."""
        weights = self.weights[str(nu)]
        if self.int8:
            rows = fake_quantize_rows(weights.reshape(weights.shape[0], -1))  # [E, P * C]
            return rows.reshape(weights.shape)
        if self.element_factors is None:
            return weights
        return torch.einsum("er,rpc->epc", self.element_factors.to(weights.dtype), weights)

    def element_tensors(self, nu: int) -> torch.Tensor:
        """``T_nu`` of every element, ``[E, C, X, K]`` (``X = (2L+1) K**(nu-1)``): the
        weighted generalised CG basis, its last factor of A not yet contracted."""
        weights = self.element_weights(nu)  # [n_elements, P, C]
        D, K = self.irrep_out.dim, self.num_components
        U = self.U(nu).to(weights.dtype).reshape(D * K ** (nu - 1), K, -1)  # [X, K, P]
        return torch.einsum("xkp,epc->ecxk", U, weights)

    def cache_element_tensors(self, enabled: bool = True) -> None:
        """Keep every ``T_nu`` between calls (``enabled=False``: drop them).

        For a model whose weights stay fixed, such as the calculator's copy: each call then
        skips contracting ``U`` with the weights. The cache (``C * E * K**nu * (2L+1)``
        numbers per order) is used only while no weight requires a gradient and none has
        been changed in place or replaced since it was made (else the forward computes
        ``T_nu`` afresh, as without a cache); a cast or move of the module drops it.
        """
        self._cache = None
        if not enabled:
            return
        grouped = _group_by_element(self.U(1).device)
        with torch.no_grad():
            tensors = {}
            for nu in range(1, self.correlation + 1):
                if str(nu) in self.weights:
                    E, C, X, K = (T := self.element_tensors(nu)).shape
                    if grouped:  # [E, C, K, X]: one matmul per element present
                        tensors[nu] = T.transpose(2, 3).contiguous()
                    else:  # [C, E K, X]: one matmul over all elements (zeros routed)
                        tensors[nu] = T.permute(1, 0, 3, 2).reshape(C, E * K, X).contiguous()
        self._cache = (self._weights_state(), grouped, tensors)

    def _weights_state(self) -> tuple:
        """Identity and in-place version of every weight: changes when a weight does."""
        parameters = [*self.weights.values(), self.element_factors]
        return tuple(
            (id(p), p.data_ptr(), p._version, p.dtype, p.device)
            for p in parameters
            if p is not None
        )

    def _cached_element_tensors(self) -> tuple[bool, dict[int, torch.Tensor]] | None:
        """Whether the cache is grouped by element, and the cached ``T_nu`` (grouped:
        ``[E, C, K, X]``, else ``[C, E K, X]``); None where they may not be used."""
        cache = getattr(self, "_cache", None)
        if cache is None:
            return None
        parameters = [*self.weights.values(), self.element_factors]
        if any(p is not None and p.requires_grad for p in parameters):
            return None
        if cache[0] != self._weights_state():
            return None
        return cache[1:]

    def num_paths(self, nu: int) -> int:
        """eta_nu: the number of basis tensors of order ``nu``."""
        return int(getattr(self, f"U_{nu}").shape[-1])

    def U(self, nu: int) -> torch.Tensor:
        """The generalised CG basis of order ``nu``, ``[2L+1, K, ..., K, n_paths]``."""
        return getattr(self, f"U_{nu}")

    def forward(self, features: torch.Tensor, node_attrs: torch.Tensor) -> torch.Tensor:
        """Args: ``features`` A ``[n, C, K]``, ``node_attrs`` one-hot ``[n, n_elements]``.

        Returns ``[n, C * (2L+1)]`` in e3nn's layout of ``C x L``.
        """
        grouped, cached = self._cached_element_tensors() or (False, None)
        if grouped:
            return self._grouped_forward(features, node_attrs, cached)
        n, C, K = features.shape
        D = self.irrep_out.dim
        # [n, n_elements, C, K]: A routed to the element of each atom
        routed = node_attrs[:, :, None, None] * features[:, None, :, :]
        out: torch.Tensor | None = None
        for nu in range(self.active_correlation, 0, -1):
            if out is not None:
                # contract one more factor of A: [n, C, X, K] x [n, C, K] -> [n, C, X]
                out = torch.einsum("ncxk,nck->ncx", out.reshape(n, C, -1, K), features)
            if str(nu) not in self.weights:
                continue
            if cached is not None:
                # the same contraction with T_nu kept as [C, E K, X]: one batched matmul
                # over channels, [C, n, E K] x [C, E K, X] -> [n, C, X]
                left = routed.permute(2, 0, 1, 3).reshape(C, n, -1)
                term = torch.bmm(left, cached[nu]).permute(1, 0, 2)
            else:
                # T_nu per element, with its last factor already taken: [E, C, X, K]
                element_tensors = self.element_tensors(nu)
                term = torch.einsum("neck,ecxk->ncx", routed, element_tensors)  # [n, C, X]
            out = term if out is None else out + term
        if out is None:  # no path reaches this irrep at any order: the feature is zero
            return features.new_zeros(n, C * D)
        return out.reshape(n, C * D)

    def _grouped_forward(
        self, features: torch.Tensor, node_attrs: torch.Tensor, cached: dict[int, torch.Tensor]
    ) -> torch.Tensor:
        """The forward with cached ``T_nu`` (``[E, C, K, X]``), atoms grouped by element.

        The routed contraction multiplies every atom's A with the tensors of every element
        (zero for all but its own); here the atoms of each element present are taken
        together and multiplied with their element's tensors only: ``1 / E`` of the
        arithmetic, and the same sums (the routed terms left out are exact zeros). The
        atoms are put in element order once, and the result back in the atoms' order.
        ``node_attrs`` must be one-hot, as the model makes them.
        """
        n, C, K = features.shape
        D = self.irrep_out.dim
        if n == 0:
            return features.new_zeros(0, C * D)
        element_index = node_attrs.argmax(dim=1)
        order = torch.argsort(element_index, stable=True)
        counts = torch.bincount(element_index, minlength=node_attrs.shape[1]).tolist()
        # [C, n, K], atoms in element order: every intermediate stays channel-major
        per_channel = features.index_select(0, order).transpose(0, 1).contiguous()
        segments = []  # (element, first atom, last atom + 1) in element order
        start = 0
        for element, count in enumerate(counts):
            if count:
                segments.append((element, start, start + count))
            start += count
        out: torch.Tensor | None = None
        for nu in range(self.active_correlation, 0, -1):
            if out is not None:  # one more factor of A: [C, n, X, K] x [C, n, K] -> [C, n, X]
                out = torch.einsum("cnxk,cnk->cnx", out.reshape(C, n, -1, K), per_channel)
            if nu not in cached:
                continue
            T = cached[nu]  # [E, C, K, X]
            parts = [torch.bmm(per_channel[:, a:b], T[e]) for e, a, b in segments]
            term = torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]  # [C, n, X]
            out = term if out is None else out + term
        if out is None:
            return features.new_zeros(n, C * D)
        inverse = torch.empty_like(order)
        inverse[order] = torch.arange(n, device=order.device)
        out = out.index_select(1, inverse)  # [C, n, D], atoms in their order again
        return out.transpose(0, 1).reshape(n, C * D)

    def _apply(self, fn: Callable[[torch.Tensor], torch.Tensor], recurse: bool = True) -> Self:
        """Cast like any module, but keep the constants U in at least float32, exact.

        ``model.half()`` or ``model.to(torch.bfloat16)`` would otherwise round the Clebsch-
        Gordan coefficients to 8-11 bits, and a float32 round trip would leave float64 models
        with rounded constants; the buffers are re-derived from the float64 masters instead.
        """
        super()._apply(fn, recurse)
        self._cache = None  # T_nu of the old dtype or device
        for nu, master in self._constants.items():
            name = f"U_{nu}"
            buffer = self._buffers[name]
            if buffer is not None:
                dtype = _constant_dtype(buffer.dtype)
                self._buffers[name] = master.to(device=buffer.device, dtype=dtype)
        return self

    def extra_repr(self) -> str:
        paths = [self.num_paths(nu) for nu in range(1, self.correlation + 1)]
        return f"L={self.irrep_out}, correlation={self.correlation}, paths per order={paths}"


# Cached tensors on these devices multiply each element's atoms on their own (fewer
# operations, a host-side grouping per call); elsewhere all elements at once (no sync).
GROUPED_DEVICE_TYPES = ("cpu",)


def _group_by_element(device: torch.device) -> bool:
    return torch.device(device).type in GROUPED_DEVICE_TYPES


def _constant_dtype(dtype: torch.dtype) -> torch.dtype:
    return dtype if torch.finfo(dtype).bits >= _MIN_CONSTANT_BITS else torch.float32


class SymmetricContraction(torch.nn.Module):
    """Eq. 10-11 for every irrep of the hidden features.

    Args:
        irreps_in: irreps of A, ``C x (0e + 1o + ... + max_ell)``.
        irreps_out: irreps of the message m, ``C x (0e + 1o + ... + L)``.
        correlation: the correlation order N of this layer (1 to 4).
        num_elements: size of the element table.
        reduced_cg: see :mod:`macelab.model.clebsch_gordan`.
        element_rank: rank of the compressed element tables (None: one table per element).
        int8: fake-quantise the element tables to 8 bits (``model.embedding=int8``).

    Input ``[n, C, K]`` (A in channel layout), output ``[n, irreps_out.dim]`` (e3nn layout).
    """

    def __init__(
        self,
        irreps_in: o3.Irreps,
        irreps_out: o3.Irreps,
        correlation: int,
        num_elements: int,
        reduced_cg: bool = False,
        element_rank: int | None = None,
        int8: bool = False,
    ) -> None:
        super().__init__()
        self.irreps_in = o3.Irreps(irreps_in)
        self.irreps_out = o3.Irreps(irreps_out)
        channels = {mul for mul, _ in self.irreps_in} | {mul for mul, _ in self.irreps_out}
        if len(channels) != 1:
            raise ValueError(
                f"the symmetric contraction is channel-wise: every irrep of {self.irreps_in} "
                f"and {self.irreps_out} needs the same number of channels"
            )
        coupling_irreps = o3.Irreps([(1, ir) for _, ir in self.irreps_in])
        self.contractions = torch.nn.ModuleList(
            IrrepContraction(
                coupling_irreps,
                ir,
                correlation,
                num_elements,
                mul,
                reduced_cg,
                element_rank,
                int8,
            )
            for mul, ir in self.irreps_out
        )

    def forward(self, features: torch.Tensor, node_attrs: torch.Tensor) -> torch.Tensor:
        return torch.cat([c(features, node_attrs) for c in self.contractions], dim=-1)

    def cache_element_tensors(self, enabled: bool = True) -> bool:
        """:meth:`IrrepContraction.cache_element_tensors` of every irrep this module's own
        forward contracts; False (nothing cached) where a kernel backend computes it."""
        cached = False
        if type(self).forward is SymmetricContraction.forward:
            for contraction in self.contractions:
                if type(contraction).forward is IrrepContraction.forward:
                    contraction.cache_element_tensors(enabled)
                    cached = True
        return cached and enabled

    def set_correlation(self, order: int | None) -> None:
        """Compute only the orders ``nu <= order`` (all with None); higher-order paths are
        skipped, not zeroed, so they cost nothing."""
        for contraction in self.contractions:
            top = contraction.correlation
            contraction.active_correlation = top if order is None else max(1, min(order, top))

    @torch.no_grad()
    def zero_inactive_weights(self) -> None:
        """Set the weights of the skipped orders to zero, so that switching them on later
        leaves every prediction exactly as it was (their terms start at zero and learn)."""
        for contraction in self.contractions:
            for nu, weights in contraction.weights.items():
                if int(nu) > contraction.active_correlation:
                    weights.zero_()
