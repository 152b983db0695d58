"""Fixed-size inputs: a graph padded to a shape bucket, with outputs unchanged.

A CUDA graph replays fixed kernels on fixed buffers, so every call must present the same
shapes. A trajectory's atom count is fixed but its edge count drifts, and batches of
different molecules differ in both. We therefore round sizes up to a *bucket* and fill the
rest with one extra *padding graph* that cannot influence the real ones:

* padding atoms sit at the origin of their own graph (index ``n_graphs``), element = the
  first of the model's table; they have no edges to real atoms;
* padding edges join padding atoms to themselves (dealt out in turn over the padding
  atoms) through one cell shift of a padding cell ``(2 r_max + 1) * I``, so their length is
  ``2 r_max + 1 > r_max``: the radial cutoff makes their weights exactly zero (no NaN from
  zero-length edges, in the energy or in any derivative);
* energies of the padding graph and forces on padding atoms are discarded.

Real atoms and edges keep their order, so messages are summed in the same order and the
real outputs equal the unpadded ones up to the matmul blocking of a larger batch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from macelab.model.mace import _graph_fields


@dataclass(frozen=True)
class Bucket:
    """Padded sizes: atoms and edges include the padding, graphs include the padding graph."""

    atoms: int
    edges: int
    graphs: int


def round_up(n: int, growth: float, minimum: int) -> int:
    """The smallest size ``minimum * growth**k`` (rounded up to a multiple of 8) >= ``n``.

    Geometric buckets bound the waste (``growth - 1`` at most) and the number of distinct
    shapes (and so of captured graphs) a run meets.
    """
    size = max(int(minimum), 8)
    while size < n:
        size = math.ceil(size * growth / 8.0) * 8
    return size


# Most padding edges one padding atom takes. The fused convolution (macelab.kernels) walks
# each atom's edges in one program, so a single padding atom holding every padding edge
# (up to a quarter of a batch's edges) would be one long serial tail; real atoms have
# 20-70 neighbours within 5 Å.
PADDING_DEGREE = 128


def bucket_for(
    num_atoms: int, num_edges: int, num_graphs: int, growth: float = 1.25, minimum: int = 8
) -> Bucket:
    """The bucket of a graph (batch): room for at least one padding atom and edge, and for
    enough padding atoms that none takes more than ``PADDING_DEGREE`` padding edges."""
    edges = round_up(num_edges + 1, growth, minimum)
    padding_atoms = max(1, -(-(edges - num_edges) // PADDING_DEGREE))
    return Bucket(
        atoms=round_up(num_atoms + padding_atoms, growth, minimum),
        edges=edges,
        graphs=num_graphs + 1,
    )


def graph_sizes(graph: Any) -> tuple[int, int, int]:
    """``(atoms, edges, graphs)`` of a graph, a batch or a mapping of fields."""
    fields = _graph_fields(graph)
    return (
        int(fields["positions"].shape[0]),
        int(fields["edge_index"].shape[1]),
        int(fields["num_graphs"]),
    )


def pad_graph(graph: Any, bucket: Bucket, r_max: float, padding_number: int) -> dict[str, Any]:
    """The fields of ``graph`` padded to ``bucket`` (see the module docstring).

    Args:
        graph: a graph, a batch or a mapping of fields (``macelab.data.graph``).
        bucket: sizes at least one atom and one edge larger than the graph's.
        r_max: the model's cutoff; padding edges are longer.
        padding_number: atomic number of the padding atoms (one the model knows).

    Returns:
        A mapping the model takes, with ``ptr`` so that no size is read from the device.
    """
    fields = _graph_fields(graph)
    positions = fields["positions"]
    n_atoms, n_edges, n_graphs = graph_sizes(fields)
    if bucket.atoms <= n_atoms or bucket.edges <= n_edges or bucket.graphs != n_graphs + 1:
        raise ValueError(f"bucket {bucket} cannot hold {n_atoms} atoms, {n_edges} edges")
    device = positions.device
    pad_atoms, pad_edges = bucket.atoms - n_atoms, bucket.edges - n_edges
    # padding edge k is a self-loop of padding atom k mod pad_atoms
    pad_ends = n_atoms + torch.arange(pad_edges, device=device) % pad_atoms
    cell = fields["cell"].reshape(-1, 3, 3)
    padding_cell = (2.0 * r_max + 1.0) * torch.eye(3, dtype=cell.dtype, device=device)
    shift = torch.zeros(pad_edges, 3, dtype=fields["unit_shifts"].dtype, device=device)
    shift[:, 0] = 1.0
    ptr = torch.full((bucket.graphs + 1,), bucket.atoms, dtype=torch.int64, device=device)
    ptr[: n_graphs + 1] = _ptr(graph, fields["batch"], n_graphs)
    return {
        "positions": torch.cat([positions, positions.new_zeros(pad_atoms, 3)]),
        "atomic_numbers": torch.cat(
            [
                fields["atomic_numbers"],
                torch.full((pad_atoms,), padding_number, dtype=torch.int64, device=device),
            ]
        ),
        "edge_index": torch.cat([fields["edge_index"], torch.stack([pad_ends, pad_ends])], 1),
        "unit_shifts": torch.cat([fields["unit_shifts"], shift]),
        "cell": torch.cat([cell, padding_cell[None]]),
        "batch": torch.cat(
            [
                fields["batch"],
                torch.full((pad_atoms,), n_graphs, dtype=torch.int64, device=device),
            ]
        ),
        "ptr": ptr,
        "num_graphs": bucket.graphs,
    }


LABEL_KEYS = ("energy", "forces", "stress", "has_energy", "has_forces", "has_stress", "weight")


class PaddedBatch(dict):
    """A padded batch: a mapping the model takes, whose fields are also attributes (as on
    a torch-geometric batch), so the training loss reads it unchanged."""

    def __getattr__(self, key: str) -> Any:
        try:
            return self[key]
        except KeyError as exc:
            raise AttributeError(key) from exc


def pad_labels(graph: Any, bucket: Bucket) -> dict[str, torch.Tensor]:
    """The training labels of ``graph`` padded to ``bucket``: the padding graph has no
    energy, forces or stress labels (``has_* = False``) and weight 0, so masked losses and
    their gradients equal those of the unpadded batch."""
    get = graph.get if isinstance(graph, dict) else lambda key: getattr(graph, key, None)
    n_atoms, _, n_graphs = graph_sizes(graph)
    extra_graphs, extra_atoms = bucket.graphs - n_graphs, bucket.atoms - n_atoms
    padded: dict[str, torch.Tensor] = {}
    for key in LABEL_KEYS:
        value = get(key)
        if value is None:
            continue
        value = value.reshape(n_graphs, 3, 3) if key == "stress" else value
        extra = extra_atoms if key == "forces" else extra_graphs
        padding = value.new_zeros((extra, *value.shape[1:]))
        padded[key] = torch.cat([value, padding])
    return padded


def _ptr(graph: Any, batch: torch.Tensor, num_graphs: int) -> torch.Tensor:
    """The graph's ``ptr`` (first atom of each graph, then the atom count)."""
    ptr = graph.get("ptr") if isinstance(graph, dict) else getattr(graph, "ptr", None)
    if ptr is not None:
        return ptr
    counts = torch.bincount(batch, minlength=num_graphs)
    return torch.cat([counts.new_zeros(1), torch.cumsum(counts, 0)])


def unpad(output: dict[str, torch.Tensor | None], sizes: tuple[int, int, int]) -> dict:
    """The real graphs' part of a padded output (copies, so buffers can be reused)."""
    n_atoms, _, n_graphs = sizes
    per_atom = {"forces", "node_energy"}
    result: dict[str, torch.Tensor | None] = {}
    for key, value in output.items():
        if value is None:
            result[key] = None
        elif key in per_atom:
            result[key] = value[:n_atoms].clone()
        else:
            result[key] = value[:n_graphs].clone()
    return result


def pad_training_batch(
    batch: Any, growth: float, r_max: float, padding_number: int
) -> tuple[tuple[int, int, int], Bucket, PaddedBatch]:
    """A training batch padded, labels included, to its shape bucket: (its real sizes,
    the bucket, the padded batch); the front half of every graphed or compiled step."""
    sizes = graph_sizes(batch)
    bucket = bucket_for(*sizes, growth=growth)
    padded = PaddedBatch(pad_graph(batch, bucket, r_max, padding_number))
    padded.update(pad_labels(batch, bucket))
    return sizes, bucket, padded
