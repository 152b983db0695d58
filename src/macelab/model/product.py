"""The product basis and the update: Eq. 10-12.

``contraction`` (Eq. 10-11, :class:`~macelab.model.symmetric_contraction.SymmetricContraction`)
turns the atomic basis A into the many-body message ``m_i`` with irreps of the next hidden
features; ``update`` (Eq. 12) is

    h_i^(t+1) = W m_i^(t) + [residual]  sum_k' W_{z_i k k' L} h_{i,k'LM}^(t)

the second term an element-dependent self-connection of the previous features (an e3nn
``FullyConnectedTensorProduct`` of h with the one-hot node attributes), present in the
residual layers (mace-torch's ``RealAgnosticResidualInteractionBlock``, its default) and
absent from the plain first layer of older models.
"""

from __future__ import annotations

import torch
from e3nn import o3

from macelab.model.symmetric_contraction import SymmetricContraction


class Update(torch.nn.Module):
    """Eq. 12: ``linear(m) [+ self_connection(h, onehot(z))]``.

    Args:
        node_irreps_in: irreps of h^(t) (input of the self-connection).
        node_irreps_out: irreps of m and of h^(t+1).
        num_elements: size of the element table.
        residual: include the element-dependent self-connection.
    """

    def __init__(
        self,
        node_irreps_in: o3.Irreps,
        node_irreps_out: o3.Irreps,
        num_elements: int,
        residual: bool = True,
    ) -> None:
        super().__init__()
        self.linear = o3.Linear(node_irreps_out, node_irreps_out)
        self.self_connection: o3.FullyConnectedTensorProduct | None = None
        if residual:
            attr_irreps = o3.Irreps([(num_elements, (0, 1))])
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
        if self.self_connection is not None:
            updated = updated + self.self_connection(node_feats, node_attrs)
        return updated


class ProductBasis(torch.nn.Module):
    """One layer's Eq. 10-12: A ``[n, C, K]`` and h^(t) -> h^(t+1).

    Submodules ``contraction`` (Eq. 10-11) and ``update`` (Eq. 12).
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
    ) -> None:
        super().__init__()
        self.contraction = SymmetricContraction(
            a_irreps, node_irreps_out, correlation, num_elements, reduced_cg, element_rank
        )
        self.update = Update(node_irreps_in, node_irreps_out, num_elements, residual)

    def forward(
        self, a_features: torch.Tensor, node_feats: torch.Tensor, node_attrs: torch.Tensor
    ) -> torch.Tensor:
        message = self.contraction(a_features, node_attrs)  # m_i: [n, node_irreps_out.dim]
        return self.update(message, node_feats, node_attrs)
