"""8-bit element tables (``model.embedding=int8``): quantisation-aware training of the
per-element weights.

MACE's chemistry lives in three kinds of element-indexed tables: the node embedding
``h^(0) = W onehot(z)``, the product basis weights ``W^(nu)_{z eta k}`` (Eq. 10-11) and the
self-connection of the update (Eq. 12, a tensor product with the one-hot). With ``int8``
each table is fake-quantised **per element row**, symmetrically:

    W[z, :] ~ s[z] q[z, :],   q int8 in [-127, 127],   s[z] = max|W[z, :]| / 127 (float32)

in every forward pass; the float weights stay the trained parameters and the rounding is
passed through as the identity in the backward pass (straight-through estimator), so the
model learns weights that survive rounding. The fake-quantised tables are ordinary weights
of the same modules, so equivariance is untouched. One row per element keeps an element's
resolution independent of the others' magnitudes.

A row of the self-connection is the block of one e3nn instruction for one element
(``[mul_in1, mul_out]``), so each path ``(l_in, l_out)`` has its own scale.

:func:`int8_tables` gives the stored form (int8 values and float32 scales, what a deployed
model would keep); :func:`compressed_table_bytes` counts it against float32 tables.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from macelab.model.embedding import NodeEmbedding
from macelab.model.int8 import INT8_MAX, e3nn_element_rows, element_rows, quantize_rows
from macelab.model.product import Update
from macelab.model.symmetric_contraction import IrrepContraction

__all__ = ["INT8_MAX", "Int8Table", "compressed_table_bytes", "int8_tables"]


@dataclass(frozen=True)
class Int8Table:
    """One stored table: ``values`` int8 ``[E, k]``, ``scales`` float32 ``[E]``."""

    values: torch.Tensor
    scales: torch.Tensor

    def dequantize(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """``[E, k]`` in ``dtype`` (float64 reproduces a float64 model's weights exactly)."""
        return self.values.to(dtype) * self.scales.to(dtype)[:, None]

    @property
    def nbytes(self) -> int:
        return self.values.numel() + 4 * self.scales.numel()

    @property
    def fp32_nbytes(self) -> int:
        return 4 * self.values.numel()


def _float_tables(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The element tables of a model with ``embedding=int8`` as float ``[E, k]`` rows, by
    name (a parameter name, with ``[i]`` for instruction ``i`` of an e3nn block)."""
    tables: dict[str, torch.Tensor] = {}
    for name, module in model.named_modules():
        if not getattr(module, "int8", False):
            continue
        if isinstance(module, NodeEmbedding):
            rows = e3nn_element_rows(module.linear, axis=0)
            for i, table in enumerate(rows):
                tables[f"{name}.linear.weight[{i}]"] = table
        elif isinstance(module, IrrepContraction):
            for nu, weights in module.weights.items():  # [E, P, C]
                tables[f"{name}.weights.{nu}"] = element_rows(weights.detach(), 0)
        elif isinstance(module, Update) and module.self_connection is not None:
            rows = e3nn_element_rows(module.self_connection, axis=1)
            for i, table in enumerate(rows):
                tables[f"{name}.self_connection.weight[{i}]"] = table
    return tables


def int8_tables(model: torch.nn.Module) -> dict[str, Int8Table]:
    """The stored 8-bit form of every element table of a model built with
    ``embedding=int8``: int8 values and float32 per-row scales, by table name. Their
    dequantised values are the weights the model computes with (to float32 rounding)."""
    if not _float_tables(model):
        raise ValueError(
            "this model has no 8-bit element tables; build it with model.embedding=int8"
        )
    out = {}
    for name, table in _float_tables(model).items():
        levels, scale = quantize_rows(table)
        out[name] = Int8Table(levels.to(torch.int8), scale.to(torch.float32))
    return out


def compressed_table_bytes(model: torch.nn.Module) -> dict[str, int]:
    """Bytes of the element tables of an ``embedding=int8`` model: ``int8`` (values, one
    byte each), ``scales`` (float32, one per row), ``compressed`` (their sum) and ``fp32``
    (the same tables in float32), plus ``rows`` and ``values`` (counts)."""
    tables = int8_tables(model)
    values = sum(t.values.numel() for t in tables.values())
    rows = sum(t.scales.numel() for t in tables.values())
    return {
        "values": values,
        "rows": rows,
        "int8": values,
        "scales": 4 * rows,
        "compressed": values + 4 * rows,
        "fp32": 4 * values,
    }
