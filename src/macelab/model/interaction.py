"""The interaction: the atomic basis A of Eq. 8-9 (one message-passing step).

For receiving atom ``i`` and its neighbours ``j`` within ``r_max`` (Eq. 8, with the linear
mixing of channels that follows it):

    A_{i,kl_3m_3} = 1/avg_num_neighbors * sum_k' W_{kk'l_3}
                    sum_{j} sum_{l_1m_1,l_2m_2} C^{l_3m_3}_{l_1m_1,l_2m_2}
                    R_{k'l_1l_2l_3}(r_ji) Y_{l_1m_1}(r_ji / |r_ji|) (W' h_j)_{k'l_2m_2}

Stages, in order (each a named submodule):

- ``linear_up``: ``W' h_j``, mixes channels, keeps irreps (``o3.Linear``).
- ``radial_mlp``: ``R(r_ji)``, one weight per channel and path per edge.
- ``tensor_product``: the channel-wise ("uvu") tensor product of ``Y(r_ji)`` with the
  sender's features, weighted by ``R``; e3nn's ``o3.TensorProduct``. Output irreps
  ``irreps_mid``: one block per path (:func:`macelab.model.irreps.channelwise_instructions`).
- ``aggregation``: sum over the neighbours j of each receiver, over ``avg_num_neighbors``.
- ``linear``: ``W``, mixes channels and merges the paths into the irreps of A,
  ``channels x (0e + 1o + ... + max_ell)``.
- ``element_mixing`` (only in the "plain" first layer of older MACE models, mace-torch's
  ``RealAgnosticInteractionBlock``): an element-dependent linear map of A (``o3``
  ``FullyConnectedTensorProduct`` with the one-hot attributes). The default "residual"
  variant (``RealAgnosticResidualInteractionBlock``) instead has an element-dependent
  self-connection in the update (:class:`macelab.model.product.Update`).

The output is A in channel layout, ``[n_atoms, channels, (max_ell+1)**2]``.

Memory. e3nn's tensor product keeps per-edge intermediates for the backward pass (about
0.4 MiB per edge in float32 for the paper's model), which limits energy + forces to a few
thousand atoms on one GPU. ``edge_chunk`` (a runtime setting, not a hyperparameter: the
function is the same) computes the messages and their neighbour sum in chunks of that many
edges, each under activation checkpointing: only the chunk's inputs are kept, and its
intermediates are recomputed in the backward pass. Memory per edge falls to the inputs of the
tensor product; the cost is one more tensor-product forward per backward.

An implementation subclass may compute :meth:`Interaction.convolution` (the weighted tensor
products and their neighbour sum) differently: ``macelab.kernels.fused_interaction``'s
``FusedInteraction`` does it in generated Triton kernels, where no per-edge messages exist,
forward or backward, so ``edge_chunk`` is not used there. It is put in place by the runtime
plan (:mod:`macelab.runtime`, ``fused_convolution``); this file does not know it.
"""

from __future__ import annotations

import itertools
import logging
from typing import Any

import torch
from e3nn import o3
from torch.utils.checkpoint import checkpoint, set_checkpoint_early_stop

from macelab.model.irreps import channelwise_tensor_product, flat_to_channels
from macelab.model.radial import radial_mlp


class NeighbourSum(torch.nn.Module):
    """The "aggregation" stage: ``sum_{j in N(i)} m_ji / avg_num_neighbors``."""

    def __init__(self, avg_num_neighbors: float) -> None:
        super().__init__()
        self.avg_num_neighbors = float(avg_num_neighbors)

    def forward(
        self,
        messages: torch.Tensor,  # [n_edges, d]
        receiver: torch.Tensor,  # [n_edges]
        num_nodes: int,
    ) -> torch.Tensor:  # [n_nodes, d]
        summed = messages.new_zeros(num_nodes, messages.shape[1]).index_add(0, receiver, messages)
        return summed / self.avg_num_neighbors

    def extra_repr(self) -> str:
        return f"avg_num_neighbors={self.avg_num_neighbors}"


def warn_unused_edge_chunk(interactions: Any) -> None:
    """Log once when ``edge_chunk`` is set where the fused convolution ignores it (it writes
    no per-edge messages, so there is nothing to chunk)."""
    if any(m.edge_chunk is not None and m.conv_backend == "triton" for m in interactions):
        logging.getLogger(__name__).warning(
            "runtime.edge_chunk is not used with the fused convolution, which keeps no "
            "per-edge messages; set runtime.fused_convolution=false to chunk the e3nn "
            "convolution instead"
        )


