"""DDP inside a Hydra multirun job, with Lightning launching the ranks itself.

Lightning starts ranks 1..N-1 of a single-node DDP run by re-running the command line
(``_SubprocessScriptLauncher``), with ``hydra.run.dir=<HydraConfig run.dir>`` added. Inside a
local Hydra multirun that command would be the whole sweep (``-m`` and every sweep value) and
the run folder would not be the job's, and the environment variables the launcher sets
(``LOCAL_RANK``, ``MASTER_PORT``, ...) would make the next job believe its ranks already
exist. :func:`hydra_ddp_job` makes each multirun job launch like a single run: the command
is this job's overrides with ``hydra.run.dir`` = the job's folder, and the launcher's
environment and process group are cleared when the job ends.

Torchrun and SLURM (submitit included) start every rank themselves; nothing is re-run and
this has no effect there.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path

LAUNCHER_VARIABLES = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE")


def process_rank() -> int:
    """This process's global rank as the launchers announce it (0 outside distributed runs).

    The same environment variables Lightning reads (``RANK`` from torchrun, ``SLURM_PROCID``
    under srun, ``LOCAL_RANK`` from Lightning's own launcher), so that code running before
    or outside the Trainer (Hydra callbacks) agrees with it on who is rank 0.
    """
    for name in ("RANK", "LOCAL_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK"):
        value = os.environ.get(name)
        if value not in (None, ""):
            return int(value)
    return 0


def _in_hydra_multirun() -> bool:
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
    except Exception:  # not inside a Hydra job
        return False


@contextlib.contextmanager
def hydra_ddp_job(output_dir: str | Path) -> Iterator[None]:
    """Within a Hydra multirun job, let Lightning re-run this job (not the sweep) per rank."""
    if not _in_hydra_multirun() or "LOCAL_RANK" in os.environ:
        yield  # a single run, or ranks started by torchrun / SLURM / an outer launcher
        return
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict, read_write

    hydra_cfg = HydraConfig.get()
    saved_argv, saved_run_dir = list(sys.argv), hydra_cfg.run.dir
    saved_env = {name: os.environ.get(name) for name in LAUNCHER_VARIABLES}
    job_overrides = [str(o) for o in hydra_cfg.overrides.task]
    sys.argv[1:] = [o for o in job_overrides if not o.startswith("hydra.run.dir=")]
    with read_write(hydra_cfg), open_dict(hydra_cfg):
        hydra_cfg.run.dir = str(Path(output_dir).resolve())
    try:
        yield
    finally:
        sys.argv[:] = saved_argv
        with read_write(hydra_cfg), open_dict(hydra_cfg):
            hydra_cfg.run.dir = saved_run_dir
        for name, value in saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
