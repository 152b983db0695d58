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
* the EMA average restarts from the pretrained weights.

Resuming a fine-tuning run (``ckpt_path=last``) restores its own checkpoint over this.
"""

from __future__ import annotations

import fnmatch
from typing import Any

import torch

from macelab.errors import ConfigError


def load_pretrained(cfg: Any) -> torch.nn.Module | None:
    """The pretrained model of the ``pretrained`` config, or None if none is given."""
    if cfg is None:
        return None
    ckpt, mace_file = cfg.get("ckpt_path"), cfg.get("mace_torch_model")
    if ckpt and mace_file:
        raise ConfigError(
            "give either pretrained.ckpt_path or pretrained.mace_torch_model, not both."
        )
    if ckpt:
        from macelab.training.checkpoint import load_model

        model, _ = load_model(str(ckpt))
        return model
    if mace_file:
        from macelab.interop import from_mace_torch

        try:
            source = torch.load(str(mace_file), map_location="cpu", weights_only=False)
        except FileNotFoundError as error:
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
    from macelab.training.ema import ExponentialMovingAverage

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
