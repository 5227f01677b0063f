"""Training job records in SQLite, shared by the server and its training processes.

SQLite (not memory) so the history survives restarts; and because the training child writes its
own progress and reads its own cancel flag here, the server needs no pipe to it: a crashed child
leaves a consistent record behind, and the server only has to notice that the process is gone.
Each call opens its own connection, which is what makes the store safe to use from the event loop,
worker threads and other processes alike; WAL mode keeps readers from blocking the writer.
"""

from __future__ import annotations

import json
import sqlite3
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

JobState = Literal["queued", "running", "succeeded", "failed", "cancelled"]
FINAL_STATES: tuple[JobState, ...] = ("succeeded", "failed", "cancelled")
ALL_STATES: tuple[JobState, ...] = ("queued", "running", "succeeded", "failed", "cancelled")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    model TEXT NOT NULL,
    state TEXT NOT NULL,
    source TEXT NOT NULL,
    data_path TEXT,
    overrides TEXT NOT NULL,
    created_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    stage TEXT,
    step INTEGER,
    total INTEGER,
    loss REAL,
    eta_seconds REAL,
    error TEXT,
    version INTEGER,
    cancel_requested INTEGER NOT NULL DEFAULT 0
)
"""


@dataclass(frozen=True)
class Job:
    id: str
    model: str
    state: JobState
    #: What the model is trained on, for humans: "upload:<file name>", "dataset:<name>" or "simulator".
    source: str
    #: File the training process reads (None: the built-in simulator).
    data_path: str | None
    overrides: dict[str, Any]
    created_at: float
    started_at: float | None
    finished_at: float | None
    stage: str | None
    step: int | None
    total: int | None
    loss: float | None
    eta_seconds: float | None
    error: str | None
    #: The model version the job produced (succeeded jobs only).
    version: int | None
    cancel_requested: bool


class JobStore:
    def __init__(self, path: Path):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(_SCHEMA)

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=30.0)
        db.row_factory = sqlite3.Row
        try:
            with db:  # commits on success, rolls back on error
                yield db
        finally:
            db.close()

    def create(self, model: str, source: str, data_path: str | None, overrides: dict[str, Any]) -> Job:
        job_id = uuid.uuid4().hex[:16]
        with self._connect() as db:
            db.execute(
                "INSERT INTO jobs (id, model, state, source, data_path, overrides, created_at)"
                " VALUES (?, ?, 'queued', ?, ?, ?, ?)",
                (job_id, model, source, data_path, json.dumps(overrides), time.time()),
            )
        return self.require(job_id)

    def get(self, job_id: str) -> Job | None:
        with self._connect() as db:
            row = db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return _job(row) if row is not None else None

    def require(self, job_id: str) -> Job:
        job = self.get(job_id)
        if job is None:
            raise KeyError(job_id)
        return job

    def list_jobs(self, state: JobState | None = None, limit: int = 100) -> list[Job]:
        where, args = ("WHERE state = ?", [state]) if state is not None else ("", [])
        with self._connect() as db:
            rows = db.execute(
                f"SELECT * FROM jobs {where} ORDER BY created_at DESC, rowid DESC LIMIT ?", [*args, limit]
            ).fetchall()
        return [_job(row) for row in rows]

    def oldest_queued(self) -> Job | None:
        with self._connect() as db:
            row = db.execute(
                "SELECT * FROM jobs WHERE state = 'queued' ORDER BY created_at, rowid LIMIT 1"
            ).fetchone()
        return _job(row) if row is not None else None

    def counts(self) -> dict[str, int]:
        with self._connect() as db:
            rows = db.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state").fetchall()
        counts: dict[str, int] = dict.fromkeys(ALL_STATES, 0)
        counts.update({row[0]: row[1] for row in rows})
        return counts

    def mark_running(self, job_id: str) -> bool:
        """queued -> running; False when the job left the queue meanwhile (cancelled)."""
        with self._connect() as db:
            cursor = db.execute(
                "UPDATE jobs SET state = 'running', started_at = ? WHERE id = ? AND state = 'queued'",
                (time.time(), job_id),
            )
        return cursor.rowcount == 1

    def update_progress(
        self, job_id: str, stage: str, step: int, total: int, loss: float | None, eta_seconds: float | None
    ) -> None:
        with self._connect() as db:
            # COALESCE: stages without a loss (validation) keep showing the last one reported.
            db.execute(
                "UPDATE jobs SET stage = ?, step = ?, total = ?, loss = COALESCE(?, loss), eta_seconds = ?"
                " WHERE id = ? AND state = 'running'",
                (stage, step, total, loss, eta_seconds, job_id),
            )

    def finish(
        self, job_id: str, state: JobState, error: str | None = None, version: int | None = None
    ) -> bool:
        """Move a job to a final state once; False when it already was final (first writer wins)."""
        assert state in FINAL_STATES
        with self._connect() as db:
            cursor = db.execute(
                "UPDATE jobs SET state = ?, error = ?, version = ?, finished_at = ?, eta_seconds = NULL"
                " WHERE id = ? AND state IN ('queued', 'running')",
                (state, error, version, time.time(), job_id),
            )
        return cursor.rowcount == 1

    def request_cancel(self, job_id: str) -> None:
        with self._connect() as db:
            db.execute("UPDATE jobs SET cancel_requested = 1 WHERE id = ?", (job_id,))

    def cancel_requested(self, job_id: str) -> bool:
        with self._connect() as db:
            row = db.execute("SELECT cancel_requested FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return bool(row and row[0])

    def fail_interrupted(self) -> list[str]:
        """Fail every job a previous server left queued or running; they have no process any more."""
        now = time.time()
        with self._connect() as db:
            rows = db.execute("SELECT id, state FROM jobs WHERE state IN ('queued', 'running')").fetchall()
            for row in rows:
                db.execute(
                    "UPDATE jobs SET state = 'failed', finished_at = ?, eta_seconds = NULL, error = ? WHERE id = ?",
                    (now, f"the server stopped while this job was {row['state']}; submit it again", row["id"]),
                )
        return [row["id"] for row in rows]


def _job(row: sqlite3.Row) -> Job:
    values = dict(row)
    values["overrides"] = json.loads(values["overrides"])
    values["cancel_requested"] = bool(values["cancel_requested"])
    return Job(**values)
