"""Small symmetric contractions and inputs for the kernel tests."""

from __future__ import annotations

import torch
from e3nn import o3

from macelab.model.irreps import channelwise_tensor_product as tensor_product
from macelab.model.irreps import hidden_irreps, sh_irreps
from macelab.model.symmetric_contraction import SymmetricContraction


def channelwise_tensor_product(
    channels: int, max_L: int, max_ell: int, node_irreps: str | None = None
) -> o3.TensorProduct:
    """Eq. 8's tensor product as an Interaction builds it (float64), of node features
    ``channels x (0e..max_L)`` (or ``node_irreps``) with harmonics up to ``max_ell``."""
    node = o3.Irreps(node_irreps) if node_irreps else hidden_irreps(channels, max_L)
    target = hidden_irreps(channels, max_ell)
    return tensor_product(node, sh_irreps(max_ell), target).double()


def contraction(
    channels: int = 3,
    max_ell: int = 2,
    max_L: int = 2,
    correlation: int = 3,
    num_elements: int = 3,
    dtype: torch.dtype = torch.float64,
    seed: int = 0,
    **kwargs,
) -> SymmetricContraction:
    torch.manual_seed(seed)
    irreps_in = o3.Irreps([(channels, (ell, (-1) ** ell)) for ell in range(max_ell + 1)])
    irreps_out = o3.Irreps([(channels, (L, (-1) ** L)) for L in range(max_L + 1)])
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        return SymmetricContraction(irreps_in, irreps_out, correlation, num_elements, **kwargs)
    finally:
        torch.set_default_dtype(previous)


def inputs(
    module: SymmetricContraction, num_atoms: int = 5, dtype: torch.dtype = torch.float64, seed=1
) -> tuple[torch.Tensor, torch.Tensor]:
    """A ``[n, C, K]`` and one-hot node attributes covering every element."""
    first = module.contractions[0]
    generator = torch.Generator().manual_seed(seed)
    shape = (num_atoms, first.channels, first.num_components)
    features = torch.randn(shape, generator=generator, dtype=torch.float64).to(dtype)
    num_elements = next(iter(first.weights.values())).shape[0]
    if first.element_factors is not None:
        num_elements = first.element_factors.shape[0]
    elements = torch.arange(num_atoms) % num_elements
    node_attrs = torch.nn.functional.one_hot(elements, num_elements).to(dtype)
    return features, node_attrs
