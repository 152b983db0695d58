"""Training: the LightningModule around a MACE model, its loss, metrics, EMA and schedules."""
