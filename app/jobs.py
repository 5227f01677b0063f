"""Scheduling of training jobs: a queue in SQLite, a few 'spawn' processes, installation of results.

The event loop only starts processes and watches them (a poll every quarter second); it never
trains. At most ``training_slots`` processes run at once and further jobs wait in the queue. When a
process ends, the record it left decides what happens: a staged bundle becomes the model's next
version and is hot-swapped into the registry; a process that died without saying why is failed
with its exit code.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import shutil
import time
import uuid
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

import anyio

from app.errors import ApiError
from app.jobstore import FINAL_STATES, Job, JobStore
from app.registry import ModelRegistry
from app.settings import Settings
from app.train_worker import TrainingTask, run_training_job
from model_core.bundle import BundleError, is_bundle_dir, load_bundle

log = logging.getLogger(__name__)

#: Time a running job has to honour a cancel request before its process is terminated.
CANCEL_GRACE_S = 30.0
_POLL_S = 0.25


class JobManager:
    def __init__(self, store: JobStore, registry: ModelRegistry, settings: Settings):
        self.store, self.registry, self.settings = store, registry, settings
        self._context = multiprocessing.get_context("spawn")
        self._running: dict[str, BaseProcess] = {}
        self._cancel_deadline: dict[str, float] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def uploads_dir(self) -> Path:
        return self.settings.model_dir / ".uploads"

    @property
    def staging_dir(self) -> Path:
        return self.settings.model_dir / ".staging"

    async def start(self) -> None:
        for job_id in self.store.fail_interrupted():
            log.warning("job %s was interrupted by a server stop and is marked failed", job_id)
        # Leftovers of interrupted jobs: staged bundles nobody will install, uploads nobody will read.
        shutil.rmtree(self.staging_dir, ignore_errors=True)
        shutil.rmtree(self.uploads_dir, ignore_errors=True)
        self._task = asyncio.create_task(self._supervise(), name="tssynth-job-supervisor")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._reap()  # a job that finished just before the stop is still installed
        for job_id, process in list(self._running.items()):
            process.terminate()
            await anyio.to_thread.run_sync(process.join, 10.0)
            self.store.finish(job_id, "failed", "the server shut down while this job was running; submit it again")
            self._cleanup(job_id)
        self._running.clear()

    def save_upload(self, content: bytes) -> Path:
        """Keep an accepted upload until its job has run (the training process reads it from disk)."""
        self.uploads_dir.mkdir(parents=True, exist_ok=True)
        path = self.uploads_dir / f"{uuid.uuid4().hex}.csv"
        path.write_bytes(content)
        return path

    def submit(self, model: str, source: str, data_path: Path | None, overrides: dict[str, Any]) -> Job:
        job = self.store.create(model, source, str(data_path) if data_path else None, overrides)
        log.info("job %s queued: train model %s on %s", job.id, model, source)
        self._wake.set()
        return job

    def cancel(self, job_id: str) -> Job:
        job = self.get(job_id)
        if job.state in FINAL_STATES:
            raise ApiError(409, "job_finished", f"job {job_id} is already {job.state}", {"state": job.state})
        if job.state == "queued" and self.store.finish(job_id, "cancelled", "cancelled before it started"):
            self._cleanup(job_id)
        else:
            self.store.request_cancel(job_id)
            self._cancel_deadline.setdefault(job_id, time.monotonic() + CANCEL_GRACE_S)
        self._wake.set()
        return self.get(job_id)

    def get(self, job_id: str) -> Job:
        job = self.store.get(job_id)
        if job is None:
            raise ApiError(404, "job_not_found", f"no job with id '{job_id}'")
        return job

    async def _supervise(self) -> None:
        while True:
            try:
                await self._reap()
                self._start_queued()
            except Exception:  # the supervisor must outlive any one bad job
                log.exception("job supervisor error")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=_POLL_S)
            self._wake.clear()

    def _start_queued(self) -> None:
        while len(self._running) < self.settings.training_slots:
            job = self.store.oldest_queued()
            if job is None:
                return
            if not self.store.mark_running(job.id):
                continue
            task = TrainingTask(
                job_id=job.id,
                db_path=str(self.store.path),
                data_path=job.data_path,
                overrides=job.overrides,
                device=self.settings.device,
                staging_dir=str(self._staged(job.id)),
                parent_pid=os.getpid(),
            )
            process = self._context.Process(
                target=run_training_job, args=(task,), name=f"tssynth-train-{job.id}", daemon=True
            )
            process.start()
            self._running[job.id] = process
            log.info("job %s started (pid %s)", job.id, process.pid)

    async def _reap(self) -> None:
        for job_id, process in list(self._running.items()):
            if process.is_alive():
                deadline = self._cancel_deadline.get(job_id)
                if deadline is not None and time.monotonic() > deadline:
                    log.warning("job %s ignored its cancel request; terminating pid %s", job_id, process.pid)
                    process.terminate()
                    self.store.finish(job_id, "cancelled", "cancelled on request (the process was terminated)")
                continue
            process.join()
            del self._running[job_id]
            self._cancel_deadline.pop(job_id, None)
            await self._finalize(job_id, process.exitcode)

    async def _finalize(self, job_id: str, exitcode: int | None) -> None:
        job = self.store.require(job_id)
        staged = self._staged(job_id)
        try:
            if job.state != "running":
                log.info("job %s ended: %s", job_id, job.state)
            elif exitcode == 0 and is_bundle_dir(staged):
                await self._install(job, staged)
            else:
                self.store.finish(job_id, "failed", f"the training process exited unexpectedly (exit code {exitcode})")
                log.error("job %s: training process died with exit code %s", job_id, exitcode)
        finally:
            self._cleanup(job_id)

    async def _install(self, job: Job, staged: Path) -> None:
        version = self.registry.next_version(job.model)
        target = self.settings.model_dir / job.model / f"v{version}"
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            staged.rename(target)
        except OSError as exc:
            self._fail_install(job, target, exc)
            return
        try:
            bundle = await anyio.to_thread.run_sync(load_bundle, target)
        except (BundleError, OSError, ValueError) as exc:
            shutil.rmtree(target, ignore_errors=True)  # a version that cannot load must not shadow later ones
            self._fail_install(job, target, exc)
            return
        self.registry.install(job.model, version, bundle, target)
        self.store.finish(job.id, "succeeded", version=version)
        log.info("job %s succeeded: model %s v%d is now served", job.id, job.model, version)

    def _fail_install(self, job: Job, target: Path, exc: Exception) -> None:
        self.store.finish(job.id, "failed", f"the trained model could not be installed: {exc}")
        log.error("job %s: installing %s failed: %s", job.id, target, exc)

    def _staged(self, job_id: str) -> Path:
        return self.staging_dir / job_id

    def _cleanup(self, job_id: str) -> None:
        shutil.rmtree(self._staged(job_id), ignore_errors=True)
        job = self.store.get(job_id)
        if job is not None and job.data_path and Path(job.data_path).parent == self.uploads_dir:
            Path(job.data_path).unlink(missing_ok=True)
