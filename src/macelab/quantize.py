"""``python -m macelab.quantize ckpt_path=... readout=int8 out=FILE``: an INT8-readout checkpoint.

Reads a macelab checkpoint, replaces the linear maps of its readouts (Eq. 13) by INT8 ones
(:func:`macelab.model.quantized.quantize_readout`) and writes a checkpoint that
``load_model``, ``MACECalculator`` and ``python -m macelab.evaluate`` load as they load any
other. Then it compares the INT8 model with the float model on every test set of the
checkpoint's data (``data=<name>`` for other data): energy and force differences INT8 vs
float, and the error of each against the reference labels; the table is printed and written
as ``quantize.json`` / ``quantize.md`` into the run folder.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import math
from pathlib import Path
from typing import Any

import hydra
import torch
from omegaconf import DictConfig

from macelab.cli import prepare_argv, user_errors_exit
from macelab.config import CONFIG_DIR
from macelab.devices import resolve_device
from macelab.errors import ConfigError
from macelab.model.quantized import quantize_readout
from macelab.precision.inference import for_inference
from macelab.runtime import (
    RuntimePlan,
    apply_runtime,
    entry_plan,
    inference_precision,
    runnable,
)
from macelab.training.checkpoint import (
    checkpoint_plan,
    load_model,
    read_checkpoint,
    recorded_test_data,
)
from macelab.training.checkpoint_io import write_atomically

log = logging.getLogger("macelab.quantize")

READOUT_FORMATS = ("int8",)


def quantize_checkpoint(
    ckpt_path: str | Path, out: str | Path, *, use_ema: bool = True, trust_pickle: bool = False
) -> tuple[torch.nn.Module, torch.nn.Module]:
    """Write the INT8-readout version of ``ckpt_path`` to ``out``; return (float, int8) models.

    The new file is the source checkpoint with the model weights replaced by the quantised
    model's (EMA weights with ``use_ema``) and the EMA shadow set to the same weights, so
    evaluating with or without EMA gives the same INT8 model. Optimiser states are dropped:
    an INT8 model is for inference, not for resuming training. ``trust_pickle`` as in
    :func:`macelab.training.checkpoint.load_model`.
    """
    checkpoint = read_checkpoint(ckpt_path, trust_pickle=trust_pickle)
    float_model, _ = load_model(ckpt_path, use_ema=use_ema, trust_pickle=trust_pickle)
    int8_model = quantize_readout(copy.deepcopy(float_model))
    state = {k: v for k, v in checkpoint["state_dict"].items() if not k.startswith("model.")}
    state.update({f"model.{k}": v.detach().clone() for k, v in int8_model.state_dict().items()})
    checkpoint["state_dict"] = state
    ema = checkpoint["macelab"].get("ema")
    if ema is not None:
        parameters = dict(int8_model.named_parameters())
        for name in ema["shadow"]:
            if name in parameters:
                ema["shadow"][name] = parameters[name].detach().clone()
    checkpoint["macelab"]["readout"] = "int8"
    checkpoint["macelab"]["quantized_from"] = str(ckpt_path)
    for key in ("optimizer_states", "lr_schedulers"):
        checkpoint.pop(key, None)
    write_atomically(out, lambda stream: torch.save(checkpoint, stream))
    return float_model, int8_model


class _Differences:
    """Sums of one test set's errors: INT8 vs float, and each vs the reference labels."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.counts = {"structures": 0, "atoms": 0, "force_components": 0}

    def _add(self, key: str, values: torch.Tensor, power: int) -> None:
        self.sums[key] = self.sums.get(key, 0.0) + float(values.detach().abs().pow(power).sum())

    def update(self, batch: Any, float_out: dict, int8_out: dict) -> None:
        f64 = torch.float64
        num_atoms = (batch.ptr[1:] - batch.ptr[:-1]).to(f64).cpu()
        e_float, e_int8 = float_out["energy"].to(f64).cpu(), int8_out["energy"].to(f64).cpu()
        f_float, f_int8 = float_out["forces"].to(f64).cpu(), int8_out["forces"].to(f64).cpu()
        self.counts["structures"] += len(num_atoms)
        self.counts["atoms"] += int(num_atoms.sum())
        self.counts["force_components"] += f_float.numel()
        for key, diff in (("int8_float", e_int8 - e_float),):
            self._energy_sums(key, diff, num_atoms)
        self._add("forces_int8_float_sq", f_int8 - f_float, 2)
        has_energy = batch.has_energy.cpu()
        reference = batch.energy.to(f64).cpu()
        for key, energy in (("float_ref", e_float), ("int8_ref", e_int8)):
            self._energy_sums(key, (energy - reference)[has_energy], num_atoms[has_energy])
        self.counts["labelled_structures"] = self.counts.get("labelled_structures", 0) + int(
            has_energy.sum()
        )
        mask = batch.has_forces[batch.batch].cpu()
        reference_f = batch.forces.to(f64).cpu()[mask]
        self.counts["labelled_force_components"] = (
            self.counts.get("labelled_force_components", 0) + reference_f.numel()
        )
        self._add("forces_float_ref_sq", f_float[mask] - reference_f, 2)
        self._add("forces_int8_ref_sq", f_int8[mask] - reference_f, 2)

    def _energy_sums(self, key: str, diff: torch.Tensor, num_atoms: torch.Tensor) -> None:
        self._add(f"energy_{key}_abs", diff, 1)
        self._add(f"energy_{key}_sq", diff, 2)
        self._add(f"energy_per_atom_{key}_abs", diff / num_atoms, 1)
        self._add(f"energy_per_atom_{key}_sq", diff / num_atoms, 2)

    def metrics(self) -> dict[str, float]:
        """meV and meV/Å; NaN where there was nothing to compare."""
        s, c = self.sums, self.counts

        def mean(key: str, count: int, root: bool) -> float:
            if count == 0 or key not in s:
                return math.nan
            value = s[key] / count
            return 1000.0 * (math.sqrt(value) if root else value)

        n, labelled = c["structures"], c.get("labelled_structures", 0)
        out: dict[str, float] = {}
        for key, count in (("int8_float", n), ("float_ref", labelled), ("int8_ref", labelled)):
            out[f"energy_{key}_mae_meV"] = mean(f"energy_{key}_abs", count, False)
            out[f"energy_{key}_rmse_meV"] = mean(f"energy_{key}_sq", count, True)
            out[f"energy_per_atom_{key}_mae_meV"] = mean(f"energy_per_atom_{key}_abs", count, False)
            out[f"energy_per_atom_{key}_rmse_meV"] = mean(f"energy_per_atom_{key}_sq", count, True)
        out["forces_int8_float_rmse_meV_per_A"] = mean(
            "forces_int8_float_sq", c["force_components"], True
        )
        for key in ("float_ref", "int8_ref"):
            out[f"forces_{key}_rmse_meV_per_A"] = mean(
                f"forces_{key}_sq", c.get("labelled_force_components", 0), True
            )
        return {**out, **{k: float(v) for k, v in c.items()}}


