"""``python -m macelab.train``: train a MACE model, then test it and print the paper's table.

A thin Hydra app (``conf/train.yaml``): compose the config, build the data module, the
LightningModule, callbacks, loggers and trainer from it, fit, test, and write
``results.json`` / ``results.md`` into the run folder. The logic lives in
:func:`fit_and_test` / :func:`run_training`, which tests call without Hydra's command line.
The task function returns the metric named by ``optimized_metric`` (``hparams_search=...``
sweepers such as Optuna minimise it).
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra
import lightning  # noqa: F401 (imported before Hydra's logging setup: macelab.cli.tidy_output)
import torch
from omegaconf import DictConfig, OmegaConf, open_dict

from macelab._compat import e3nn_torchscript, lightning_loading
from macelab.cli import prepare_argv, progress_bar, user_errors_exit
from macelab.config import CONFIG_DIR, check_types, to_dict
from macelab.data.datamodule import MACEDataModule
from macelab.errors import ConfigError, MacelabError
from macelab.model.mace import MACE
from macelab.precision import (
    apply_precision,
    default_dtype,
    parameter_dtype,
    trainer_precision_kwargs,
)
from macelab.runtime import plan_from_config, without_legacy_keys
from macelab.sweeps.launching import hydra_ddp_job
from macelab.training import finetune
from macelab.training.checkpoint import check_compatible, check_resumable
from macelab.training.module import MACELightningModule
from macelab.training.results import paper_results, write_results
from macelab.training.scaling import (
    scale_training,
    silence_synced_metric_warnings,
    warn_if_oversubscribed,
)

log = logging.getLogger("macelab.train")


@dataclass
class TrainingOutcome:
    """What a training run measured.

    Attributes:
        results: the test metrics per test set (``results.json``).
        metrics: every number a search can optimise, by name: the metrics logged during
            fitting (``val/forces_rmse_meV_per_A``, ``train/loss``, ...; the checkpoint
            monitor's value is its best over the run, the score of the ``best.ckpt`` that was
            tested, the others their last value) and the test metrics as
            ``test/<test set>/<metric>``.
    """

    results: dict[str, dict[str, Any]]
    metrics: dict[str, float]


def run_training(cfg: DictConfig) -> dict[str, dict[str, Any]]:
    """Fit and test as ``cfg`` says; return the test metrics per test set."""
    return fit_and_test(cfg).results


def fit_and_test(cfg: DictConfig) -> TrainingOutcome:
    """Fit and test as ``cfg`` says; return the test results and the fitting metrics."""
    import lightning as L
    import torch
    from hydra.utils import instantiate

    check_optimized_metric(cfg.get("optimized_metric"))
    output_dir = Path(cfg.paths.output_dir)
    check_config_types(cfg)
    if cfg.get("cpu_threads"):
        torch.set_num_threads(int(cfg.cpu_threads))
    L.seed_everything(cfg.seed, workers=True)
    accelerator = str(cfg.trainer.get("accelerator", "auto"))
    on_cpu = accelerator == "cpu" or not torch.cuda.is_available()
    trainer_precision = apply_precision(cfg.precision, "cpu" if on_cpu else "cuda")

    # Fine-tuning: the pretrained model is loaded first, so that without pretrained.refit_e0s
    # its E0s are the data's (the new data then needs no isolated-atom configurations).
    pretrained_cfg = cfg.get("pretrained")
    pretrained = finetune.load_pretrained_model(pretrained_cfg) if pretrained_cfg else None
    refit = bool(pretrained_cfg.get("refit_e0s", True)) if pretrained_cfg else True
    if pretrained is not None and not refit:
        with open_dict(cfg):
            cfg.data.e0s = finetune.pretrained_e0s(pretrained)

    datamodule = instantiate(cfg.data)
    datamodule.prepare_data()
    datamodule.setup("fit")

    # Resolved first: the loggers continue the resumed run's metrics (conf/logger/*.yaml read
    # ckpt_path), and a checkpoint that cannot be resumed stops the run before it starts.
    ckpt_path = resolve_ckpt_path(cfg.get("ckpt_path"), output_dir)
    trust_pickle = bool(cfg.get("trust_pickle", False))
    if ckpt_path is not None:
        check_resumable(ckpt_path, trust_pickle=trust_pickle)
        check_compatible(
            ckpt_path,
            to_dict(cfg.model),
            data_elements=datamodule.train_dataset.elements(),
            data_source=datamodule.train_dataset.source,
            trust_pickle=trust_pickle,
        )
        with open_dict(cfg):
            cfg.ckpt_path = ckpt_path

    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c is not None]
    loggers = [instantiate(c) for c in (cfg.get("logger") or {}).values() if c is not None]
    precision_kwargs = trainer_precision_kwargs(trainer_precision)
    plugins = list(precision_kwargs.pop("plugins", []))
    if cfg.get("checkpoint_io") is not None:
        plugins.append(instantiate(cfg.checkpoint_io))
    trainer: L.Trainer = instantiate(
        cfg.trainer,
        enable_progress_bar=progress_bar(cfg.trainer.get("enable_progress_bar", "auto")),
        callbacks=callbacks,
        logger=loggers or False,
        plugins=plugins or None,
        **precision_kwargs,
    )
    warn_if_oversubscribed(trainer)
    # Under DDP the global batch is data.batch_size x world size; the learning rate follows
    # training.optimizer.lr_scaling (see macelab.training.scaling).
    training, scaling = scale_training(
        to_dict(cfg.training), trainer.world_size, int(cfg.data.batch_size)
    )
    if trainer.world_size > 1:
        silence_synced_metric_warnings()
    # Build the model in the dtype its weights are kept in, so that a checkpoint's float64
    # weights are never rounded through float32 on the way back in.
    # how the model computes: conf/runtime, with the old model.* and training.* keys mapped
    runtime = plan_from_config(cfg.get("runtime"), cfg.model, cfg.training)
    for key in ("cuda_graphs", "compile_step"):  # old names, now in runtime
        training.pop(key, None)
    model_cfg = without_legacy_keys(cfg.model)
    if pretrained is not None:
        pretrained = finetune.select_elements(pretrained_cfg, pretrained, datamodule.statistics)
        model_cfg = finetune.model_config(pretrained, datamodule.statistics, refit)
    with (
        default_dtype(parameter_dtype(cfg.precision)),
        e3nn_torchscript(
            use_torchscript(cfg.get("e3nn_torchscript", "auto"), on_cpu, trainer_precision)
        ),
    ):
        module = MACELightningModule(
            model=model_cfg,
            statistics=datamodule.statistics.to_dict(),
            test_set_names=list(datamodule.test_set_names),
            run_config=to_dict(cfg),
            runtime=runtime.to_dict(),
            **training,
        )
    if pretrained is not None:
        counts = finetune.initialise(module, pretrained, list(cfg.pretrained.get("freeze") or []))
        log.info("fine-tuning from a pretrained model: %s", counts)
    num_parameters = sum(p.numel() for p in module.model.parameters())
    log.info("%s", datamodule.summary())
    log.info("model: %s parameters", f"{num_parameters:,}")
    log.info("scaling: %s", scaling)
    for logger in loggers:
        logger.log_hyperparams(
            {**to_dict(cfg), "num_parameters": num_parameters, "scaling": scaling}
        )

    if ckpt_path is not None:  # the model this run built has the checkpoint's elements
        check_compatible(
            ckpt_path,
            to_dict(cfg.model),
            atomic_numbers=module.model.elements.atomic_numbers.tolist(),
            trust_pickle=trust_pickle,
        )
    with hydra_ddp_job(output_dir):  # DDP ranks of a multirun job re-run this job only
        started = time.perf_counter()
        with lightning_loading(trainer.fit, trust_pickle) as weights_only:  # docs/security.md
            trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path, **weights_only)
        train_seconds = time.perf_counter() - started
        fit_metrics = _fit_metrics(trainer)

        best = getattr(trainer.checkpoint_callback, "best_model_path", "") or None
        if datamodule.test_set_names:  # data=xyz without data.test_files has none
            with lightning_loading(trainer.test, trust_pickle) as weights_only:
                trainer.test(
                    module, datamodule=datamodule, ckpt_path=best, verbose=False, **weights_only
                )
    results = module.test_results
    if trainer.is_global_zero:
        paper = paper_results(cfg.get("benchmark"))
        title = f"{cfg.task_name}: test sets"
        table = write_results(output_dir, results, paper, title, note=cfg.get("results_note"))
        info = {
            "train_seconds": train_seconds,
            "num_parameters": num_parameters,
            "global_step": trainer.global_step,
            "epochs": trainer.current_epoch,
            "best_checkpoint": best,
            "skipped_steps": module.skipped_steps,
            "peak_memory_MiB": _peak_memory(module.device),
            **scaling,
            "cluster_environment": _cluster_environment(trainer),
        }
        (output_dir / "run_info.json").write_text(json.dumps(info, indent=2) + "\n")
        print(table)
    test_metrics = {
        f"test/{name}/{key}": float(value)
        for name, entry in results.items()
        for key, value in entry.items()
        if isinstance(value, int | float)
    }
    return TrainingOutcome(results=results, metrics={**fit_metrics, **test_metrics})


def _peak_memory(device: torch.device) -> dict[str, float] | None:
    """This process's peak GPU memory (MiB): tensors allocated, and reserved by the caching
    allocator (CUDA-graph pools included); None off the GPU."""
    if device.type != "cuda":
        return None
    return {
        "allocated": torch.cuda.max_memory_allocated(device) / 2**20,
        "reserved": torch.cuda.max_memory_reserved(device) / 2**20,
    }


def _fit_metrics(trainer: Any) -> dict[str, float]:
    """The scalar metrics logged while fitting; the checkpoint monitor's at its best."""
    metrics = {}
    for name, value in trainer.callback_metrics.items():
        try:
            metrics[name] = float(value)
        except (TypeError, ValueError, RuntimeError):  # not a scalar
            continue
    checkpoint = trainer.checkpoint_callback
    score = getattr(checkpoint, "best_model_score", None)
    if score is not None and getattr(checkpoint, "monitor", None):
        metrics[checkpoint.monitor] = float(score)
    return metrics


