"""MACE (Batatia et al., NeurIPS 2022, arXiv:2206.07697) assembled from its stages.

One forward pass, with the paper's equations and the submodule that computes each:

==========================  =====================================  ========================
step                        paper                                  submodule
==========================  =====================================  ========================
element index, one-hot      node attributes                        ``elements``
edge vectors and lengths    r_ji                                   ``edges``
spherical harmonics         Y_lm(r_ji)                             ``spherical_harmonics``
Bessel basis x envelope     radial basis (Eq. 8)                   ``radial``
(ZBL pair repulsion)        screened nuclear repulsion (optional)  ``pair_repulsion``
node embedding              h^(0) = W onehot(z)                    ``embedding``
atomic basis A              Eq. 8-9                                ``interactions[t]``
product basis, message m    Eq. 10-11                              ``products[t].contraction``
update h^(t+1)              Eq. 12                                 ``products[t].update``
per-atom energies           Eq. 13                                 ``readouts[t]``
E0, scale, shift            reference energies, ScaleShiftMACE     ``atomic_energies``,
                                                                   ``scale_shift``
total energy                sum over atoms (E0 sums in float64)    ``energy_sum``
forces, stress              -dE/dr, (1/V) dE/deps                  :mod:`.outputs`
==========================  =====================================  ========================

Inside ``interactions[t]``: ``linear_up``, ``radial_mlp``, ``tensor_product``,
``aggregation``, ``linear`` (and ``element_mixing`` in a plain first layer). A precision
policy or a fused kernel addresses these by name (``docs/model.md`` lists them).

Irreps of layer ``t`` (``C`` = channels): input ``C x 0e`` for t = 0, else
``C x (0e + 1o + ... + max_L)``; A is ``C x (0e + 1o + ... + max_ell)``; the output of the
last layer keeps only ``C x 0e`` (only scalars are read out).

The model runs in the dtype of its parameters: positions, cell and shifts (float64 in the
graph) are cast to it on entry.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from e3nn import o3

from macelab._compat import quietly_built
from macelab.model.edges import EdgeGeometry, spherical_harmonics
from macelab.model.embedding import ElementTable, NodeEmbedding
from macelab.model.energy import AtomicEnergies, EnergySum, ScaleShift
from macelab.model.interaction import Interaction, shared_conv_graph, warn_unused_edge_chunk
from macelab.model.irreps import a_irreps, hidden_irreps, scalar_irreps, sh_irreps
from macelab.model.outputs import forces_and_stress, symmetric_displacement
from macelab.model.product import ProductBasis
from macelab.model.radial import RadialEmbedding
from macelab.model.readout import GATES, LinearReadout, NonLinearReadout
from macelab.model.repulsion import ZBLRepulsion

INTERACTION_FIRST = ("residual", "plain")
# Element tables: one row per element, factorised through embedding_rank factors, or
# fake-quantised to 8 bits per element (docs/experiments.md, "Compressed species embeddings").
EMBEDDINGS = ("full", "low_rank", "int8")


class MACE(torch.nn.Module):
    """The MACE interatomic potential.

    Args:
        atomic_numbers: the element table (e.g. ``[1, 6, 7, 8]``).
        atomic_energies: E0 per element of ``atomic_numbers``, eV.
        avg_num_neighbors: mean number of neighbours within ``r_max`` in the training data.
        channels: number of channels C of every feature.
        max_L: highest degree L of the hidden node features.
        max_ell: highest degree of the spherical harmonics (and of A).
        correlation: correlation order N of the product basis (1-4), one for all layers or a
            list with one per interaction; messages have body order N + 1.
        num_interactions: number of message-passing layers.
        r_max: cutoff radius, Å.
        num_bessel: number of Bessel functions of the radial basis.
        num_polynomial_cutoff: order p of the polynomial envelope.
        radial_mlp: hidden sizes of the radial MLP.
        readout_mlp: hidden size of the last layer's readout MLP.
        gate: activation of the readout MLP (``silu``, ``tanh``, ``abs``, ``none``).
        interaction_first: ``residual`` (self-connection in the first update too, mace-torch's
            default) or ``plain`` (element mixing of A instead, older mace-torch models).
        scale_shift: apply ``scale * E_inter + shift`` per atom (mace-torch's
            ``ScaleShiftMACE``); false is mace-torch's plain ``MACE``.
        scale: the per-atom scale of the interaction energy, eV.
        shift: the per-atom shift of the interaction energy, eV.
        scale_shift_trainable: make scale and shift learnable parameters.
        reduced_cg: product basis in the reduced symmetric basis (fewer weights, same
            function class) instead of one path per coupling tree (mace-torch's default).
        apply_cutoff: multiply the envelope into the radial basis before the radial MLP
            (mace-torch's default); false multiplies it into the MLP's output.
        embedding: the element tables (node embedding, product basis weights ``W_z``,
            self-connection): ``full``, ``low_rank`` (factorised through ``embedding_rank``
            learnable element factors) or ``int8`` (full tables fake-quantised to 8 bits per
            element, for quantisation-aware training).
        embedding_rank: the rank r of ``low_rank`` tables.
        pair_repulsion: add the ZBL screened nuclear repulsion of every pair within the
            sum of covalent radii to the per-atom energies (:mod:`macelab.model.repulsion`;
            mace-torch's ``pair_repulsion=True``, the MACE-MP-0b models).
        distance_transform: evaluate the Bessel basis at a transformed distance ``T(r)``:
            ``none``, ``agnesi`` or ``soft`` (:mod:`macelab.model.radial`; mace-torch's
            ``distance_transform="Agnesi"`` / ``"Soft"``).
    """

    @quietly_built
    def __init__(
        self,
        *,
        atomic_numbers: Sequence[int],
        atomic_energies: Sequence[float],
        avg_num_neighbors: float,
        channels: int = 128,
        max_L: int = 1,
        max_ell: int = 3,
        correlation: int | Sequence[int] = 3,
        num_interactions: int = 2,
        r_max: float = 5.0,
        num_bessel: int = 8,
        num_polynomial_cutoff: int = 5,
        radial_mlp: Sequence[int] = (64, 64, 64),
        readout_mlp: int = 16,
        gate: str | None = "silu",
        interaction_first: str = "residual",
        scale_shift: bool = True,
        scale: float = 1.0,
        shift: float = 0.0,
        scale_shift_trainable: bool = False,
        reduced_cg: bool = False,
        apply_cutoff: bool = True,
        embedding: str = "full",
        embedding_rank: int | None = None,
        pair_repulsion: bool = False,
        distance_transform: str = "none",
    ) -> None:
        super().__init__()
        correlations = (
            [int(correlation)] * num_interactions
            if isinstance(correlation, int)
            else [int(c) for c in correlation]
        )
        _validate(
            atomic_numbers=atomic_numbers,
            atomic_energies=atomic_energies,
            correlations=correlations,
            num_interactions=num_interactions,
            interaction_first=interaction_first,
            gate=gate,
            channels=channels,
            max_L=max_L,
            max_ell=max_ell,
            avg_num_neighbors=avg_num_neighbors,
        )
        self.hyperparameters: dict[str, Any] = {
            "atomic_numbers": [int(z) for z in atomic_numbers],
            "atomic_energies": [float(e) for e in atomic_energies],
            "avg_num_neighbors": float(avg_num_neighbors),
            "channels": int(channels),
            "max_L": int(max_L),
            "max_ell": int(max_ell),
            "correlation": correlations,
            "num_interactions": int(num_interactions),
            "r_max": float(r_max),
            "num_bessel": int(num_bessel),
            "num_polynomial_cutoff": int(num_polynomial_cutoff),
            "radial_mlp": [int(h) for h in radial_mlp],
            "readout_mlp": int(readout_mlp),
            "gate": "none" if gate is None else str(gate).lower(),
            "interaction_first": interaction_first,
            "scale_shift": bool(scale_shift),
            "scale": float(scale),
            "shift": float(shift),
            "scale_shift_trainable": bool(scale_shift_trainable),
            "reduced_cg": bool(reduced_cg),
            "apply_cutoff": bool(apply_cutoff),
            "embedding": str(embedding),
            "embedding_rank": None if embedding_rank is None else int(embedding_rank),
            "pair_repulsion": bool(pair_repulsion),
            "distance_transform": str(distance_transform).lower(),
        }
        if embedding not in EMBEDDINGS:
            raise ValueError(f"embedding must be one of {', '.join(EMBEDDINGS)}, got {embedding!r}")
        if embedding == "low_rank" and not (embedding_rank and int(embedding_rank) >= 1):
            raise ValueError("embedding=low_rank needs embedding_rank >= 1")
        if embedding == "int8" and embedding_rank is not None:
            raise ValueError(
                f"embedding=int8 quantises the full element tables and takes no rank, but "
                f"embedding_rank={embedding_rank}; set embedding_rank=null (or use "
                "embedding=low_rank for factorised tables)"
            )
        rank = int(embedding_rank) if embedding == "low_rank" else None
        int8 = embedding == "int8"
        num_elements = len(atomic_numbers)
        self.r_max = float(r_max)
        self.num_interactions = int(num_interactions)

        # Inputs: elements, geometry, radial basis, embedding.
        self.elements = ElementTable(atomic_numbers)
        self.edges = EdgeGeometry()
        self.spherical_harmonics = spherical_harmonics(max_ell)
        self.radial = RadialEmbedding(
            r_max,
            num_bessel,
            num_polynomial_cutoff,
            apply_cutoff,
            self.hyperparameters["distance_transform"],
        )
        self.pair_repulsion = ZBLRepulsion(num_polynomial_cutoff) if pair_repulsion else None
        self.embedding = NodeEmbedding(num_elements, channels, rank, int8)

        # Layers: interaction (Eq. 8-9), product basis + update (Eq. 10-12), readout (Eq. 13).
        edge_irreps = sh_irreps(max_ell)
        features_a = a_irreps(channels, max_ell)
        self.interactions = torch.nn.ModuleList()
        self.products = torch.nn.ModuleList()
        self.readouts = torch.nn.ModuleList()
        node_in = scalar_irreps(channels)
        for t in range(num_interactions):
            last = t == num_interactions - 1
            node_out = scalar_irreps(channels) if last else hidden_irreps(channels, max_L)
            plain = t == 0 and interaction_first == "plain"
            self.interactions.append(
                Interaction(
                    node_in,
                    edge_irreps,
                    features_a,
                    num_bessel,
                    list(radial_mlp),
                    avg_num_neighbors,
                    num_elements,
                    element_mixing=plain,
                )
            )
            self.products.append(
                ProductBasis(
                    features_a,
                    node_in,
                    node_out,
                    correlations[t],
                    num_elements,
                    residual=not plain,
                    reduced_cg=reduced_cg,
                    element_rank=rank,
                    int8=int8,
                )
            )
            if last and num_interactions > 1:
                self.readouts.append(NonLinearReadout(node_out, readout_mlp, gate))
            else:
                self.readouts.append(LinearReadout(node_out))
            node_in = node_out

        # Energies.
        self.atomic_energies = AtomicEnergies(atomic_energies)
        self.scale_shift = (
            ScaleShift(scale, shift, scale_shift_trainable)
            if scale_shift
            else ScaleShift(1.0, 0.0, trainable=False)
        )
        self.energy_sum = EnergySum()

    # ------------------------------------------------------------------ properties
    @property
    def atomic_numbers(self) -> list[int]:
        """The element table."""
        return self.elements.atomic_numbers.tolist()

    @property
    def dtype(self) -> torch.dtype:
        """The dtype the model computes in: that of its parameters."""
        return self.embedding.linear.weight.dtype

    @property
    def hidden_irreps(self) -> o3.Irreps:
        return hidden_irreps(self.hyperparameters["channels"], self.hyperparameters["max_L"])

    def set_edge_chunk(self, edges: int | None) -> None:
        """Compute each interaction's messages in chunks of ``edges`` edges under
        activation checkpointing (None: all at once), trading one more tensor-product
        forward per backward for memory (:mod:`macelab.model.interaction`)."""
        if edges is not None and int(edges) < 1:
            raise ValueError(f"edge_chunk must be a positive number of edges, got {edges}")
        for interaction in self.interactions:
            interaction.edge_chunk = None if edges is None else int(edges)
        warn_unused_edge_chunk(self.interactions)

    def set_correlation(self, order: int | None, zero_inactive: bool = False) -> None:
        """Progressive correlation order: compute the product basis only up to ``order``
        in every layer (each layer's own order at most; None: all). With ``zero_inactive``
        the skipped orders' weights are set to zero, so that raising the order later changes
        no prediction (``macelab.training.progressive``)."""
        for product in self.products:
            product.contraction.set_correlation(order)
            if zero_inactive:
                product.contraction.zero_inactive_weights()

    @property
    def active_correlation(self) -> list[int]:
        """The highest order computed in each layer."""
        return [
            max(c.active_correlation for c in p.contraction.contractions) for p in self.products
        ]

    # --------------------------------------------------------------------- forward
    def forward(
        self,
        graph: Any,
        compute_forces: bool = True,
        compute_stress: bool = False,
        training: bool = False,
    ) -> dict[str, torch.Tensor | None]:
        """Energies (and forces, stress) of a graph or a batch of graphs.

        Args:
            graph: a :class:`macelab.data.graph.AtomicGraph`, a torch-geometric batch of
                them, or a mapping with the same keys (``positions``, ``atomic_numbers``,
                ``edge_index``, ``unit_shifts``, ``cell``, optionally ``batch``, ``ptr``).
            compute_forces: return ``forces = -dE/dr``.
            compute_stress: also return ``stress`` and ``virials`` (zero stress for graphs
                without a cell volume).
            training: keep the graph of the derivatives (``create_graph``) so that a loss
                on forces or stress can be backpropagated.

        Returns:
            ``energy`` [n_graphs], ``node_energy`` [n_atoms] (E0 + interaction energy),
            ``interaction_energy`` [n_graphs], ``forces`` [n_atoms, 3] or None, ``stress``
            and ``virials`` [n_graphs, 3, 3] or None. Units eV, Å.
        """
        fields = _graph_fields(graph)
        dtype = self.dtype
        need_derivatives = compute_forces or compute_stress
        with torch.set_grad_enabled(torch.is_grad_enabled() or need_derivatives):
            positions = fields["positions"].to(dtype)
            if need_derivatives and not positions.requires_grad:
                positions = positions.detach().clone().requires_grad_(True)
            cell = fields["cell"].to(dtype).reshape(-1, 3, 3)
            batch, num_graphs = fields["batch"], fields["num_graphs"]
            displacement = None
            strained_positions, strained_cell = positions, cell
            if compute_stress:
                strained_positions, strained_cell, displacement = symmetric_displacement(
                    positions, cell, batch, num_graphs
                )
            output = self._energies(
                strained_positions,
                fields["atomic_numbers"],
                fields["edge_index"],
                fields["unit_shifts"].to(dtype),
                strained_cell,
                batch,
                num_graphs,
            )
            output.update({"forces": None, "stress": None, "virials": None})
            if need_derivatives:
                derivatives = forces_and_stress(
                    output["energy"], positions, displacement, cell, training
                )
                if compute_forces:
                    output["forces"] = derivatives["forces"]
                output["stress"] = derivatives["stress"]
                output["virials"] = derivatives["virials"]
        return output

    def _energies(
        self,
        positions: torch.Tensor,
        atomic_numbers: torch.Tensor,
        edge_index: torch.Tensor,
        unit_shifts: torch.Tensor,
        cell: torch.Tensor,
        batch: torch.Tensor,
        num_graphs: int,
    ) -> dict[str, torch.Tensor | None]:
        element_index = self.elements(atomic_numbers)  # [n]
        elements = torch.arange(self.elements.num_elements, device=element_index.device)
        node_attrs = (element_index[:, None] == elements).to(positions.dtype)  # [n, n_elements]
        vectors, lengths = self.edges(positions, edge_index, unit_shifts, cell, batch)
        edge_sh = self.spherical_harmonics(vectors)  # [n_edges, (max_ell+1)**2]
        edge_radial, envelope = self.radial(lengths, atomic_numbers, edge_index)
        # edge_radial: [n_edges, num_bessel], envelope: [n_edges, 1]
        if self.radial.apply_cutoff:
            envelope = None
        node_feats = self.embedding(node_attrs)  # h^(0): [n, C]
        conv_graph = shared_conv_graph(self.interactions, edge_index, positions.shape[0])
        layer_energies = []  # per-atom energies [n] of the ZBL term (if any) and each layer
        if self.pair_repulsion is not None:
            layer_energies.append(self.pair_repulsion(lengths, atomic_numbers, edge_index))
        for interaction, product, readout in zip(
            self.interactions, self.products, self.readouts, strict=True
        ):
            a = interaction(
                node_feats, node_attrs, edge_sh, edge_radial, edge_index, envelope, conv_graph
            )
            node_feats = product(a, node_feats, node_attrs)  # h^(t+1)
            layer_energies.append(readout(node_feats))  # [n]
        node_interaction = self.scale_shift(torch.stack(layer_energies, dim=0).sum(dim=0))
        interaction_energy = self.energy_sum(node_interaction, batch, num_graphs)  # [n_graphs]
        # E0 and the totals in float64 whatever the model's dtype (AtomicEnergies says why)
        node_e0 = self.atomic_energies(element_index)  # [n], float64
        reference = node_e0.new_zeros(num_graphs).index_add(0, batch, node_e0)  # [n_graphs]
        return {
            "energy": reference + interaction_energy.to(torch.float64),
            "node_energy": node_e0 + node_interaction.to(torch.float64),
            "interaction_energy": interaction_energy,
        }

    def extra_repr(self) -> str:
        h = self.hyperparameters
        return (
            f"channels={h['channels']}, max_L={h['max_L']}, max_ell={h['max_ell']}, "
            f"correlation={h['correlation']}, r_max={h['r_max']}"
        )


def _graph_fields(graph: Any) -> dict[str, Any]:
    """The inputs the model reads, from a graph, a batch or a mapping."""

    def get(key: str) -> Any:
        if isinstance(graph, Mapping):
            return graph.get(key)
        return getattr(graph, key, None)

    positions = get("positions")
    if positions is None:
        raise KeyError("the graph has no 'positions' (see macelab.data.graph for its fields)")
    batch = get("batch")
    if batch is None:
        batch = torch.zeros(positions.shape[0], dtype=torch.int64, device=positions.device)
        num_graphs = 1
    else:
        ptr = get("ptr")
        # ptr.numel() without int(): a symbolic size stays symbolic when traced (export)
        num_graphs = ptr.numel() - 1 if ptr is not None else int(batch.max()) + 1
    return {
        "positions": positions,
        "atomic_numbers": get("atomic_numbers"),
        "edge_index": get("edge_index"),
        "unit_shifts": get("unit_shifts"),
        "cell": get("cell"),
        "batch": batch,
        "num_graphs": num_graphs,
    }


def _validate(
    *,
    atomic_numbers: Sequence[int],
    atomic_energies: Sequence[float],
    correlations: list[int],
    num_interactions: int,
    interaction_first: str,
    gate: str | None,
    channels: int,
    max_L: int,
    max_ell: int,
    avg_num_neighbors: float,
) -> None:
    """Raise ``ValueError`` for hyperparameters that cannot build a MACE."""
    if len(atomic_energies) != len(atomic_numbers):
        raise ValueError(
            f"atomic_energies has {len(atomic_energies)} values for "
            f"{len(atomic_numbers)} elements {list(atomic_numbers)}; give one E0 per element"
        )
    if num_interactions < 1:
        raise ValueError(f"num_interactions must be >= 1, got {num_interactions}")
    if len(correlations) != num_interactions:
        raise ValueError(
            f"correlation lists {len(correlations)} orders for {num_interactions} interactions"
        )
    if any(not 1 <= c <= 4 for c in correlations):
        raise ValueError(f"correlation orders must be 1-4, got {correlations}")
    if interaction_first not in INTERACTION_FIRST:
        raise ValueError(
            f"interaction_first must be one of {INTERACTION_FIRST}, got {interaction_first!r}"
        )
    if ("none" if gate is None else str(gate).lower()) not in GATES:
        raise ValueError(f"unknown gate {gate!r}; choose one of {', '.join(GATES)}")
    if channels < 1 or max_L < 0 or max_ell < 1:
        raise ValueError(
            f"need channels >= 1, max_L >= 0 and max_ell >= 1, got {channels}, {max_L}, {max_ell}"
        )
    if not avg_num_neighbors > 0:
        raise ValueError(f"avg_num_neighbors must be positive, got {avg_num_neighbors}")