def compare_models(
    float_model: torch.nn.Module,
    int8_model: torch.nn.Module,
    loaders: dict[str, Any],
    *,
    precision: str = "64",
    device: str = "cpu",
    limit_batches: int | None = None,
) -> dict[str, dict[str, float]]:
    """Energies and forces of both models on each loader: :class:`_Differences` metrics."""
    float_run, context = for_inference(float_model, precision, device)
    int8_run, _ = for_inference(int8_model, precision, device)
    results = {}
    for name, loader in loaders.items():
        differences = _Differences()
        for index, batch in enumerate(loader):
            if limit_batches is not None and index >= limit_batches:
                break
            batch = batch.to(device)
            with context():
                float_out = float_run(batch, compute_forces=True)
                int8_out = int8_run(batch, compute_forces=True)
            differences.update(batch, float_out, int8_out)
        results[name] = differences.metrics()
    return results


COLUMNS = (
    ("energy_int8_float_mae_meV", "E MAE int8-float (meV)"),
    ("energy_int8_float_rmse_meV", "E RMSE int8-float (meV)"),
    ("energy_per_atom_int8_float_rmse_meV", "E RMSE int8-float (meV/atom)"),
    ("forces_int8_float_rmse_meV_per_A", "F RMSE int8-float (meV/Å)"),
    ("energy_float_ref_rmse_meV", "E RMSE float (meV)"),
    ("energy_int8_ref_rmse_meV", "E RMSE int8 (meV)"),
    ("energy_per_atom_float_ref_rmse_meV", "E RMSE float (meV/atom)"),
    ("energy_per_atom_int8_ref_rmse_meV", "E RMSE int8 (meV/atom)"),
    ("forces_float_ref_rmse_meV_per_A", "F RMSE float (meV/Å)"),
    ("forces_int8_ref_rmse_meV_per_A", "F RMSE int8 (meV/Å)"),
)


