"""Per-row 8-bit fake quantisation of element tables (``model.embedding=int8``).

Each element row ``W[z, :]`` is rounded symmetrically to ``s[z] q[z, :]`` with ``q`` int8 in
[-127, 127] and ``s[z] = max|W[z, :]| / 127`` (float32) in every forward pass; the rounding
is passed through as the identity in the backward pass (straight-through estimator). The
blocks that hold element tables (embedding, symmetric contraction, update) call these; the
stored form and its size are in :mod:`macelab.model.compressed_tables`.
"""

from __future__ import annotations

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
