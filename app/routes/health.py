"""Liveness, readiness and metrics: unversioned, unauthenticated, for orchestrators and scrapers."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Response

from app.errors import ApiError
from app.metrics import CONTENT_TYPE
from app.schemas import ErrorResponse, Health, Readiness
from app.services import Services, services

router = APIRouter(tags=["health"])
Deps = Annotated[Services, Depends(services)]


@router.get("/healthz", response_model=Health, summary="Liveness: the process answers")
async def healthz() -> Health:
    return Health(status="ok")


@router.get(
    "/readyz",
    response_model=Readiness,
    summary="Readiness: at least one model is loaded",
    responses={503: {"model": ErrorResponse, "description": "No model loaded yet"}},
)
async def readyz(deps: Deps) -> Readiness:
    names = deps.registry.names()
    if not names:
        active = deps.store.list_jobs("running", limit=1) or deps.store.list_jobs("queued", limit=1)
        hint = f"; job {active[0].id} is training model '{active[0].model}'" if active else ""
        raise ApiError(503, "not_ready", f"no model is loaded yet{hint}")
    return Readiness(status="ready", models=names)


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics(deps: Deps) -> Response:
    return Response(deps.metrics.render(), media_type=CONTENT_TYPE)