# Where the names of the metrics a run logs start (macelab.training.module, the callbacks).
METRIC_PREFIXES = ("train/", "val/", "test/", "time/", "lr")


def check_optimized_metric(name: str | None) -> None:
    """Refuse, before any training, an ``optimized_metric`` no run can log (a typo would
    otherwise fail every trial of a search after it trained)."""
    if name in (None, "") or str(name).startswith(METRIC_PREFIXES):
        return

    raise ConfigError(
        f"optimized_metric={name} is not a metric a run logs: name one that starts with "
        f"{', '.join(METRIC_PREFIXES)}, e.g. val/forces_rmse_meV_per_A or "
        "test/test_MD_300K/forces_rmse_meV_per_A (or null)."
    )


def optimized_metric(metrics: dict[str, float], name: str | None) -> float | None:
    """The value of the metric ``name`` (``optimized_metric`` in the config) for a sweeper
    to minimise or maximise; None when no metric is named. A value that is not finite (a
    diverged run) is returned as it is, with a warning."""
    if name in (None, ""):
        return None
    if name not in metrics:
        known = ", ".join(sorted(metrics)) or "none"
        raise ConfigError(
            f"optimized_metric={name} was not logged by this run; set optimized_metric to one "
            f"of: {known}."
        )
    value = metrics[name]
    if not math.isfinite(value):
        log.warning("optimized_metric %s is %s", name, value)
    return value


