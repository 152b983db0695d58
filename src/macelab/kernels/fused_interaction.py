"""The interaction with its convolution fused: Eq. 8's tensor products and neighbour sum in
generated Triton kernels (:mod:`macelab.kernels.triton_conv`), never writing per-edge
messages. An implementation subclass of :class:`~macelab.model.interaction.Interaction`
with the same parameters; the runtime plan swaps it in (``fused_convolution``)."""

from __future__ import annotations

from typing import Any

import torch

from macelab.kernels.conv_plan import conv_plan
from macelab.kernels.triton_conv import ConvGraph, fused_neighbour_sum
from macelab.model.interaction import Interaction
from macelab.model.stages import stage_precision


class FusedInteraction(Interaction):
    """:class:`Interaction` whose :meth:`convolution` is one fused Triton kernel."""

    conv_backend = "triton"

    def conv_graph(self, edge_index: torch.Tensor, num_nodes: int) -> ConvGraph:
        """The edge orders of the fused kernels (built once per forward for all layers)."""
        return ConvGraph.build(edge_index[0], edge_index[1], num_nodes)

    def convolution(
        self,
        node_feats: torch.Tensor,  # [n, node_irreps.dim], after linear_up
        edge_sh: torch.Tensor,  # [e, (max_ell+1)**2]
        edge_radial: torch.Tensor,  # [e, num_bessel]
        edge_index: torch.Tensor,  # [2, e]
        envelope: torch.Tensor | None = None,  # [e, 1]
        conv_graph: Any = None,  # ConvGraph of the edges (built here if None)
    ) -> torch.Tensor:  # [n, irreps_mid.dim]
        """The reference's sum in one kernel. Under a precision policy the inputs are cast
        to the ``tensor_product`` stage's declared dtype and the result to the
        ``aggregation`` stage's; products and the sum are accumulated in float32 (float64
        for float64 inputs) inside the kernel."""
        weights = self.radial_weights(edge_radial, envelope)  # [e, weight_numel]
        if conv_graph is None:
            conv_graph = self.conv_graph(edge_index, node_feats.shape[0])
        stage = stage_precision(self.tensor_product)
        if stage is not None:
            node_feats, edge_sh, weights = (
                x.to(stage.compute) for x in (node_feats, edge_sh, weights)
            )
        summed = fused_neighbour_sum(
            conv_plan(self.tensor_product), node_feats, edge_sh, weights, conv_graph
        )
        summed = summed / self.aggregation.avg_num_neighbors
        stage = stage_precision(self.aggregation)
        return summed if stage is None else summed.to(stage.compute)
