"""What runs inside a training process (started with the 'spawn' context by ``app.jobs``).

A separate process, not a thread: training holds the CPU for minutes and may crash the
interpreter (out of memory, a native-library abort); in its own process it can do neither to the
server. The child talks to the server only through the job store: it writes its progress there,
reads its cancel flag from there, and records its own failure. On success it writes the bundle to
a staging directory and exits; the server then installs it as a new version, so that only the
server ever decides version numbers.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.jobstore import JobStore
from model_core.bundle import save_bundle
from model_core.config import ConfigError, TSSynthConfig
from model_core.schema import DataError, read_csv
from model_core.simulator import simulate_plant
from model_core.train import Progress, TrainingCancelled, train

log = logging.getLogger("tssynth.training")

#: Least time between two progress writes (a stage change is always written at once).
PROGRESS_INTERVAL_S = 0.5
#: Least time between two progress lines in the log.
LOG_INTERVAL_S = 10.0
#: Least time between two reads of the cancel flag.
CANCEL_POLL_S = 0.5


@dataclass(frozen=True)
class TrainingTask:
    job_id: str
    db_path: str
    #: CSV to train on; None trains on the built-in simulator (the demo model).
    data_path: str | None
    overrides: dict[str, Any]
    #: Used unless the overrides choose ``training.device`` themselves.
    device: str
    staging_dir: str
    #: The server's pid: a child whose parent is gone stops instead of training for nobody.
    parent_pid: int


def run_training_job(task: TrainingTask) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    _limit_threads()
    store = JobStore(Path(task.db_path))
    try:
        frame = read_csv(task.data_path) if task.data_path is not None else simulate_plant()
        config = TSSynthConfig().with_overrides(_with_device(task.overrides, task.device))
        log.info("job %s: training on %d rows", task.job_id, len(frame))
        bundle = train(frame, config, progress=_Reporter(store, task.job_id), should_stop=_Stopper(store, task))
        staging = Path(task.staging_dir)
        staging.parent.mkdir(parents=True, exist_ok=True)
        save_bundle(bundle, staging)
        log.info("job %s: training finished, bundle staged at %s", task.job_id, staging)
    except TrainingCancelled:
        store.finish(task.job_id, "cancelled", "cancelled on request")
        log.info("job %s: cancelled", task.job_id)
    except (DataError, ConfigError) as exc:
        store.finish(task.job_id, "failed", str(exc))
        log.error("job %s: rejected input: %s", task.job_id, exc)
    except Exception as exc:  # the record must say why, whatever went wrong
        store.finish(task.job_id, "failed", f"training failed: {type(exc).__name__}: {exc}")
        log.exception("job %s: training failed", task.job_id)
        raise


def _with_device(overrides: dict[str, Any], device: str) -> dict[str, Any]:
    training = overrides.get("training")
    if isinstance(training, dict) and "device" in training:
        return overrides
    return {**overrides, "training": {**(training if isinstance(training, dict) else {}), "device": device}}


def _limit_threads() -> None:
    """Leave one core to the server, so the API stays responsive while a model trains."""
    import torch

    from model_core.train import default_threads

    torch.set_num_threads(default_threads())


class _Reporter:
    def __init__(self, store: JobStore, job_id: str):
        self.store, self.job_id = store, job_id
        self._stage: str | None = None
        self._last_write = self._last_log = 0.0

    def __call__(self, progress: Progress) -> None:
        now = time.monotonic()
        new_stage = progress.stage != self._stage
        if new_stage or progress.step >= progress.total or now - self._last_write >= PROGRESS_INTERVAL_S:
            self.store.update_progress(
                self.job_id, progress.stage, progress.step, progress.total, progress.loss, progress.eta_seconds
            )
            self._last_write = now
        if new_stage or now - self._last_log >= LOG_INTERVAL_S:
            loss = "" if progress.loss is None else f", loss {progress.loss:.4f}"
            eta = "" if progress.eta_seconds is None else f", about {progress.eta_seconds:.0f}s left"
            log.info("job %s: %s %d/%d%s%s", self.job_id, progress.stage, progress.step, progress.total, loss, eta)
            self._last_log = now
        self._stage = progress.stage


class _Stopper:
    def __init__(self, store: JobStore, task: TrainingTask):
        self.store, self.task = store, task
        self._last_poll, self._stop = 0.0, False

    def __call__(self) -> bool:
        now = time.monotonic()
        if not self._stop and now - self._last_poll >= CANCEL_POLL_S:
            self._last_poll = now
            self._stop = self.store.cancel_requested(self.task.job_id) or os.getppid() != self.task.parent_pid
        return self._stop
