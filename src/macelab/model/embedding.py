"""Node embedding: the element table, one-hot node attributes and Eq. 8's ``W h_j`` at t=0.

An atom's chemistry enters MACE only through its element ``z_i``: a one-hot vector over the
model's element table (the node attributes, irreps ``n_elements x 0e``), mapped linearly to
the initial invariant node features ``h_i^(0)`` (irreps ``channels x 0e``), a learnable
embedding vector per element.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from e3nn import o3

from macelab.errors import MacelabError
from macelab.model.int8 import fake_quantize_e3nn

MAX_ATOMIC_NUMBER = 118


class UnknownElementError(MacelabError, ValueError):
    """Atoms of an element the model was not trained on."""


class ElementTable(torch.nn.Module):
    """Maps atomic numbers Z to indices in the model's element table.

    Args:
        atomic_numbers: the element table, e.g. ``[1, 6, 7, 8]``; its order is the order of
            the one-hot attributes and of every per-element parameter (E0, the weights of
            the product basis and of the self-connection).
    """

    def __init__(self, atomic_numbers: Sequence[int]) -> None:
        super().__init__()
        zs = [int(z) for z in atomic_numbers]
        if len(set(zs)) != len(zs) or not zs:
            raise ValueError(f"the element table must list distinct elements, got {zs}")
        if min(zs) < 1 or max(zs) > MAX_ATOMIC_NUMBER:
            raise ValueError(f"atomic numbers must be 1-{MAX_ATOMIC_NUMBER}, got {zs}")
        lookup = torch.full((MAX_ATOMIC_NUMBER + 1,), -1, dtype=torch.int64)
        lookup[torch.tensor(zs)] = torch.arange(len(zs))
        self.register_buffer("atomic_numbers", torch.tensor(zs, dtype=torch.int64))
        self.register_buffer("lookup", lookup, persistent=False)
        # The check reads a flag from the device; tracers (make_fx) that cannot, turn it off
        # after checking their inputs themselves.
        self.check_inputs = True

    @property
    def num_elements(self) -> int:
        return int(self.atomic_numbers.numel())

    def check(self, atomic_numbers: torch.Tensor | Sequence[int]) -> None:
        """Raise :class:`UnknownElementError` if any atomic number is not in the table."""
        present = {int(z) for z in torch.as_tensor(atomic_numbers).unique().tolist()}
        unknown = sorted(present - set(self.atomic_numbers.tolist()))
        if unknown:
            from ase.data import chemical_symbols

            names = ", ".join(f"{chemical_symbols[z]} (Z={z})" for z in unknown)
            table = ", ".join(chemical_symbols[z] for z in self.atomic_numbers.tolist())
            raise UnknownElementError(
                f"this model knows the elements [{table}] but the structure contains {names}; "
                "use a model trained on these elements, or remove those atoms."
            )

    def forward(self, atomic_numbers: torch.Tensor) -> torch.Tensor:
        """``[n]`` atomic numbers -> ``[n]`` int64 indices into the element table."""
        index = self.lookup[atomic_numbers.clamp(0, MAX_ATOMIC_NUMBER)]
        if self.check_inputs and _may_sync() and bool((index < 0).any()):
            self.check(atomic_numbers)
        return index


def _may_sync() -> bool:
    """Whether a host-device synchronisation is allowed here: not while ``torch.compile``
    traces, nor while a CUDA graph is captured (the check then ran in the warm-up calls)."""
    if torch.compiler.is_compiling():
        return False
    return not (torch.cuda.is_available() and torch.cuda.is_current_stream_capturing())


class NodeEmbedding(torch.nn.Module):
    """``h_i^(0) = W onehot(z_i)``: ``n_elements x 0e`` -> ``channels x 0e``.

    An e3nn ``o3.Linear``, so weights (and their normalisation) are those of mace-torch's
    ``LinearNodeEmbeddingBlock``. With ``rank`` the table is compressed to
    ``W = F V``: element factors ``F`` ``[n_elements, rank]`` then a linear map from rank
    to channels (full rank with ``F = I`` is the plain embedding exactly). With ``int8``
    the table's rows (one per element) are fake-quantised to 8 bits in every forward pass
    (:mod:`macelab.model.compressed_tables`).
    """

    def __init__(
        self, num_elements: int, channels: int, rank: int | None = None, int8: bool = False
    ) -> None:
        super().__init__()
        if int8 and rank is not None:
            raise ValueError("an int8 embedding quantises the full table; it takes no rank")
        self.int8 = bool(int8)
        inputs = num_elements if rank is None else int(rank)
        self.factors: torch.nn.Parameter | None = None
        if rank is not None:
            dtype = torch.get_default_dtype()
            self.factors = torch.nn.Parameter(torch.randn(num_elements, inputs, dtype=dtype))
        self.irreps_in = o3.Irreps([(inputs, (0, 1))])
        self.irreps_out = o3.Irreps([(channels, (0, 1))])
        self.linear = o3.Linear(self.irreps_in, self.irreps_out)

    def forward(self, node_attrs: torch.Tensor) -> torch.Tensor:
        if self.factors is not None:
            node_attrs = node_attrs @ self.factors.to(node_attrs.dtype)  # [n, rank]
        if self.int8:
            weight = fake_quantize_e3nn(self.linear, self.linear.weight, axis=0)
            return self.linear(node_attrs, weight)  # [n, channels]
        return self.linear(node_attrs)  # [n, channels]