def use_torchscript(setting: Any, on_cpu: bool, trainer_precision: Any) -> bool:
    """``e3nn_torchscript``: true, false, or ``auto``: off on a CPU in plain float32/float64
    (what it costs there: conf/train.yaml), on otherwise, autocast included (e3nn's plain
    ``torch.fx`` code mixes dtypes in ``tensordot`` under autocast; the scripted code not)."""
    if str(setting).lower() == "auto":
        plain = isinstance(trainer_precision, str) and trainer_precision in ("32-true", "64-true")
        return not (on_cpu and plain)
    if isinstance(setting, bool):
        return setting

    raise ConfigError(f"e3nn_torchscript={setting!r}; choose auto, true or false.")


def check_config_types(cfg: DictConfig) -> None:
    """Refuse a model or data value of the wrong type (``model.channels=abc``) before any
    data is read, with a message naming the key and the value."""
    model = {key: value for key, value in to_dict(cfg.model).items() if value is not None}
    check_types(model, MACE.__init__, "model")  # null: taken from the data's statistics
    if cfg.data.get("_target_") == "macelab.data.datamodule.MACEDataModule":
        check_types(to_dict(cfg.data), MACEDataModule.__init__, "data")


def _cluster_environment(trainer: Any) -> str | None:
    """The name of the Lightning cluster environment of a distributed run (None for one
    device): who started the ranks (LightningEnvironment: Lightning itself;
    TorchElasticEnvironment: torchrun; SLURMEnvironment: srun); see docs/scaling.md."""
    environment = getattr(trainer.strategy, "cluster_environment", None)
    return None if environment is None else type(environment).__name__


def resolve_ckpt_path(ckpt_path: str | None, output_dir: Path) -> str | None:
    """``last`` means this run folder's ``checkpoints/last.ckpt``; a folder means its last."""
    if ckpt_path in (None, "", "null"):
        return None
    path = Path(str(ckpt_path))
    if str(ckpt_path) == "last":
        path = output_dir / "checkpoints" / "last.ckpt"
    elif path.is_dir():
        path = path / "checkpoints" / "last.ckpt" if (path / "checkpoints").is_dir() else path
        path = path / "last.ckpt" if path.is_dir() else path

    if not path.is_file():
        raise MacelabError(
            f"no checkpoint to resume from at {path}; to resume a run, pass its folder as "
            "hydra.run.dir=<run folder> with ckpt_path=last, or give a .ckpt file."
        )
    return str(path)


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
@user_errors_exit
def main(cfg: DictConfig) -> float | None:
    """Train and test; return the value of ``optimized_metric`` (None if not set)."""
    log.debug("config:\n%s", OmegaConf.to_yaml(cfg))
    outcome = fit_and_test(cfg)
    return optimized_metric(outcome.metrics, cfg.get("optimized_metric"))


def cli() -> None:
    """The ``macelab-train`` console script: ``python -m macelab.train`` by another name."""
    prepare_argv()
    main()


if __name__ == "__main__":
    cli()
