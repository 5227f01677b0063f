"""Admin: start training jobs, follow them, cancel them (Bearer admin token)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, Query, Request, Response, UploadFile

from app.auth import require_admin
from app.jobstore import Job, JobState
from app.schemas import ErrorResponse, JobList, JobOut
from app.services import Services, services
from app.training import submit_training

router = APIRouter(
    prefix="/v1/admin",
    tags=["admin"],
    dependencies=[Depends(require_admin)],
    responses={
        401: {"model": ErrorResponse, "description": "No bearer token"},
        403: {"model": ErrorResponse, "description": "Wrong token"},
        503: {"model": ErrorResponse, "description": "Admin disabled (TSSYNTH_ADMIN_TOKEN unset)"},
    },
)
Deps = Annotated[Services, Depends(services)]


@router.post(
    "/train",
    status_code=202,
    response_model=JobOut,
    summary="Queue a training job; the model is served as a new version when it succeeds",
    responses={422: {"model": ErrorResponse, "description": "Invalid data, overrides or model name"}},
)
async def train(
    request: Request,
    response: Response,
    deps: Deps,
    model: Annotated[str, Form(description="Model name; a new version if it exists")],
    file: Annotated[UploadFile | None, File(description="Training CSV")] = None,
    dataset: Annotated[str | None, Form(description="Or: a CSV file name in the datasets directory")] = None,
    overrides: Annotated[str, Form(description='Config overrides as JSON, e.g. {"training": {"max_steps": 500}}')] = "{}",
) -> JobOut:
    job = await submit_training(deps, model, overrides, file, dataset)
    out = _out(request, job)
    response.headers["Location"] = out.url
    return out


@router.get("/jobs", response_model=JobList, summary="Training jobs, newest first")
async def list_jobs(
    request: Request,
    deps: Deps,
    state: JobState | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> JobList:
    return JobList(jobs=[_out(request, job) for job in deps.store.list_jobs(state, limit)])


@router.get(
    "/jobs/{job_id}",
    response_model=JobOut,
    summary="One job: state, stage, progress, loss, ETA, error",
    responses={404: {"model": ErrorResponse, "description": "Unknown job"}},
)
async def get_job(request: Request, job_id: str, deps: Deps) -> JobOut:
    return _out(request, deps.jobs.get(job_id))


@router.post(
    "/jobs/{job_id}/cancel",
    response_model=JobOut,
    summary="Cancel a queued job at once, or ask a running one to stop",
    responses={
        404: {"model": ErrorResponse, "description": "Unknown job"},
        409: {"model": ErrorResponse, "description": "The job already finished"},
    },
)
async def cancel_job(request: Request, job_id: str, deps: Deps) -> JobOut:
    return _out(request, deps.jobs.cancel(job_id))


def _out(request: Request, job: Job) -> JobOut:
    return JobOut.of(job, request.app.url_path_for("get_job", job_id=job.id))
