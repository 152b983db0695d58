"""The product basis and the update: Eq. 10-12.

``contraction`` (Eq. 10-11, :class:`~macelab.model.symmetric_contraction.SymmetricContraction`)
turns the atomic basis A into the many-body message ``m_i`` with irreps of the next hidden
features; ``update`` (Eq. 12) is

    h_i^(t+1) = W m_i^(t) + [residual]  sum_k' W_{z_i k k' L} h_{i,k'LM}^(t)

the second term an element-dependent self-connection of the previous features (an e3nn
``FullyConnectedTensorProduct`` of h with the one-hot node attributes), present in the
residual layers (mace-torch's ``RealAgnosticResidualInteractionBlock``, its default) and
absent from the plain first layer of older models.

Compressed element tables (``model.embedding``): with ``low_rank`` the one-hot is replaced by
``r`` learnable element factors, ``onehot(z) F`` (``F`` ``[n_elements, r]``), so the
self-connection is a tensor product with ``r x 0e`` attributes and its weights shrink by
``n_elements / r`` (at full rank with ``F = I`` it is the plain one exactly); with ``int8``
its weights are fake-quantised per element (:mod:`.compressed_tables`).
"""

from __future__ import annotations

import torch
from e3nn import o3

from macelab.model.int8 import fake_quantize_e3nn
from macelab.model.symmetric_contraction import SymmetricContraction


class Update(torch.nn.Module):
    """Eq. 12: ``linear(m) [+ self_connection(h, onehot(z))]``.

    Args:
        node_irreps_in: irreps of h^(t) (input of the self-connection).
        node_irreps_out: irreps of m and of h^(t+1).
        num_elements: size of the element table.
        residual: include the element-dependent self-connection.
        element_rank: rank r of a low-rank self-connection (None: one-hot attributes).
        int8: fake-quantise the self-connection's weights per element to 8 bits.

    Parameters: ``linear``, ``self_connection.weight`` and, with ``element_rank``,
    ``element_factors`` ``[n_elements, r]`` (the state-dict layout of full models is
    mace-torch's).
    """

    def __init__(
        self,
        node_irreps_in: o3.Irreps,
        node_irreps_out: o3.Irreps,
        num_elements: int,
        residual: bool = True,
        element_rank: int | None = None,
        int8: bool = False,
    ) -> None:
        super().__init__()
        if int8 and element_rank is not None:
            raise ValueError("an int8 self-connection quantises the full table; it takes no rank")
        self.int8 = bool(int8)
        self.linear = o3.Linear(node_irreps_out, node_irreps_out)
        self.self_connection: o3.FullyConnectedTensorProduct | None = None
        self.element_factors: torch.nn.Parameter | None = None
        if residual:
            attributes = num_elements
            if element_rank is not None:
                attributes = int(element_rank)
                dtype = torch.get_default_dtype()
                # Rows of norm ~1, like the one-hot they replace.
                factors = torch.randn(num_elements, attributes, dtype=dtype) / attributes**0.5
                self.element_factors = torch.nn.Parameter(factors)
            attr_irreps = o3.Irreps([(attributes, (0, 1))])  # one-hot or r factors, 0e
            self.self_connection = o3.FullyConnectedTensorProduct(
                node_irreps_in, attr_irreps, node_irreps_out
            )

    def forward(
        self,
        message: torch.Tensor,  # [n, node_irreps_out.dim]
        node_feats: torch.Tensor,  # [n, node_irreps_in.dim]
        node_attrs: torch.Tensor,  # [n, n_elements]
    ) -> torch.Tensor:  # [n, node_irreps_out.dim]
        updated = self.linear(message)
        if self.self_connection is None:
            return updated
        if self.element_factors is not None:
            node_attrs = node_attrs @ self.element_factors.to(node_attrs.dtype)  # [n, r]
        if self.int8:
            tp = self.self_connection
            weight = fake_quantize_e3nn(tp, tp.weight, axis=1)  # input 2: the element
            return updated + tp(node_feats, node_attrs, weight)
        return updated + self.self_connection(node_feats, node_attrs)


class ProductBasis(torch.nn.Module):
    """One layer's Eq. 10-12: A ``[n, C, K]`` and h^(t) -> h^(t+1).

    Submodules ``contraction`` (Eq. 10-11) and ``update`` (Eq. 12); ``element_rank`` and
    ``int8`` compress the element tables of both.
    """

    def __init__(
        self,
        a_irreps: o3.Irreps,
        node_irreps_in: o3.Irreps,
        node_irreps_out: o3.Irreps,
        correlation: int,
        num_elements: int,
        residual: bool = True,
        reduced_cg: bool = False,
        element_rank: int | None = None,
        int8: bool = False,
    ) -> None:
        super().__init__()
        self.contraction = SymmetricContraction(
            a_irreps, node_irreps_out, correlation, num_elements, reduced_cg, element_rank, int8
        )
        self.update = Update(
            node_irreps_in, node_irreps_out, num_elements, residual, element_rank, int8
        )

    def forward(
        self, a_features: torch.Tensor, node_feats: torch.Tensor, node_attrs: torch.Tensor
    ) -> torch.Tensor:
        message = self.contraction(a_features, node_attrs)  # m_i: [n, node_irreps_out.dim]
        return self.update(message, node_feats, node_attrs)
