"""Fine-tuning: start a run from a pretrained model (``pretrained.*`` in conf/train.yaml).

The pretrained model (a macelab checkpoint's EMA weights, or a mace-torch model file such as
a MACE-OFF foundation model, converted exactly by :func:`macelab.interop.from_mace_torch`)
fixes the architecture: its hyperparameters replace ``conf/model``. Then:

* every element of the new data must be in its element table (else a ConfigError naming
  them: the embedding of an unseen element cannot be fine-tuned from anything);
* with ``refit_e0s`` the E0s of the new data's elements are those computed from the new data
  (``data.e0s``), so a change of reference (another DFT code or functional) is absorbed by
  the fixed per-element shifts instead of the learned weights; other elements keep theirs;
* ``freeze`` patterns (fnmatch on parameter names, e.g. ``embedding.*``,
  ``interactions.0.*``) mark parameters as not trained;
* the EMA average restarts from the pretrained weights;
* ``elements`` (``[H, C, O]``, or ``data`` for the new data's elements) restricts the
  element table to a subset first (:func:`restrict_elements`): every per-element weight
  keeps only its rows of those elements, so a foundation model shrinks to the chemistry of
  the new data with the same predictions for it.

Resuming a fine-tuning run (``ckpt_path=last``) restores its own checkpoint over this.

A mace-torch model file is a pickle, which runs code from the file as it loads: it is
loaded only with ``pretrained.trust_pickle=true`` (docs/security.md). A macelab checkpoint
loads weights only, without that key.
"""

from __future__ import annotations

import fnmatch
from typing import Any

import torch
from e3nn import o3

from macelab.errors import ConfigError, MissingDataError
from macelab.interop import from_mace_torch, load_mace_torch_file
from macelab.model import MACE
from macelab.model.embedding import NodeEmbedding
from macelab.model.product import Update
from macelab.model.symmetric_contraction import IrrepContraction
from macelab.precision import default_dtype
from macelab.training.checkpoint import load_model
from macelab.training.ema import ExponentialMovingAverage


def load_pretrained(cfg: Any, statistics: Any = None) -> torch.nn.Module | None:
    """The pretrained model of the ``pretrained`` config, or None if none is given; its
    element table restricted to ``cfg.elements`` (``data``: the elements of ``statistics``,
    the new training data's) when that is set."""
    if cfg is None:
        return None
    return select_elements(cfg, load_pretrained_model(cfg), statistics)


def select_elements(cfg: Any, model: torch.nn.Module | None, statistics: Any) -> Any:
    """``model`` restricted to ``cfg.elements`` (see :func:`load_pretrained`), or as is."""
    elements = cfg.get("elements")
    if model is None or elements is None:
        return model
    return restrict_elements(model, element_subset(elements, model, statistics))


def pretrained_e0s(model: torch.nn.Module) -> dict[str, float]:
    """The pretrained model's E0s as ``{symbol: eV}``: the new data's E0s (``data.e0s``)
    when they are not refitted, so that the data's statistics and the model agree and the
    data needs no isolated-atom configurations."""
    from ase.data import chemical_symbols

    energies = model.atomic_energies.atomic_energies.tolist()
    return {
        chemical_symbols[z]: float(e) for z, e in zip(model.atomic_numbers, energies, strict=True)
    }


def load_pretrained_model(cfg: Any) -> torch.nn.Module | None:
    """The model of ``pretrained.ckpt_path`` or ``pretrained.mace_torch_model`` (None if
    neither is set), with its whole element table."""
    ckpt, mace_file = cfg.get("ckpt_path"), cfg.get("mace_torch_model")
    trust_pickle = bool(cfg.get("trust_pickle", False))
    if ckpt and mace_file:
        raise ConfigError(
            "give either pretrained.ckpt_path or pretrained.mace_torch_model, not both."
        )
    if ckpt:
        model, _ = load_model(str(ckpt), trust_pickle=trust_pickle)
        return model
    if mace_file:
        try:
            source = load_mace_torch_file(str(mace_file), trust_pickle=trust_pickle)
        except MissingDataError as error:
            raise ConfigError(
                f"pretrained.mace_torch_model={mace_file} does not exist; give the path of a "
                "mace-torch model file (torch.save of the model)."
            ) from error
        return from_mace_torch(source)
    return None


