"""Sweeps: Hydra multirun summaries, wandb sweep support, SLURM launching."""
