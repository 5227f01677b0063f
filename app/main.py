"""The application factory: ``uvicorn app.main:create_app --factory`` or ``tssynth serve``.

Everything an app instance needs is built here from its ``Settings`` and hung on ``app.state``, so
tests can run several isolated apps in one process. Startup loads the models and resumes the job
queue (failing jobs a previous process left unfinished); shutdown stops running training processes.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

import anyio
from fastapi import FastAPI

from app.demo import bootstrap_demo
from app.errors import install_error_handlers
from app.jobs import JobManager
from app.jobstore import JobStore
from app.limits import BodyLimitMiddleware
from app.metrics import Metrics, MetricsMiddleware
from app.pool import WorkerPool
from app.registry import ModelRegistry
from app.routes import admin, diagnostics, health, models
from app.schemas import ErrorResponse
from app.services import Services
from app.settings import Settings
from model_core.bundle import load_bundle
from model_core.train import resolve_device

log = logging.getLogger(__name__)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    _configure_logging()
    store = JobStore(settings.job_db_path)
    device = resolve_device(settings.device)
    registry = ModelRegistry(settings.model_dir, partial(load_bundle, device=device))
    metrics = Metrics(store.counts)
    deps = Services(
        settings=settings,
        registry=registry,
        store=store,
        jobs=JobManager(store, registry, settings),
        pool=WorkerPool(settings.workers),
        metrics=metrics,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await anyio.to_thread.run_sync(registry.load_all)
        log.info("serving %d model(s) from %s on %s: %s", len(registry), settings.model_dir, device, registry.names())
        await deps.jobs.start()
        if not len(registry) and settings.demo_bootstrap:
            bootstrap_demo(deps.jobs, settings.default_model)
        try:
            yield
        finally:
            await deps.jobs.stop()

    app = FastAPI(
        title="tssynth",
        version="1",
        summary="Learns a multivariate industrial time series and serves synthetic sequences.",
        lifespan=lifespan,
        # Swagger UI and ReDoc load their scripts from a public CDN: a page that calls out of an ICS
        # network is not shipped. The schema itself is served at /openapi.json.
        docs_url=None,
        redoc_url=None,
        # Declared for every route so that OpenAPI shows our error shape, not FastAPI's default 422 body.
        responses={
            422: {"model": ErrorResponse, "description": "Invalid request"},
            500: {"model": ErrorResponse, "description": "Unexpected error (no details exposed)"},
        },
    )
    app.state.services = deps
    install_error_handlers(app)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_upload_bytes)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    for module in (health, models, diagnostics, admin):
        app.include_router(module.router)
    return app


def _configure_logging() -> None:
    """Our INFO lines (model loads, job progress) must reach the console under uvicorn too."""
    logger = logging.getLogger("app")
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
