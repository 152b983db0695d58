"""The LightningModule that trains and evaluates a MACE model.

It knows the loss, the metrics, the EMA, the optimiser and stage two; it does not know how
the model computes anything (that is :mod:`macelab.model`). Everything needed to rebuild the
model (its config and the training-set statistics) is saved in the checkpoint's
hyper-parameters, and the EMA weights travel with it, so a checkpoint alone is a usable
model (:func:`macelab.training.checkpoint.load_model`).

Exact resumption: the state that decides the rest of a run is the weights, the optimiser and
scheduler, the EMA, the epoch, how many batches of the current epoch were consumed, and the
RNG states; all of them are saved, and on resume the training sampler continues the same
epoch permutation after the batches already consumed. The running sums of the epoch's
training metrics are saved too, so that the epoch's logged averages are the same.
"""

from __future__ import annotations

import logging
import random
import re
from dataclasses import asdict
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Timer
from torch import Tensor

from macelab.data.checks import find_bad_graph
from macelab.data.neighbors import DEFAULT_MIN_DISTANCE
from macelab.data.statistics import DatasetStatistics
from macelab.errors import DataError, MacelabError
from macelab.model import build_model
from macelab.runtime import apply_runtime, plan_from_config
from macelab.training.ema import ExponentialMovingAverage
from macelab.training.loss import EnergyForcesLoss, LossWeights
from macelab.training.metrics import EnergyForceMetrics
from macelab.training.optim import (
    BudgetCosine,
    OptimizerConfig,
    SchedulerConfig,
    StageTwoConfig,
    build_optimizer,
    build_scheduler,
)
from macelab.training.steps import training_step_for

log = logging.getLogger(__name__)


class NonFiniteLossError(MacelabError):
    """The loss became NaN or inf."""


class NonFiniteDataError(NonFiniteLossError, DataError):
    """The loss became NaN or inf because of a training record (named), not the optimiser."""


class NonFinitePredictionError(MacelabError):
    """The model predicted NaN or inf for a test structure (named)."""


def _metric_key(name: str) -> str:
    """A ModuleDict-safe key for a test-set name."""
    return re.sub(r"[^0-9A-Za-z_]", "_", name)


def _rng_state() -> dict[str, Any]:
    """The RNG states of torch, numpy and Python, as types ``torch.load`` accepts safely."""
    kind, keys, position, has_gauss, cached = np.random.get_state()
    version, python_state, gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, cached],
        "python": [version, list(python_state), gauss],
    }


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    kind, keys, position, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, cached))
    version, python_state, gauss = state["python"]
    random.setstate((version, tuple(python_state), gauss))


def _prediction_record(output: dict[str, Tensor | None], batch) -> dict[str, Tensor]:
    """Predicted and reference labels of one batch, on the CPU in float64 (for plots)."""
    f64 = torch.float64
    num_atoms = batch.ptr[1:] - batch.ptr[:-1]
    record = {
        "num_atoms": num_atoms.cpu(),
        "energy": output["energy"].to(f64).cpu(),
        "energy_ref": batch.energy.to(f64).cpu(),
        "has_energy": batch.has_energy.cpu(),
        "index": batch.index.cpu(),
    }
    if output.get("forces") is not None:
        mask = batch.has_forces[batch.batch]
        record["forces"] = output["forces"][mask].to(f64).cpu()
        record["forces_ref"] = batch.forces[mask].to(f64).cpu()
    return record


def _non_finite_records(output: dict[str, Tensor | None], batch) -> Tensor:
    """``[n_graphs]`` the record index of each graph whose predicted energy or forces are
    not finite, -1 for the others (on the batch's device: no host synchronisation)."""
    bad = ~torch.isfinite(output["energy"].detach()).reshape(-1)
    forces = output.get("forces")
    if forces is not None:
        atom_bad = (~torch.isfinite(forces.detach()).all(dim=-1)).to(torch.int32)
        per_graph = torch.zeros_like(bad, dtype=torch.int32).index_add_(0, batch.batch, atom_bad)
        bad = bad | (per_graph > 0)
    return torch.where(bad, batch.index, torch.full_like(batch.index, -1))


