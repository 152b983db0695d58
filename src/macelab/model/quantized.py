"""INT8 readout for inference: the linear maps of Eq. 13 as int8 x int8 -> int32 products.

The readouts see only the scalar (``0e``) channels of the node features, so an e3nn
``o3.Linear`` to scalars is a plain matrix on the ``0e`` slice of its input; it is extracted
exactly (probed on unit vectors in float64) and quantised:

- weights per output channel, symmetric: ``W[o, :] ~ s_w[o] * Wq[o, :]``, ``Wq`` int8 in
  [-127, 127], ``s_w = max|W[o, :]| / 127`` (float32);
- activations dynamically per row (per atom), symmetric: ``x[n, :] ~ s_x[n] * xq[n, :]``.
  Per row, not per tensor, so that an atom's energy does not depend on the other atoms and
  structures of the batch (a per-tensor scale would make a molecule's energy change when it
  is batched with a larger one) and so that small-feature atoms keep their resolution;
- ``y[n, o] = s_x[n] s_w[o] sum_k xq[n, k] Wq[o, k]`` with the sum exact in int32
  (``torch._int_mm`` where its shape constraints allow, an exact float64 product otherwise).

Forces are ``-dE/dr`` through the readout, so the product has a backward: w.r.t. the input
it is ``grad_y @ (s_w Wq)``, the dequantised weights, with the activation rounding treated
as the identity (straight-through estimator). For a linear readout the forces are then
exactly those of the model with dequantised weights and float activations; through the MLP
readout the activation's derivative is taken at the INT8 layer's (rounded) output. Either
way they are not the derivative of the rounded energy (zero almost everywhere, with jumps);
they integrate to the INT8 energy up to its rounding (tested along a path).

Inference only: the layer refuses training mode and a second derivative
(``create_graph=True``), with a message saying so.
"""

from __future__ import annotations

import copy

import torch
from e3nn import o3

from macelab.errors import MacelabError

INT8_MAX = 127
READOUT_FORMATS = ("float", "int8")


class Int8TrainingError(MacelabError):
    """Someone tried to train (or differentiate twice) through the INT8 readout."""


