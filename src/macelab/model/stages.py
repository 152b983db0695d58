"""The named stages of MACE, what each declares about how it runs, and how an
implementation of a stage is swapped in.

The model holds the equations; how a stage computes is chosen by whoever prepares the model
for a run (:mod:`macelab.runtime`), in two ways that both keep parameters, buffers and
state-dict keys:

* an *implementation class*: a subclass of the stage's class with another ``forward``
  (``macelab.kernels``: sparse or Triton contractions, the fused convolution), put in place
  with :func:`set_implementation`;
* a *layer* over the stage's class (:class:`StageLayer`, e.g. a precision policy's casts
  and autocast), added with :func:`add_layer`; layers stay on top when the implementation
  under them changes, so the order in which both are chosen does not matter.

A stage's precision is a declared attribute, ``stage_precision`` (a :class:`StagePrecision`,
absent where the stage runs in the model's dtype); kernels read it with
:func:`stage_precision`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class StagePrecision:
    """The dtypes of one stage: ``compute`` and, for sums, ``accumulate``."""

    compute: torch.dtype
    accumulate: torch.dtype | None = None


def stage_names(model: torch.nn.Module) -> list[str]:
    """The named stages of a macelab MACE, in forward order (``docs/model.md``)."""
    names = ["edges", "spherical_harmonics", "radial", "embedding"]
    if getattr(model, "pair_repulsion", None) is not None:
        names.append("pair_repulsion")
    for t, interaction in enumerate(model.interactions):
        parts = ["linear_up", "radial_mlp", "tensor_product", "aggregation", "linear"]
        if getattr(interaction, "element_mixing", None) is not None:
            parts.append("element_mixing")
        names += [f"interactions.{t}.{p}" for p in parts]
        names += [f"products.{t}.contraction", f"products.{t}.update", f"readouts.{t}"]
    return [*names, "scale_shift", "atomic_energies", "energy_sum"]


def stage_precision(module: torch.nn.Module) -> StagePrecision | None:
    """The precision ``module`` declares (None: it computes in its inputs' dtype)."""
    return getattr(module, "stage_precision", None)


_COMBINED: dict[tuple[type, type], type] = {}  # (layer, base) -> the class of both


class StageLayer(torch.nn.Module):
    """A mixin that runs over a stage's own class: ``Layer.over(Linear)`` is the class
    ``(Layer, Linear)``, whose ``forward`` wraps ``Linear.forward`` through ``super()``."""

    layered_over: type[torch.nn.Module] | None = None  # set on the combined classes only

    @classmethod
    def over(cls, base: type[torch.nn.Module]) -> type[torch.nn.Module]:
        """The class of ``cls`` over ``base`` (one class per pair, made on first use)."""
        key = (cls, base)
        if key not in _COMBINED:
            name = f"{cls.__name__}[{base.__name__}]"
            attributes = {"__module__": cls.__module__, "layered_over": base}
            _COMBINED[key] = type(name, (cls, base), attributes)
        return _COMBINED[key]


def _split(cls: type) -> tuple[list[type], type]:
    """(the layers over ``cls``, outermost first; the implementation class under them)."""
    layers = []
    while issubclass(cls, StageLayer) and cls.layered_over is not None:
        layers.append(cls.__mro__[1])
        cls = cls.layered_over
    return layers, cls


def implementation(module: torch.nn.Module) -> type:
    """The class that computes ``module``, under any layers."""
    return _split(type(module))[1]


def set_implementation(module: torch.nn.Module, cls: type) -> None:
    """Compute ``module`` with ``cls`` (its class or a subclass of the reference class
    with the same parameters and buffers), keeping its layers on top."""
    layers, _ = _split(type(module))
    for layer in reversed(layers):
        cls = layer.over(cls)
    module.__class__ = cls


def add_layer(module: torch.nn.Module, layer: type[StageLayer]) -> None:
    """Put ``layer`` over ``module``'s class (no-op if it is there already)."""
    layers, base = _split(type(module))
    if layer in layers:
        return
    cls = base
    for outer in reversed([layer, *layers]):
        cls = outer.over(cls)
    module.__class__ = cls


def remove_layer(module: torch.nn.Module, layer: type[StageLayer]) -> None:
    """Take ``layer`` off ``module``'s class (no-op if it is not there)."""
    layers, cls = _split(type(module))
    for outer in reversed([x for x in layers if x is not layer]):
        cls = outer.over(cls)
    module.__class__ = cls