def _gather_predictions(
    predictions: dict[str, list[dict[str, Tensor]]],
) -> dict[str, list[dict[str, Tensor]]]:
    """Every rank's prediction records, on every rank: each rank saw a shard of each test
    set, and the parity plots show whole test sets."""
    import torch.distributed as dist

    gathered: list[dict[str, list[dict[str, Tensor]]] | None] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, predictions)
    return {name: [r for part in gathered for r in part[name]] for name in predictions}


class MACELightningModule(L.LightningModule):
    """Energy/force training of a MACE model with EMA, stage two and exact resumption.

    Args:
        model: the model config (``conf/model``), a plain dict.
        statistics: :class:`DatasetStatistics` of the training set, as a dict.
        loss: ``{"energy_weight", "forces_weight", "stress_weight", "kind", "huber_delta"}``.
        optimizer: fields of :class:`OptimizerConfig`.
        scheduler: fields of :class:`SchedulerConfig`.
        stage_two: fields of :class:`StageTwoConfig`.
        ema: ``{"enabled", "decay"}``.
        nonfinite: ``"stop"`` (raise, naming the step) or ``"skip"`` (skip and count the step).
        compute_stress: also predict stress (periodic data with stress labels).
        test_set_names: names of the test loaders, in order.
        run_config: the whole resolved run config, stored so that a checkpoint alone can be
            evaluated on the data it was trained for.
        runtime: how the model computes (``conf/runtime``, :class:`RuntimePlan` fields):
            contraction backend, fused convolution, edge chunking, and each training step
            replayed from a CUDA graph per shape bucket (``cuda_graphs``,
            ``macelab.speed.train_step``; one GPU) or traced into one Inductor program per
            bucket (``compile``, ``macelab.speed.compiled_train``; one device, precision 32
            or 64).
        cuda_graphs: old name of ``runtime.cuda_graphs``
            (:func:`macelab.runtime.plan_from_config`).
        compile_step: old name of ``runtime.compile``.
    """

    def __init__(
        self,
        model: dict[str, Any],
        statistics: dict[str, Any],
        loss: dict[str, Any] | None = None,
        optimizer: dict[str, Any] | None = None,
        scheduler: dict[str, Any] | None = None,
        stage_two: dict[str, Any] | None = None,
        ema: dict[str, Any] | None = None,
        nonfinite: str = "stop",
        compute_stress: bool = False,
        test_set_names: list[str] | None = None,
        run_config: dict[str, Any] | None = None,
        runtime: dict[str, Any] | None = None,
        cuda_graphs: bool | None = None,
        compile_step: bool | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        legacy = {"cuda_graphs": cuda_graphs, "compile_step": compile_step}
        self.runtime = plan_from_config(runtime, model, legacy)
        built = build_model(model, DatasetStatistics.from_dict(statistics))
        self.model = apply_runtime(built, self.runtime)
        loss = dict(loss or {})
        self.base_weights = LossWeights(
            energy=loss.pop("energy_weight", 1.0),
            forces=loss.pop("forces_weight", 100.0),
            stress=loss.pop("stress_weight", 0.0),
        )
        self.loss_fn = EnergyForcesLoss(LossWeights(**asdict(self.base_weights)), **loss)
        self.base_energy_per_atom = self.loss_fn.energy_per_atom
        self.optimizer_config = OptimizerConfig(**(optimizer or {}))
        self.scheduler_config = SchedulerConfig(**(scheduler or {}))
        self.stage_two = StageTwoConfig(**(stage_two or {}))
        ema = dict(ema or {})
        self.ema: ExponentialMovingAverage | None = None
        if ema.get("enabled", True):
            self.ema = ExponentialMovingAverage(self.model, decay=ema.get("decay", 0.99))
        if nonfinite not in ("stop", "skip"):
            raise MacelabError(f"nonfinite must be 'stop' or 'skip', got {nonfinite!r}")
        self.nonfinite = nonfinite
        self.compute_stress = compute_stress
        self.test_set_names = list(test_set_names or [])
        self.train_metrics = EnergyForceMetrics()
        self.val_metrics = EnergyForceMetrics()
        self.test_metrics = torch.nn.ModuleDict(
            {_metric_key(name): EnergyForceMetrics() for name in self.test_set_names}
        )
        self.test_results: dict[str, dict[str, float]] = {}
        self.collect_predictions = False
        self.predictions: dict[str, list[dict[str, Tensor]]] = {}
        # test set -> per batch, the records predicted NaN/inf (-1: finite)
        self._non_finite: dict[str, list[Tensor]] = {}
        self.skipped_steps = 0
        self.batches_done_in_epoch = 0
        self._resume: tuple[int, int] | None = None
        self.lr_scheduler: torch.optim.lr_scheduler.LRScheduler | None = None
        self._pending_scheduler_state: dict[str, Any] | None = None
        self._validated_epoch = -1
        self._stage_two_started: int | None = None  # decided by stage_two.start_fraction
        self._ema_backup: dict[str, Tensor] | None = None
        self.step_strategy = training_step_for(self.runtime)  # eager, graphed or compiled

    # ----------------------------------------------------------------------------- forward
    def forward(self, batch, training: bool = False) -> dict[str, Tensor | None]:
        return self.model(
            batch,
            compute_forces=True,
            compute_stress=self.compute_stress,
            training=training,
        )

    def _evaluate(self, batch) -> dict[str, Tensor | None]:
        """Predictions for validation/test: forces need autograd, even under no_grad."""
        with torch.enable_grad():
            output = self(batch, training=False)
        return {k: (v.detach() if isinstance(v, Tensor) else v) for k, v in output.items()}

    # ---------------------------------------------------------------------------- training
    def stage_two_start(self) -> int | None:
        """The epoch stage two starts (or started) at; None while it is not decided."""
        if self.stage_two.start_epoch is not None:
            return self.stage_two.start_epoch
        return self._stage_two_started

    def in_stage_two(self) -> bool:
        start = self.stage_two_start()
        return start is not None and self.current_epoch >= start

    def budget_fraction(self, next_epoch: bool = False) -> float:
        """How much of the run's budget is spent: epochs of ``max_epochs`` or wall time of
        ``max_time`` (Lightning's Timer, which carries over a resume), the larger.
        ``next_epoch``: count the current epoch as done (at its end)."""
        trainer = self.trainer
        fractions = [0.0]
        if trainer.max_epochs is not None and trainer.max_epochs > 0:
            fractions.append((self.current_epoch + int(next_epoch)) / trainer.max_epochs)
        timer = next((c for c in trainer.callbacks if isinstance(c, Timer)), None)
        if timer is not None and timer._duration:
            fractions.append(timer.time_elapsed("train") / timer._duration)
        return max(fractions)

    def on_train_epoch_start(self) -> None:
        resume, self._resume = self._resume, None
        # Batches of this epoch already trained: those before a mid-epoch checkpoint, none
        # after an end-of-epoch one (which resumes at the next epoch) or in a new epoch.
        if resume is not None and resume[0] == self.current_epoch:
            self.batches_done_in_epoch = resume[1]
        else:
            self.batches_done_in_epoch = 0
        fraction = self.stage_two.start_fraction
        if (
            self.stage_two_start() is None
            and fraction is not None
            and self.batches_done_in_epoch == 0
            and self.budget_fraction() >= fraction
        ):
            self._stage_two_started = self.current_epoch
        weights = self.loss_fn.weights
        if self.in_stage_two():
            weights.energy = self.stage_two.energy_weight
            weights.forces = self.stage_two.forces_weight
            weights.stress = self.stage_two.stress_weight
            if self.stage_two.energy_per_atom is not None:
                self.loss_fn.energy_per_atom = self.stage_two.energy_per_atom
            if self.current_epoch == self.stage_two_start() and self.batches_done_in_epoch == 0:
                for group in self.optimizers().optimizer.param_groups:
                    group["lr"] = self.stage_two.lr
        else:
            weights.energy = self.base_weights.energy
            weights.forces = self.base_weights.forces
            weights.stress = self.base_weights.stress
            self.loss_fn.energy_per_atom = self.base_energy_per_atom

    def training_step(self, batch, batch_idx: int) -> Tensor | None:
        self.batches_done_in_epoch += 1
        terms, output = self.step_strategy(self, batch)
        loss = terms["loss"]
        if not torch.isfinite(loss):
            data_error = self._blame_data(batch, loss, batch_idx)
            if self.nonfinite == "skip":
                if data_error is not None:
                    log.warning("skipping a step: %s", data_error)
                self.skipped_steps += 1
                self.log("train/skipped_steps", float(self.skipped_steps), batch_size=1)
                return None
            if data_error is not None:
                raise data_error
            raise NonFiniteLossError(
                f"the training loss became {loss.item()} at global step {self.global_step} "
                f"(epoch {self.current_epoch}, batch {batch_idx}, records "
                f"{batch.index.tolist()} of the training set). Lower the learning rate, use a "
                "higher precision (precision=32 or 64), or set nonfinite=skip to skip such "
                "steps; no checkpoint was written from this state."
            )
        self.train_metrics.update(output, batch)
        size = batch.num_graphs
        self.log("train/loss", loss.detach(), prog_bar=True, batch_size=size)
        self.log("train/loss_energy", terms["energy"].detach(), batch_size=size)
        self.log("train/loss_forces", terms["forces"].detach(), batch_size=size)
        return loss

    def _datamodule(self):
        return getattr(self._trainer, "datamodule", None) if self._trainer else None

    def _blame_data(self, batch, loss: Tensor, batch_idx: int) -> NonFiniteDataError | None:
        """The error naming the record whose inputs or labels made the loss non-finite (NaN
        or inf values, atoms closer than ``data.min_distance``), or None if none did."""
        datamodule = self._datamodule()
        min_distance = getattr(datamodule, "min_distance", DEFAULT_MIN_DISTANCE)
        found = find_bad_graph(batch, min_distance)
        if found is None:
            return None
        graph, field, what = found
        train = getattr(datamodule, "train_dataset", None)
        return NonFiniteDataError(
            f"the training loss became {loss.item()} at global step {self.global_step} (epoch "
            f"{self.current_epoch}, batch {batch_idx}) because of this record: {what}. The "
            "learning rate is not the cause; fix or remove the record.",
            file=getattr(train, "source", None),
            record=int(batch.index[graph]),
            field=field,
        )

    def optimizer_step(self, *args, **kwargs) -> None:
        super().optimizer_step(*args, **kwargs)
        if self.ema is not None:
            self.ema.update(self.model)
        # fp16 policies: steps the loss scaler skipped for non-finite gradients.
        scaler_skips = getattr(self.trainer.precision_plugin, "skipped_steps", None)
        if scaler_skips is not None:
            self.log("train/scaler_skipped_steps", float(scaler_skips), batch_size=1)

    def on_train_epoch_end(self) -> None:
        self._log_metrics("train", self.train_metrics.compute())
        self.train_metrics.reset()
        self.log("lr", self.optimizers().optimizer.param_groups[0]["lr"])
        self.log("train/stage", 2.0 if self.in_stage_two() else 1.0)  # which loss and rate
        self._step_scheduler()

    def _step_scheduler(self) -> None:
        """Step the learning-rate schedule once per epoch (not in stage two).

        The schedule is stepped here rather than by Lightning, because Lightning skips the
        plateau step of an epoch that was resumed from a mid-epoch checkpoint, which would
        make a resumed run diverge from an uninterrupted one. The plateau schedule steps on
        the validation loss of epochs that ran validation, as mace-torch does.
        """
        if self.lr_scheduler is None or self.in_stage_two():
            return
        if isinstance(self.lr_scheduler, BudgetCosine):
            self.lr_scheduler.step(self.budget_fraction(next_epoch=True), self.current_epoch + 1)
        elif isinstance(self.lr_scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            if self._validated_epoch != self.current_epoch:
                return
            self.lr_scheduler.step(
                float(self.trainer.callback_metrics[self.scheduler_config.monitor])
            )
        else:
            self.lr_scheduler.step()

    def configure_optimizers(self):
        optimizer = build_optimizer(self.model, self.optimizer_config)
        self.lr_scheduler = build_scheduler(
            optimizer, self.scheduler_config, self.stage_two.start_fraction
        )["scheduler"]
        if self._pending_scheduler_state is not None:
            self.lr_scheduler.load_state_dict(self._pending_scheduler_state)
            self._pending_scheduler_state = None
        return optimizer

    # ----------------------------------------------------------------------- EMA switching
    def _swap_in_ema(self) -> None:
        if self.ema is None or self._ema_backup is not None:
            return
        self._ema_backup = {n: p.detach().clone() for n, p in self.model.named_parameters()}
        self.ema.copy_to(self.model)

    def _swap_out_ema(self) -> None:
        if self._ema_backup is None:
            return
        with torch.no_grad():
            for name, parameter in self.model.named_parameters():
                parameter.copy_(self._ema_backup[name])
        self._ema_backup = None

    # -------------------------------------------------------------------------- validation
    def on_validation_epoch_start(self) -> None:
        self._swap_in_ema()

    def validation_step(self, batch, batch_idx: int) -> None:
        output = self._evaluate(batch)
        terms = self.loss_fn(output, batch)
        self.val_metrics.update(output, batch)
        self.log("val/loss", terms["loss"], batch_size=batch.num_graphs, sync_dist=True)

    def on_validation_epoch_end(self) -> None:
        if not self.trainer.sanity_checking:
            self._validated_epoch = self.current_epoch
        self._swap_out_ema()
        self._log_metrics("val", self.val_metrics.compute())
        self.val_metrics.reset()

    # -------------------------------------------------------------------------------- test
    def on_test_epoch_start(self) -> None:
        self._swap_in_ema()
        self.test_results = {}
        self.predictions = {name: [] for name in self.test_set_names}
        self._non_finite = {name: [] for name in self.test_set_names}

    def test_step(self, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        name = self.test_set_names[dataloader_idx]
        output = self._evaluate(batch)
        self.test_metrics[_metric_key(name)].update(output, batch)
        self._non_finite.setdefault(name, []).append(_non_finite_records(output, batch))
        if self.collect_predictions:
            self.predictions[name].append(_prediction_record(output, batch))

    def on_test_epoch_end(self) -> None:
        self._swap_out_ema()
        for name in self.test_set_names:
            metric = self.test_metrics[_metric_key(name)]
            self.test_results[name] = metric.compute()
            metric.reset()
            self._log_metrics(f"test/{name}", self.test_results[name])
        if self.collect_predictions and self.trainer.world_size > 1:
            self.predictions = _gather_predictions(self.predictions)
        self._refuse_non_finite_predictions()

    def _refuse_non_finite_predictions(self) -> None:
        """Raise, on every rank, if any test structure got a NaN or inf prediction: metrics
        averaged over it are NaN, and a results table of NaN must not pass as a result."""
        records = {
            name: [int(r) for r in torch.cat(parts).cpu().tolist() if r >= 0] if parts else []
            for name, parts in self._non_finite.items()
        }
        if self.trainer.world_size > 1:
            records = _gather_predictions(records)
        for name in self.test_set_names:
            bad = sorted(records.get(name, []))
            if not bad:
                continue
            datamodule = self._datamodule()
            store = getattr(datamodule, "test_datasets", {}).get(name)
            source = f" ({store.source})" if store is not None else ""
            shown = ", ".join(map(str, bad[:10])) + (", ..." if len(bad) > 10 else "")
            raise NonFinitePredictionError(
                f"test set '{name}'{source}: the model predicts NaN or inf energies or forces "
                f"for {len(bad)} structure(s), first record {bad[0]} (records {shown}); its "
                "metrics would be NaN, so no results are written. Check those structures "
                "(atoms too close, elements or geometries far from the training data); if they "
                "are sound, the model's weights are not: evaluate an earlier checkpoint or "
                "use a higher precision (precision=64)."
            )

    def _log_metrics(self, prefix: str, values: dict[str, float]) -> None:
        for key, value in values.items():
            self.log(f"{prefix}/{key}", float(value), prog_bar=key == "forces_rmse_meV_per_A")

    # ------------------------------------------------------------------------- checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        for name, parameter in self.model.named_parameters():
            if not torch.isfinite(parameter).all():
                raise NonFiniteLossError(
                    f"refusing to write a checkpoint: parameter {name} is not finite at global "
                    f"step {self.global_step}. Lower the learning rate or raise the precision."
                )
        if self._ema_backup is not None:
            # Saved during validation: store the training weights, not the EMA ones.
            state = checkpoint["state_dict"]
            for name, value in self._ema_backup.items():
                state[f"model.{name}"] = value.clone()
        trainer = self._trainer
        batches_per_epoch = trainer.num_training_batches if trainer is not None else float("inf")
        checkpoint["macelab"] = {
            "ema": None if self.ema is None else self.ema.state_dict(),
            "batches_done_in_epoch": self.batches_done_in_epoch,
            # The last batch of the epoch is done: a resumed run starts the next epoch.
            "epoch_complete": self.batches_done_in_epoch >= batches_per_epoch,
            "skipped_steps": self.skipped_steps,
            "stage_two_started": self._stage_two_started,
            "lr_scheduler": None if self.lr_scheduler is None else self.lr_scheduler.state_dict(),
            "rng": _rng_state(),
            "train_metric_sums": self._train_metric_sums(),
        }

    def _train_metric_sums(self) -> dict[str, Tensor] | None:
        """The running sums of the epoch's training metrics, over all ranks, so that an epoch
        resumed mid-way logs the averages of the whole epoch. Every rank calls this (each
        dumps the checkpoint; rank 0 writes it)."""
        if self._trainer is None:
            return None
        strategy = self.trainer.strategy
        return {
            name: strategy.reduce(value.detach().clone(), reduce_op="sum").cpu()
            for name, value in self.train_metrics.metric_state.items()
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get("macelab")
        if state is None:
            raise MacelabError(
                "this checkpoint was not written by macelab's training (it has no 'macelab' "
                "section); pass a checkpoint from a macelab run folder."
            )
        if self.ema is not None and state["ema"] is not None:
            self.ema.load_state_dict(state["ema"])
        self.skipped_steps = state.get("skipped_steps", 0)
        self._stage_two_started = state.get("stage_two_started")
        self._pending_scheduler_state = state.get("lr_scheduler")
        if "batches_done_in_epoch" not in state:
            # weights and EMA only (saved weights-only or stripped): enough to evaluate;
            # train.check_resumable refuses to resume from it
            return
        self.batches_done_in_epoch = state["batches_done_in_epoch"]
        if state.get("epoch_complete", False):
            self._resume = (int(checkpoint["epoch"]) + 1, 0)
        else:
            self._resume = (int(checkpoint["epoch"]), self.batches_done_in_epoch)
        _set_rng_state(state["rng"])
        sums = state.get("train_metric_sums")
        if sums is not None:  # all on rank 0: the ranks' sums add up to them at compute()
            rank_zero = self._trainer is None or self.trainer.global_rank == 0
            for name, value in sums.items():
                target = getattr(self.train_metrics, name)
                target.copy_(value if rank_zero else torch.zeros_like(value))
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer else None
        if datamodule is not None and hasattr(datamodule, "resume_training_at"):
            datamodule.resume_training_at(*self._resume)