def shared_conv_graph(interactions: Any, edge_index: torch.Tensor, num_nodes: int) -> Any:
    """The edge orders that an implementation of the convolution needs (its
    :meth:`Interaction.conv_graph`), built once per forward for all interactions that use
    them; None if none does."""
    for interaction in interactions:
        graph = interaction.conv_graph(edge_index, num_nodes)
        if graph is not None:
            return graph
    return None


class Interaction(torch.nn.Module):
    """Eq. 8-9: node features ``h`` (irreps ``node_irreps``) -> atomic basis A ``[n, C, K]``.

    Args:
        node_irreps: irreps of the input node features h.
        edge_irreps: irreps of the spherical harmonics, ``0e + 1o + ... + max_ell``.
        a_irreps: irreps of A, ``C x (0e + 1o + ... + max_ell)``.
        num_bessel: size of the radial basis (input of the radial MLP).
        radial_hidden: hidden sizes of the radial MLP.
        avg_num_neighbors: normalisation of the neighbour sum.
        num_elements: size of the element table (for ``element_mixing``).
        element_mixing: add the plain variant's element-dependent linear map of A.
    """

    # how the convolution is computed: "e3nn" here; implementation subclasses name theirs
    conv_backend = "e3nn"

    def __init__(
        self,
        node_irreps: o3.Irreps,
        edge_irreps: o3.Irreps,
        a_irreps: o3.Irreps,
        num_bessel: int,
        radial_hidden: list[int],
        avg_num_neighbors: float,
        num_elements: int,
        element_mixing: bool = False,
    ) -> None:
        super().__init__()
        self.node_irreps = o3.Irreps(node_irreps)
        self.edge_irreps = o3.Irreps(edge_irreps)
        self.a_irreps = o3.Irreps(a_irreps)
        self.linear_up = o3.Linear(self.node_irreps, self.node_irreps)
        self.tensor_product = channelwise_tensor_product(
            self.node_irreps, self.edge_irreps, self.a_irreps
        )
        self.irreps_mid = self.tensor_product.irreps_out
        num_weights = self.tensor_product.weight_numel
        self.radial_mlp = radial_mlp(num_bessel, list(radial_hidden), num_weights)
        self.aggregation = NeighbourSum(avg_num_neighbors)
        self.linear = o3.Linear(self.irreps_mid, self.a_irreps)
        self.edge_chunk = None  # int or None: see the module docstring; set_edge_chunk
        self.element_mixing: o3.FullyConnectedTensorProduct | None = None
        if element_mixing:
            attr_irreps = o3.Irreps([(num_elements, (0, 1))])
            self.element_mixing = o3.FullyConnectedTensorProduct(
                self.a_irreps, attr_irreps, self.a_irreps
            )

    def forward(
        self,
        node_feats: torch.Tensor,  # [n, node_irreps.dim]
        node_attrs: torch.Tensor,  # [n, n_elements] one-hot
        edge_sh: torch.Tensor,  # [n_edges, (max_ell+1)**2]
        edge_radial: torch.Tensor,  # [n_edges, num_bessel]
        edge_index: torch.Tensor,  # [2, n_edges]
        envelope: torch.Tensor | None = None,  # [n_edges, 1], only if not applied to the basis
        conv_graph: Any = None,  # the fused convolution's edge orders (shared_conv_graph)
    ) -> torch.Tensor:
        node_feats = self.linear_up(node_feats)  # [n, node_irreps.dim]
        a = self.convolution(node_feats, edge_sh, edge_radial, edge_index, envelope, conv_graph)
        a = self.linear(a)  # [n, a_irreps.dim]
        if self.element_mixing is not None:
            a = self.element_mixing(a, node_attrs)
        return flat_to_channels(a, self.a_irreps)  # [n, C, (max_ell+1)**2]

    def conv_graph(self, edge_index: torch.Tensor, num_nodes: int) -> Any:
        """Edge orders this implementation needs, shared by all interactions of one forward
        (:func:`shared_conv_graph`); the reference needs none."""
        return None

    def convolution(
        self,
        node_feats: torch.Tensor,  # [n, node_irreps.dim], after linear_up
        edge_sh: torch.Tensor,  # [e, (max_ell+1)**2]
        edge_radial: torch.Tensor,  # [e, num_bessel]
        edge_index: torch.Tensor,  # [2, e]
        envelope: torch.Tensor | None = None,  # [e, 1]
        conv_graph: Any = None,  # unused by the reference
    ) -> torch.Tensor:  # [n, irreps_mid.dim]
        """Eq. 8's sum over neighbours of the radially weighted tensor products (before
        ``linear``): at once, or in chunks of ``edge_chunk`` edges."""
        sender, receiver = edge_index[0], edge_index[1]
        chunked = self.edge_chunk is not None and edge_sh.shape[0] > self.edge_chunk
        if chunked:
            # edges grouped by receiving atom before the radial weights are made, so that
            # the chunks below are plain splits (no second [n_edges, weight_numel] copy)
            order = torch.argsort(receiver, stable=True)
            sender, receiver = sender[order], receiver[order]
            edge_sh, edge_radial = edge_sh[order], edge_radial[order]
            envelope = None if envelope is None else envelope[order]
        weights = self.radial_weights(edge_radial, envelope)  # [e, weight_numel]
        if not chunked:
            return self._neighbour_sum(node_feats, edge_sh, weights, sender, receiver)
        # the same sum, chunk by chunk, intermediates recomputed in the backward
        return self._chunked_neighbour_sum(node_feats, edge_sh, weights, sender, receiver)

    def radial_weights(
        self,
        edge_radial: torch.Tensor,  # [e, num_bessel]
        envelope: torch.Tensor | None,  # [e, 1]
    ) -> torch.Tensor:  # [e, weight_numel]
        """``R(r_ji)``, times the envelope where it was not applied to the basis."""
        weights = self.radial_mlp(edge_radial)
        return weights if envelope is None else weights * envelope

    def _neighbour_sum(
        self,
        node_feats: torch.Tensor,  # [n, node_irreps.dim]
        edge_sh: torch.Tensor,  # [e, (max_ell+1)**2]
        weights: torch.Tensor,  # [e, weight_numel]
        sender: torch.Tensor,  # [e]
        receiver: torch.Tensor,  # [e]
    ) -> torch.Tensor:  # [n, irreps_mid.dim]
        """The weighted tensor products of all edges, summed over each receiver's neighbours."""
        messages = self._messages(node_feats, edge_sh, weights, sender)  # [e, mid]
        return self.aggregation(messages, receiver, node_feats.shape[0])

    def _chunked_neighbour_sum(
        self,
        node_feats: torch.Tensor,  # [n, node_irreps.dim]
        edge_sh: torch.Tensor,  # [E, (max_ell+1)**2]
        weights: torch.Tensor,  # [E, weight_numel]
        sender: torch.Tensor,  # [E]
        receiver: torch.Tensor,  # [E], sorted
    ) -> torch.Tensor:  # [n, irreps_mid.dim]
        """:meth:`_neighbour_sum` over chunks of about ``edge_chunk`` edges (given sorted by
        receiving atom).

        Chunks are ranges of receiving atoms, so that each atom's sum is complete in one
        chunk (the aggregation stage, and its precision, are unchanged) and the chunks'
        sums are concatenated, not added. Each chunk's tensor products are checkpointed
        (recomputed in the backward). Only the gradient of the sender features is
        full-size per chunk ([n_atoms, node_irreps.dim]): larger chunks make that cheaper.
        """
        assert self.edge_chunk is not None
        num_nodes = node_feats.shape[0]
        ends = torch.cumsum(torch.bincount(receiver, minlength=num_nodes), 0)  # [n]
        targets = torch.arange(self.edge_chunk, edge_sh.shape[0], self.edge_chunk)
        cuts = torch.searchsorted(ends, targets.to(ends.device), right=True)
        nodes = [0, *sorted(set(cuts.tolist()) - {0, num_nodes}), num_nodes]  # host sync
        edge_ends = [0, *ends[[b - 1 for b in nodes[1:]]].tolist()]
        sizes = [b - a for a, b in itertools.pairwise(edge_ends)]
        # split, not sliced: the backward of a split is one concatenation, where slicing
        # each chunk out of the full tensors costs a full-size gradient per chunk
        chunks = zip(
            torch.split(edge_sh, sizes),
            torch.split(weights, sizes),
            torch.split(sender, sizes),
            torch.split(receiver, sizes),
            strict=True,
        )
        parts = []
        for k, (sh_k, weights_k, sender_k, receiver_k) in enumerate(chunks):
            # no early stop: its exception cannot pass through e3nn's TorchScript code
            with set_checkpoint_early_stop(False):
                messages = checkpoint(
                    self._messages, node_feats, sh_k, weights_k, sender_k, use_reentrant=False
                )  # [e_k, mid]
            size = nodes[k + 1] - nodes[k]
            parts.append(self.aggregation(messages, receiver_k - nodes[k], size))
        return torch.cat(parts)

    def _messages(
        self,
        node_feats: torch.Tensor,  # [n, node_irreps.dim]
        edge_sh: torch.Tensor,  # [e, (max_ell+1)**2]
        weights: torch.Tensor,  # [e, weight_numel]
        sender: torch.Tensor,  # [e]
    ) -> torch.Tensor:  # [e, irreps_mid.dim]
        """The weighted tensor products of the edges (all, or one chunk)."""
        return self.tensor_product(node_feats[sender], edge_sh, weights)
