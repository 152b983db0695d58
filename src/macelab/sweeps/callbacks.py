"""A Hydra callback that records each job's outcome and keeps the sweep summary current.

Hydra runs the remaining jobs of a multirun when one fails but then never calls
``on_multirun_end``, so the summary is rebuilt after every job: it always lists every job
that has ended, failures included.

Under DDP every rank runs the Hydra job; only rank 0 writes (see
:func:`macelab.sweeps.launching.process_rank`).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig

from macelab.sweeps.launching import process_rank
from macelab.sweeps.summary import STATUS_FILE, write_summary

log = logging.getLogger(__name__)


class SweepSummaryCallback(Callback):
    """Write ``job_status.json`` per job; in a multirun, refresh ``summary.csv/md``."""

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        if process_rank() != 0:
            return
        output_dir = Path(config.hydra.runtime.output_dir)
        status: dict[str, Any] = {"status": job_return.status.name}
        if job_return.status == JobStatus.FAILED:
            error = job_return._return_value  # the exception Hydra caught
            status["error"] = f"{type(error).__name__}: {error}"
        output_dir.mkdir(parents=True, exist_ok=True)
        (output_dir / STATUS_FILE).write_text(json.dumps(status) + "\n")
        if config.hydra.mode == RunMode.MULTIRUN:
            self._refresh(config)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if process_rank() == 0:
            self._refresh(config)

    @staticmethod
    def _refresh(config: DictConfig) -> None:
        try:
            _, md_path = write_summary(config.hydra.sweep.dir)
            log.info("sweep summary: %s", md_path)
        except OSError as error:  # never fail a job because the summary could not be written
            log.warning("could not write the sweep summary: %s", error)