def quantize_weight(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``[out, in]`` float -> (int8 ``[out, in]``, float32 scale ``[out]``), per output row."""
    weight = weight.detach().to(torch.float64)
    scale = weight.abs().amax(dim=1) / INT8_MAX
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))  # an all-zero row stays 0
    quantized = torch.round(weight / scale[:, None]).clamp(-INT8_MAX, INT8_MAX)
    return quantized.to(torch.int8), scale.to(torch.float32)


def quantize_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``[n, k]`` float -> (int8 ``[n, k]``, scale ``[n]`` in ``x``'s dtype), per row."""
    scale = x.abs().amax(dim=1) / INT8_MAX
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    quantized = torch.round(x / scale[:, None]).clamp(-INT8_MAX, INT8_MAX)
    return quantized.to(torch.int8), scale


def int8_matmul(a: torch.Tensor, b_t: torch.Tensor, pad: bool | None = None) -> torch.Tensor:
    """Exact ``a @ b_t.T`` of int8 ``[m, k]`` and ``[n, k]`` as int32 ``[m, n]``.

    ``torch._int_mm`` (cuBLASLt on CUDA) needs m > 16 and k, n multiples of 8 there, and ``b``
    column-major; with ``pad`` (default: on CUDA) the operands are zero-padded to those shapes
    (zeros add nothing to an integer sum) and the result cropped, so the readout's ``n = 1``
    and odd channel counts use it too. Without ``_int_mm`` (or a CPU build lacking its
    kernel) a float64 product is used, which is exact: every partial sum is an integer of
    magnitude below ``k * 127^2 < 2^53``.
    """
    m, k = a.shape
    n = b_t.shape[0]
    if pad is None:
        pad = a.is_cuda
    if pad:
        pad_m, pad_k, pad_n = max(0, 17 - m), (-k) % 8, (-n) % 8
        a = torch.nn.functional.pad(a, (0, pad_k, 0, pad_m))
        b_t = torch.nn.functional.pad(b_t, (0, pad_k, 0, pad_n))
    try:
        return torch._int_mm(a.contiguous(), b_t.contiguous().T)[:m, :n]  # b: [k, n] col-major
    except (AttributeError, RuntimeError):  # no _int_mm, or no kernel for this device/shape
        product = a[:m, :k].to(torch.float64) @ b_t[:n, :k].to(torch.float64).T
        return product.to(torch.int32)


def int8_matmul_backend(device: str | torch.device = "cpu") -> str:
    """Which product :func:`int8_matmul` runs on ``device``: ``torch._int_mm`` or the exact
    float64 fallback (for benchmark records: the fallback is silent by design)."""
    a = torch.ones(17, 8, dtype=torch.int8, device=device)
    try:
        torch._int_mm(a, a[:8].contiguous().T)
    except (AttributeError, RuntimeError):
        return "float64 fallback"
    return "torch._int_mm"


class _Int8LinearFunction(torch.autograd.Function):
    """``y = dequant(int8(x) @ Wq^T)``; backward w.r.t. x with the dequantised weights."""

    @staticmethod
    def forward(ctx, x, weight_int8, weight_scale):
        compute = torch.float64 if x.dtype == torch.float64 else torch.float32
        xc = x.to(compute)
        x_int8, x_scale = quantize_rows(xc)
        accumulated = int8_matmul(x_int8, weight_int8)  # [n, out] int32, exact
        scale_w = weight_scale.to(compute)
        y = accumulated.to(compute) * x_scale[:, None] * scale_w[None, :]
        ctx.save_for_backward(weight_int8, weight_scale)
        ctx.input_dtype = x.dtype
        return y.to(x.dtype)

    @staticmethod
    def backward(ctx, grad_y):
        if torch.is_grad_enabled():
            raise Int8TrainingError(
                "the INT8 readout gives forces (one derivative) but not their derivatives "
                "(create_graph=True, e.g. a force loss in training); train the float model "
                "and quantise it afterwards with python -m macelab.quantize."
            )
        weight_int8, weight_scale = ctx.saved_tensors
        compute = torch.float64 if grad_y.dtype == torch.float64 else torch.float32
        weight = weight_int8.to(compute) * weight_scale.to(compute)[:, None]  # [out, in]
        grad_x = (grad_y.to(compute) @ weight).to(ctx.input_dtype)
        return grad_x, None, None


class Int8Linear(torch.nn.Module):
    """A readout's linear map in INT8: ``[n, dim_in]`` -> ``[n, out]``.

    Reads only the input columns ``input_index`` (the ``0e`` slice); the others have no path
    to a scalar output. Buffers (saved in the state dict): ``weight_int8`` ``[out, k]`` int8,
    ``weight_scale`` ``[out]`` float32, ``input_index`` ``[k]`` int64.
    """

    def __init__(self, weight: torch.Tensor, input_index: torch.Tensor, dim_in: int) -> None:
        super().__init__()
        weight_int8, weight_scale = quantize_weight(weight)
        self.register_buffer("weight_int8", weight_int8)
        self.register_buffer("weight_scale", weight_scale)
        self.register_buffer("input_index", input_index.to(torch.int64).clone())
        self.dim_in = int(dim_in)
        self.out_features = int(weight.shape[0])

    @classmethod
    def from_e3nn(cls, linear: o3.Linear) -> Int8Linear:
        """Quantise an e3nn ``o3.Linear`` whose output is scalars only."""
        weight, index = scalar_matrix(linear)
        return cls(weight, index, linear.irreps_in.dim)

    def dequantized_weight(self) -> torch.Tensor:
        """``s_w[o] * Wq[o, k]`` as float32 ``[out, k]``: what the backward uses."""
        return self.weight_int8.to(torch.float32) * self.weight_scale.to(torch.float32)[:, None]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            raise Int8TrainingError(
                "the INT8 readout is for inference only (model.eval()); train the float "
                "model and quantise it afterwards with python -m macelab.quantize."
            )
        if x.shape[-1] != self.dim_in:
            raise ValueError(f"expected {self.dim_in} input features, got {x.shape[-1]}")
        scalars = x.index_select(-1, self.input_index)  # [n, k], the 0e channels
        return _Int8LinearFunction.apply(scalars, self.weight_int8, self.weight_scale)

    def extra_repr(self) -> str:
        k = self.weight_int8.shape[1]
        return f"in={self.dim_in} (0e: {k}), out={self.out_features}, int8 per-channel/per-row"


def scalar_matrix(linear: o3.Linear) -> tuple[torch.Tensor, torch.Tensor]:
    """The matrix of an e3nn ``o3.Linear`` to scalars, on the input's ``0e`` channels.

    Returns ``(W [out, k] float64, input_index [k])`` with ``linear(x) = x[:, index] @ W.T``.
    Found exactly by applying a float64 copy to the unit vectors (this includes e3nn's path
    normalisation). Refuses outputs that are not all ``0e`` and linears with a bias.
    """
    if any(ir != o3.Irrep("0e") for _, ir in linear.irreps_out):
        raise ValueError(f"INT8 readout needs scalar outputs, got {linear.irreps_out}")
    if getattr(linear, "bias", None) is not None and linear.bias.numel() > 0:
        raise ValueError("INT8 readout of an o3.Linear with biases is not supported")
    probe = copy.deepcopy(linear).to(device="cpu", dtype=torch.float64)
    with torch.no_grad():
        matrix = probe(torch.eye(linear.irreps_in.dim, dtype=torch.float64))  # [in, out]
    index = torch.cat(
        [
            torch.arange(s.start, s.stop)
            for (_, ir), s in zip(linear.irreps_in, linear.irreps_in.slices(), strict=True)
            if ir == o3.Irrep("0e")
        ]
    )
    outside = torch.ones(linear.irreps_in.dim, dtype=torch.bool)
    outside[index] = False
    if bool((matrix[outside] != 0).any()):
        raise ValueError("the linear map reads non-scalar channels; it is not a readout")
    return matrix[index].T.contiguous(), index


def _readout_linears(readout: torch.nn.Module) -> list[str]:
    """Names of a readout's linear maps (LinearReadout: linear; NonLinearReadout: both)."""
    return [name for name in ("linear", "linear_1", "linear_2") if hasattr(readout, name)]


def quantize_readout(model: torch.nn.Module) -> torch.nn.Module:
    """Replace the linear maps of every readout of ``model`` by :class:`Int8Linear`, in place.

    Everything else (interactions, products, activations, scale/shift, E0s) is untouched.
    The int8 buffers are part of the state dict, and a float model that loads such a state
    dict turns its readouts to INT8 first (``macelab.model.readout``), so checkpoints of the
    quantised model load through the usual paths. Returns ``model`` (in eval mode).
    """
    for readout in model.readouts:
        for name in _readout_linears(readout):
            layer = getattr(readout, name)
            if not isinstance(layer, Int8Linear):
                setattr(readout, name, Int8Linear.from_e3nn(layer).to(_device(layer)))
    return model.eval()


def readout_format(model: torch.nn.Module) -> str:
    """``"int8"`` if the model's readouts are quantised, else ``"float"``."""
    return "int8" if any(isinstance(m, Int8Linear) for m in model.modules()) else "float"


def adopt_int8_state(readout: torch.nn.Module, state_dict: dict, prefix: str) -> None:
    """Before ``readout`` loads ``state_dict``: turn its linears to INT8 if the state is INT8.

    Called by the readouts' load-state-dict pre-hook; the INT8 layers built here are
    placeholders of the right shapes, overwritten by the saved buffers.
    """
    for name in _readout_linears(readout):
        layer = getattr(readout, name)
        if f"{prefix}{name}.weight_int8" in state_dict and not isinstance(layer, Int8Linear):
            placeholder = Int8Linear.from_e3nn(layer).to(_device(layer))
            setattr(readout, name, placeholder.train(layer.training))


def _device(module: torch.nn.Module) -> torch.device:
    tensor = next(iter(module.parameters()), None)
    return tensor.device if tensor is not None else torch.device("cpu")
