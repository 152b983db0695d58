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

    def num_paths(self, nu: int) -> int:
        """eta_nu: the number of basis tensors of order ``nu``."""
        return int(getattr(self, f"U_{nu}").shape[-1])

    def U(self, nu: int) -> torch.Tensor:
        """The generalised CG basis of order ``nu``, ``[2L+1, K, ..., K, n_paths]``."""
        return getattr(self, f"U_{nu}")

    def element_tensors(self, nu: int) -> torch.Tensor:
        """``T_nu`` of every element, ``[E, C, X, K]`` (``X = (2L+1) K**(nu-1)``): the
        weighted generalised CG basis, its last factor of A not yet contracted."""
        weights = self.element_weights(nu)  # [n_elements, P, C]
        D, K = self.irrep_out.dim, self.num_components
        U = self.U(nu).to(weights.dtype).reshape(D * K ** (nu - 1), K, -1)  # [X, K, P]
        return torch.einsum("xkp,epc->ecxk", U, weights)

    def forward(self, features: torch.Tensor, node_attrs: torch.Tensor) -> torch.Tensor:
        """Args: ``features`` A ``[n, C, K]``, ``node_attrs`` one-hot ``[n, n_elements]``.

        Returns ``[n, C * (2L+1)]`` in e3nn's layout of ``C x L``.
        """
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
            # T_nu per element, with its last factor already taken: [E, C, X, K]
            term = torch.einsum("neck,ecxk->ncx", routed, self.element_tensors(nu))  # [n, C, X]
            out = term if out is None else out + term
        if out is None:  # no path reaches this irrep at any order: the feature is zero
            return features.new_zeros(n, C * D)
        return out.reshape(n, C * D)

    def _apply(self, fn: Callable[[torch.Tensor], torch.Tensor], recurse: bool = True) -> Self:
        """Cast like any module, but keep the constants U in at least float32, exact.

        ``model.half()`` or ``model.to(torch.bfloat16)`` would otherwise round the Clebsch-
        Gordan coefficients to 8-11 bits, and a float32 round trip would leave float64 models
        with rounded constants; the buffers are re-derived from the float64 masters instead.
        """
        super()._apply(fn, recurse)
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