def model_config(pretrained: torch.nn.Module, statistics: Any, refit_e0s: bool) -> dict:
    """The model config of the fine-tuned model: the pretrained hyperparameters, with the
    new data's E0s where ``refit_e0s``. ConfigError if the data has unknown elements."""
    config = dict(pretrained.hyperparameters)
    table = list(config["atomic_numbers"])
    unknown = sorted(set(statistics.atomic_numbers) - set(table))
    if unknown:
        from ase.data import chemical_symbols

        names = ", ".join(chemical_symbols[z] for z in unknown)
        raise ConfigError(
            f"the new data contains elements the pretrained model does not know ({names}); "
            f"its table is {table}. Fine-tune a model that covers them, or train from scratch."
        )
    if refit_e0s:
        e0 = list(config["atomic_energies"])
        for z, value in zip(statistics.atomic_numbers, statistics.atomic_energies, strict=True):
            e0[table.index(z)] = float(value)
        config["atomic_energies"] = e0
    return config


def initialise(module: Any, pretrained: torch.nn.Module, freeze: list[str]) -> dict[str, int]:
    """Copy the pretrained weights into ``module.model`` (E0s excepted: the module's config
    has them), freeze parameters matching ``freeze``, restart the EMA. Returns counts."""

    state = {
        key: value
        for key, value in pretrained.state_dict().items()
        if not key.startswith("atomic_energies.")
    }
    dtype = next(module.model.parameters()).dtype
    module.model.load_state_dict({k: v.to(dtype) for k, v in state.items()}, strict=False)
    names = [name for name, _ in module.model.named_parameters()]
    for pattern in freeze:
        if not fnmatch.filter(names, pattern):
            raise ConfigError(
                f"pretrained.freeze pattern {pattern!r} matches no parameter; names look like "
                f"{', '.join(names[:4])}, ..."
            )
    frozen = 0
    for name, parameter in module.model.named_parameters():
        if any(fnmatch.fnmatchcase(name, pattern) for pattern in freeze):
            parameter.requires_grad_(False)
            frozen += parameter.numel()
    if module.ema is not None:
        module.ema = ExponentialMovingAverage(module.model, decay=module.ema.decay)
    trainable = sum(p.numel() for p in module.model.parameters() if p.requires_grad)
    return {"frozen_parameters": frozen, "trainable_parameters": trainable}


def element_subset(elements: Any, model: torch.nn.Module, statistics: Any) -> list[int]:
    """The atomic numbers of ``pretrained.elements`` (``data``, or symbols / numbers), in
    the order of the model's table. ConfigError if one is not in the model's table or the
    subset misses an element of the new data."""
    from ase.data import atomic_numbers as numbers_of
    from ase.data import chemical_symbols

    data = list(statistics.atomic_numbers) if statistics is not None else []
    if isinstance(elements, str):
        if elements != "data":
            raise ConfigError(
                f"pretrained.elements={elements!r}; give null, data, or a list such as [H, C, O]."
            )
        wanted = set(data)
    else:
        wanted = set()
        for item in elements:
            z = numbers_of.get(str(item)) if not str(item).isdigit() else int(item)
            if z is None:
                raise ConfigError(f"pretrained.elements: {item!r} is not an element symbol.")
            wanted.add(z)
    table = model.atomic_numbers
    names = lambda zs: ", ".join(chemical_symbols[z] for z in sorted(zs))  # noqa: E731
    unknown = wanted - set(table)
    if unknown:
        raise ConfigError(
            f"pretrained.elements lists {names(unknown)}, which the pretrained model does not "
            f"know (its table: {names(table)}); choose a subset of its table."
        )
    missing = set(data) - wanted
    if missing:
        raise ConfigError(
            f"pretrained.elements ({names(wanted)}) misses {names(missing)} of the new training "
            "data; add them to the list, or use pretrained.elements=data."
        )
    return [z for z in table if z in wanted]


