"""The objects one app instance works with, gathered so routes get them through one dependency."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request

from app.jobs import JobManager
from app.jobstore import JobStore
from app.metrics import Metrics
from app.pool import WorkerPool
from app.registry import ModelRegistry
from app.settings import Settings


@dataclass(frozen=True)
class Services:
    settings: Settings
    registry: ModelRegistry
    store: JobStore
    jobs: JobManager
    pool: WorkerPool
    metrics: Metrics


async def services(request: Request) -> Services:
    """async, so FastAPI resolves it on the event loop instead of spending a thread on it."""
    deps: Services = request.app.state.services
    return deps
