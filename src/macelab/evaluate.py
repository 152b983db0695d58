"""``python -m macelab.evaluate ckpt_path=...``: test a checkpoint (or a model folder,
:mod:`macelab.training.artifact`) on every test set.

The checkpoint carries its model and its run config, so by default the data it was trained
for is evaluated; ``data=<name>`` (and any ``data.*`` override) evaluates other data. Writes
``results.json``, ``results.md``, ``predictions_<test set>.npz`` (every predicted and
reference energy and force) and ``parity_<test set>.png`` into the evaluation folder.
``trainer=ddp trainer.devices=N`` shares the test sets over N processes; the metrics are
exact sums over all of them (the same numbers as one process), written once, by rank 0.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import hydra
import lightning  # noqa: F401 (imported before Hydra's logging setup: macelab.cli.tidy_output)
from omegaconf import DictConfig, OmegaConf

from macelab._compat import lightning_loading
from macelab.analysis.parity import save_parity_plots, save_predictions
from macelab.cli import prepare_argv, progress_bar, user_errors_exit
from macelab.config import CONFIG_DIR
from macelab.precision import apply_precision, default_dtype, trainer_precision_kwargs
from macelab.runtime import (
    RuntimePlan,
    entry_plan,
    inference_precision,
    runnable,
    without_legacy_keys,
)
from macelab.training.artifact import is_artifact, load_artifact
from macelab.training.callbacks import EpochProgress
from macelab.training.checkpoint import (
    checkpoint_plan,
    read_checkpoint,
    recorded_test_data,
    stored_dtype,
)
from macelab.training.module import MACELightningModule
from macelab.training.results import paper_results, write_results
from macelab.training.scaling import warn_if_oversubscribed

log = logging.getLogger("macelab.evaluate")


def run_evaluation(cfg: DictConfig) -> dict[str, dict[str, Any]]:
    """Evaluate ``cfg.ckpt_path`` on its test sets; return the metrics per test set."""
    import lightning as L

    output_dir = Path(cfg.paths.output_dir)
    trust_pickle = bool(cfg.get("trust_pickle", False))
    artifact_model = None
    if is_artifact(cfg.ckpt_path):  # a model folder: model.yaml + model.safetensors
        artifact_model, artifact = load_artifact(cfg.ckpt_path)
        hparams = {"model": artifact["model"], "statistics": artifact["statistics"]}
        saved = OmegaConf.create(artifact.get("run") or {})
        dtype = next(artifact_model.parameters()).dtype
    else:
        checkpoint = read_checkpoint(cfg.ckpt_path, trust_pickle=trust_pickle)
        hparams = checkpoint["hyper_parameters"]
        saved = OmegaConf.create(hparams.get("run_config") or {})
        dtype = stored_dtype(checkpoint)

    datamodule, precision_cfg = recorded_test_data(cfg, hparams, saved, "")
    # how the model computes: the run's kernels, with what the runtime group sets over them;
    # a precision policy goes through the precision plugin, as in training
    plan = evaluation_plan(cfg, hparams)
    if plan.precision_policy is not None:  # over the run's precision, not over precision=
        precision_cfg = inference_precision(cfg.get("precision"), plan)
    runtime_args = {
        "model": without_legacy_keys(hparams["model"]),
        "runtime": dataclasses.replace(plan, precision_policy=None).to_dict(),
        "cuda_graphs": None,  # old names of the plan's steps, in older checkpoints
        "compile_step": None,
    }
    if artifact_model is not None:  # its weights are the ones to evaluate (EMA or not)
        with default_dtype(dtype):
            module = MACELightningModule(
                statistics=hparams["statistics"],
                test_set_names=list(datamodule.test_set_names),
                ema={"enabled": False},
                **runtime_args,
            )
        module.model.load_state_dict(artifact_model.state_dict())
    else:
        load = MACELightningModule.load_from_checkpoint
        with default_dtype(dtype), lightning_loading(load, trust_pickle) as safe:
            module = load(
                cfg.ckpt_path,
                map_location="cpu",
                **safe,  # weights only unless trust_pickle (docs/security.md)
                test_set_names=list(datamodule.test_set_names),
                ema={"enabled": cfg.use_ema, "decay": 0.99},
                **runtime_args,
            )
    module.collect_predictions = True  # predictions_<set>.npz, and the plots
    devices = _devices(cfg)
    trainer = L.Trainer(
        **devices,
        **trainer_precision_kwargs(apply_precision(precision_cfg, _device(devices["accelerator"]))),
        logger=False,
        inference_mode=False,
        use_distributed_sampler=False,
        enable_model_summary=False,
        enable_progress_bar=progress_bar(),
        callbacks=[EpochProgress(logger=log.name)],  # a line per test set, in files too
        default_root_dir=str(output_dir),
        limit_test_batches=cfg.get("limit_test_batches"),
    )
    warn_if_oversubscribed(trainer)
    trainer.test(module, datamodule=datamodule, verbose=False)
    results = module.test_results
    if not trainer.is_global_zero:
        return results
    benchmark = cfg.get("benchmark") or saved.get("benchmark")
    table = write_results(
        output_dir, results, paper_results(benchmark), title=f"evaluation of {cfg.ckpt_path}"
    )
    for path in save_predictions(module.predictions, output_dir):
        log.info("wrote %s", path)
    if cfg.plots:
        for path in save_parity_plots(module.predictions, output_dir):
            log.info("wrote %s", path)
    print(table)
    return results


# what the evaluation's test loop (eager, Lightning's) does not use
EAGER_ONLY = {
    "cuda_graphs": "evaluation runs each test batch eagerly (CUDA graphs are for training and MD)",
    "compile": "evaluation runs each test batch eagerly (a compiled step is for training and MD)",
}


def evaluation_plan(cfg: DictConfig, hparams: dict[str, Any]) -> RuntimePlan:
    """How the evaluated model computes: the run's plan (its backend, fused convolution
    and edge chunks, the old ``model.*`` names included), with the fields the runtime group
    sets over it, and the e3nn reference where that cannot run here (logged)."""
    plan = entry_plan(cfg.get("runtime"), checkpoint_plan(hparams), unused=EAGER_ONLY)
    return runnable(plan, str(cfg.ckpt_path))


def _devices(cfg: DictConfig) -> dict[str, Any]:
    """Accelerator, devices, nodes and strategy: one device, or a trainer config's DDP.

    ``trainer=ddp`` (and its ``trainer.devices`` / ``trainer.num_nodes``) runs the test
    stage on several processes; the top-level ``accelerator`` wins unless it is ``auto``.
    """
    trainer_cfg = cfg.get("trainer")
    if trainer_cfg is None:
        return {"accelerator": cfg.accelerator, "devices": 1}
    from hydra.utils import instantiate

    accelerator = cfg.accelerator
    if str(accelerator) == "auto":
        accelerator = trainer_cfg.get("accelerator", "auto")
    strategy = trainer_cfg.get("strategy", "auto")
    return {
        "accelerator": accelerator,
        "devices": trainer_cfg.get("devices", 1),
        "num_nodes": trainer_cfg.get("num_nodes", 1),
        "strategy": instantiate(strategy) if OmegaConf.is_dict(strategy) else strategy,
    }


def _device(accelerator: str) -> str:
    """Where loss scaling of a policy would run (evaluation does not scale, but the plugin
    needs a device type): ``cpu`` for accelerator=cpu, else ``cuda`` if present."""
    import torch

    if str(accelerator) == "cpu" or not torch.cuda.is_available():
        return "cpu"
    return "cuda"


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="evaluate")
@user_errors_exit
def main(cfg: DictConfig) -> None:
    run_evaluation(cfg)


def cli() -> None:
    """The ``macelab-evaluate`` console script: ``python -m macelab.evaluate`` by another name."""
    prepare_argv()
    main()


if __name__ == "__main__":
    cli()
