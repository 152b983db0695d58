"""Progressive correlation order: train with body order raised on a schedule.

``callbacks=progressive_correlation`` (conf/callbacks/progressive_correlation.yaml) with
``schedule: [[0, 1], [50, 2], [150, 3]]`` (``[epoch, order]`` pairs, or a mapping) trains
the product basis (Eq. 10-11) at correlation order 1 from epoch 0, 2 from epoch 50, 3 from
epoch 150. The model is built at its final order; the orders above the current one are
skipped (not computed), so early epochs are cheaper.

No jump at a switch: when the callback first lowers the order it sets the weights of the
skipped orders to zero; a newly switched-on order therefore starts contributing exactly
zero and learns from there (its gradient, ``U A^nu``, is not zero). Zero-initialised terms
were chosen over blending because they keep every prediction, checkpoint and evaluation
exactly consistent at no extra cost: a checkpoint evaluated with all orders switched on
gives the same predictions as in training. Checkpoints record the schedule position (the
callback's state) and resuming continues it.

Under DDP, skipped orders have no gradient: use ``trainer.strategy.find_unused_parameters
=true`` until the last switch (a clear Lightning error says so otherwise).
"""

from __future__ import annotations

from typing import Any

import lightning as L

from macelab.errors import ConfigError


class ProgressiveCorrelation(L.Callback):
    """Raise the correlation order of every layer at the epochs of ``schedule``.

    Args:
        schedule: ``[[epoch, order], ...]`` or ``{epoch: order}``; must start at epoch 0.
            Orders above a layer's built correlation are capped at it.
    """

    def __init__(self, schedule: Any) -> None:
        pairs = schedule.items() if hasattr(schedule, "items") else schedule
        steps = sorted((int(epoch), int(order)) for epoch, order in pairs)
        if not steps or steps[0][0] != 0:
            raise ConfigError(
                f"progressive correlation schedule {steps} must give the order at epoch 0, "
                "e.g. [[0, 1], [50, 2], [150, 3]] ([epoch, order] pairs)."
            )
        orders = [order for _, order in steps]
        if orders != sorted(orders) or not orders[0] >= 1 or orders[-1] > 4:
            raise ConfigError(
                f"progressive correlation schedule {steps}: orders must rise "
                "from 1 to at most 4 with the epoch."
            )
        self.schedule = steps
        self.order: int | None = None
        self._zeroed = False

    def order_at(self, epoch: int) -> int:
        return [order for start, order in self.schedule if start <= epoch][-1]

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        order = self.order_at(trainer.current_epoch)
        model = pl_module.model
        model.set_correlation(order)
        if not self._zeroed:
            self._zero_inactive(pl_module)
            self._zeroed = True
        self.order = order
        pl_module.log("train/correlation_order", float(order), batch_size=1)

    @staticmethod
    def _zero_inactive(pl_module: L.LightningModule) -> None:
        """Zero the skipped orders' weights, and their EMA averages (else the averaged model
        that is validated and saved would carry their random initial values)."""
        zeroed = []
        for product in pl_module.model.products:
            before = {id(p) for p in product.contraction.parameters() if bool(p.any())}
            product.contraction.zero_inactive_weights()
            zeroed += [id(p) for p in product.contraction.parameters() if id(p) in before]
        ema = getattr(pl_module, "ema", None)
        for name, parameter in pl_module.model.named_parameters():
            if ema is not None and id(parameter) in zeroed and not bool(parameter.any()):
                ema.shadow[name].zero_()

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        pl_module.model.set_correlation(None)  # evaluation and saved models use every order

    def state_dict(self) -> dict[str, Any]:
        return {"order": self.order, "zeroed": self._zeroed, "schedule": self.schedule}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.order = state_dict.get("order")
        self._zeroed = bool(state_dict.get("zeroed", False))
