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

INT8_MAX = 127


def quantize_rows(table: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``[rows, k]`` float -> (``[rows, k]`` integer levels in [-127, 127] in the table's
    dtype, ``[rows]`` scales rounded to float32 and cast back to the table's dtype).

    The scale is rounded to float32 first so that ``levels * scale`` is exactly what the
    stored int8 table and float32 scales dequantise to. An all-zero row keeps scale 1.
    """
    scale = table.abs().amax(dim=1) / INT8_MAX  # [rows]
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    scale = scale.to(torch.float32).to(table.dtype)
    levels = torch.round(table / scale[:, None]).clamp(-INT8_MAX, INT8_MAX)  # [rows, k]
    return levels, scale


def fake_quantize_rows(table: torch.Tensor) -> torch.Tensor:
    """``[rows, k]`` -> the table rounded to int8 per row, with identity gradient
    (straight-through estimator: ``d out / d table = 1``)."""
    levels, scale = quantize_rows(table.detach())
    return table + (levels * scale[:, None] - table).detach()


def element_rows(weight: torch.Tensor, element_axis: int) -> torch.Tensor:
    """A weight block with the element axis moved first and the rest flattened,
    ``[..., E, ...]`` -> ``[E, k]``."""
    moved = weight.movedim(element_axis, 0)
    return moved.reshape(moved.shape[0], -1)


def fake_quantize_e3nn(block: torch.nn.Module, weight: torch.Tensor, axis: int) -> torch.Tensor:
    """The flat weight of e3nn ``o3.Linear``/``o3.TensorProduct`` ``block``, each
    instruction's block fake-quantised per index of input axis ``axis`` (the element)."""
    pieces = []
    for view in block.weight_views(weight):  # [mul_in1, (mul_in2,) mul_out] per instruction
        rows = fake_quantize_rows(element_rows(view, axis))  # [E, k]
        shape = view.movedim(axis, 0).shape
        pieces.append(rows.reshape(shape).movedim(0, axis).reshape(-1))
    return torch.cat(pieces)


def e3nn_element_rows(block: torch.nn.Module, axis: int) -> list[torch.Tensor]:
    """The float element rows of each instruction of e3nn ``block``, ``[E, k]`` each."""
    return [element_rows(view.detach(), axis) for view in block.weight_views()]


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
    from macelab.model.embedding import NodeEmbedding
    from macelab.model.product import Update
    from macelab.model.symmetric_contraction import IrrepContraction

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