def format_comparison(results: dict[str, dict[str, float]], title: str) -> str:
    """The comparison as a markdown table, one row per test set."""
    header = ["test set", "n", *(label for _, label in COLUMNS)]
    lines = [f"### {title}", "", "| " + " | ".join(header) + " |"]
    lines.append("|" + "---|" * len(header))
    for name, metrics in results.items():
        cells = [name, str(int(metrics["structures"]))]
        cells += [_cell(metrics[key]) for key, _ in COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "int8-float: the INT8 model against the float model; float, int8: each against the "
        "reference labels (RMSE); —: the test set has no such labels.",
    ]
    return "\n".join(lines) + "\n"


def _cell(value: float) -> str:
    return "—" if math.isnan(value) else f"{value:.4g}"


def run_quantize(cfg: DictConfig) -> dict[str, dict[str, float]]:
    """Quantise ``cfg.ckpt_path``'s readout, write ``cfg.out``, compare on the test sets."""
    if str(cfg.readout) not in READOUT_FORMATS:
        raise ConfigError(
            f"readout={cfg.readout} is not a quantised format; use readout=int8 (the only one)."
        )
    trust_pickle = bool(cfg.get("trust_pickle", False))
    hparams = read_checkpoint(cfg.ckpt_path, trust_pickle=trust_pickle)["hyper_parameters"]
    plan = comparison_plan(cfg, hparams)  # checked before anything is written
    output_dir = Path(cfg.paths.output_dir)
    out = Path(cfg.out) if cfg.out else output_dir / "int8.ckpt"
    float_model, int8_model = quantize_checkpoint(
        cfg.ckpt_path, out, use_ema=cfg.use_ema, trust_pickle=trust_pickle
    )
    log.info("wrote %s", out)
    print(f"wrote {out}")
    if not cfg.compare:
        return {}
    for model in (float_model, int8_model):
        apply_runtime(model, dataclasses.replace(plan, precision_policy=None))
    datamodule, precision = _test_data(cfg, hparams, plan)
    names = list(datamodule.test_set_names)
    loaders = dict(zip(names, datamodule.test_dataloader(), strict=True))
    device = _device(str(cfg.accelerator))
    results = compare_models(
        float_model,
        int8_model,
        loaders,
        precision=precision,
        device=device,
        limit_batches=cfg.limit_test_batches,
    )
    title = f"INT8 readout of {cfg.ckpt_path} (precision {precision}, {device})"
    table = format_comparison(results, title)
    output_dir.mkdir(parents=True, exist_ok=True)
    record = {"checkpoint": str(cfg.ckpt_path), "out": str(out), "precision": precision}
    (output_dir / "quantize.json").write_text(
        json.dumps({**record, "device": device, "test_sets": results}, indent=2)
    )
    (output_dir / "quantize.md").write_text(table)
    print(table)
    return results


# what the comparison (plain calls of both models) does not use
EAGER_ONLY = {
    "cuda_graphs": "the comparison calls both models eagerly (CUDA graphs are for training and MD)",
    "compile": "the comparison calls both models eagerly (a compiled step is for training and MD)",
}


def comparison_plan(cfg: DictConfig, hparams: dict[str, Any]) -> RuntimePlan:
    """How both models of the comparison compute: the run's plan (backend, fused
    convolution, edge chunks; the old ``model.*`` names included) with the fields that the
    runtime group sets over it, and the e3nn reference where that cannot run here."""
    plan = entry_plan(cfg.get("runtime"), checkpoint_plan(hparams), unused=EAGER_ONLY)
    return runnable(plan, str(cfg.ckpt_path))


def _test_data(cfg: DictConfig, hparams: dict[str, Any], plan: RuntimePlan) -> tuple[Any, str]:
    """The checkpoint's data module (or ``cfg.data``), set up for test, and the precision
    (``runtime.precision_policy`` where set)."""
    datamodule, precision = recorded_test_data(
        cfg, hparams, hparams.get("run_config"), ", or compare=false"
    )
    if plan.precision_policy is not None:  # over the run's precision, not over precision=
        precision = inference_precision(cfg.get("precision"), plan)
    return datamodule, str(precision["name"])


def _device(accelerator: str) -> str:
    """Lightning's accelerator names (``gpu`` is ``cuda``) through the shared device check."""
    name = "cuda" if accelerator == "gpu" else accelerator
    return resolve_device(name, key="accelerator").type


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="quantize")
@user_errors_exit
def main(cfg: DictConfig) -> None:
    run_quantize(cfg)


def cli() -> None:
    """The ``macelab-quantize`` console script: ``python -m macelab.quantize`` by another name."""
    prepare_argv()
    main()


if __name__ == "__main__":
    cli()