def restrict_elements(model: torch.nn.Module, atomic_numbers: list[int]) -> torch.nn.Module:
    """A copy of ``model`` whose element table is ``atomic_numbers`` (a subset of its table,
    in its order), with the same energies and forces for structures of those elements.

    The per-element weights are: the node embedding (rows of its linear map, or of its
    factors with ``embedding=low_rank``), the product basis weights ``W_z`` of every layer
    and irrep (or their element factors), the element-dependent self-connections of the
    updates (or their element factors) and the element mixing of a plain first layer (the
    one-hot input of e3nn tensor products), and the E0s. ``embedding=int8`` tables are
    float masters quantised per element row, so slicing their rows keeps every element's
    8-bit levels. e3nn normalises a path by its number of inputs, so weights that
    meet the one-hot input are rescaled by the ratio of the old and new path normalisations.
    """

    table = model.atomic_numbers
    keep = torch.tensor([table.index(z) for z in atomic_numbers])
    config = dict(model.hyperparameters)
    config["atomic_numbers"] = list(atomic_numbers)
    config["atomic_energies"] = model.atomic_energies.atomic_energies[keep].tolist()
    device = next(model.parameters()).device
    with default_dtype(model.dtype):
        restricted = MACE(**config).to(device)
    target = restricted.state_dict()
    with torch.no_grad():
        sliced: dict[str, torch.Tensor] = {}
        for name, new in restricted.named_modules():
            if isinstance(new, (NodeEmbedding, IrrepContraction, Update, o3.TensorProduct)):
                sliced.update(_slice_module(name, model.get_submodule(name), new, keep))
        # the element table and the E0s are buffers built from the config above
        built = ("elements.atomic_numbers", "atomic_energies.atomic_energies")
        for key, value in model.state_dict().items():
            if key not in sliced and key not in built:
                sliced[key] = value
    wrong = [k for k, v in sliced.items() if v.shape != target[k].shape]
    if wrong:  # a per-element table this function does not know: refuse, do not guess
        raise RuntimeError(f"restrict_elements does not know how to slice {wrong}")
    result = restricted.load_state_dict(sliced, strict=False)
    if result.unexpected_keys or set(result.missing_keys) - set(built):
        raise RuntimeError(f"restrict_elements: state mismatch {result}")
    for new, old in zip(restricted.products, model.products, strict=True):
        pairs = zip(new.contraction.contractions, old.contraction.contractions, strict=True)
        for c_new, c_old in pairs:
            c_new.active_correlation = c_old.active_correlation
    return restricted.eval()


def _slice_module(
    name: str, old: torch.nn.Module, new: torch.nn.Module, keep: torch.Tensor
) -> dict[str, torch.Tensor]:
    """The sliced per-element tensors of one module (state-dict keys), or {}."""
    prefix = f"{name}." if name else ""
    out: dict[str, torch.Tensor] = {}
    if isinstance(old, NodeEmbedding):
        if old.factors is not None:
            out[f"{prefix}factors"] = old.factors[keep]
        else:  # linear map from the one-hot input: rows are elements
            out[f"{prefix}linear.weight"] = _slice_e3nn(old.linear, new.linear, keep, axis=0)
    elif isinstance(old, IrrepContraction):
        if old.element_factors is not None:
            out[f"{prefix}element_factors"] = old.element_factors[keep]
        else:
            for nu, weights in old.weights.items():
                out[f"{prefix}weights.{nu}"] = weights[keep]
    elif isinstance(old, Update):
        if old.element_factors is not None:  # low rank: the tensor product sees r factors
            out[f"{prefix}element_factors"] = old.element_factors[keep]
        elif old.self_connection is not None:
            tp_old, tp_new = old.self_connection, new.self_connection
            out[f"{prefix}self_connection.weight"] = _slice_e3nn(tp_old, tp_new, keep, axis=1)
    elif isinstance(old, o3.TensorProduct) and name.endswith("element_mixing"):
        out[f"{prefix}weight"] = _slice_e3nn(old, new, keep, axis=1)  # input 2: the one-hot
    return out


def _slice_e3nn(old: Any, new: Any, keep: torch.Tensor, axis: int) -> torch.Tensor:
    """The flat weight of e3nn block ``new``: each instruction's weights of ``old`` sliced
    to ``keep`` along ``axis`` (the one-hot input), times old/new path normalisation."""
    pieces = []
    for (_, ins_old, w_old), (_, ins_new, _) in zip(
        old.weight_views(yield_instruction=True),
        new.weight_views(yield_instruction=True),
        strict=True,
    ):
        ratio = ins_old.path_weight / ins_new.path_weight
        pieces.append((w_old.index_select(axis, keep) * ratio).reshape(-1))
    return torch.cat(pieces)
