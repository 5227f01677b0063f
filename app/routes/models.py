"""Model metadata, generation and the streamed CSV export."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query
from fastapi.responses import StreamingResponse

from app import generation
from app.auth import require_api_token
from app.registry import ServedModel
from app.schemas import (
    ErrorResponse,
    GenerateRequest,
    GenerateResponse,
    ModelDetail,
    ModelList,
    ModelSummary,
    Sampler,
    SchemaOut,
)
from app.services import Services, services

router = APIRouter(
    prefix="/v1/models",
    tags=["models"],
    dependencies=[Depends(require_api_token)],
    responses={404: {"model": ErrorResponse, "description": "Unknown model"}},
)
Deps = Annotated[Services, Depends(services)]


@router.get("", response_model=ModelList, summary="Every served model")
async def list_models(deps: Deps) -> ModelList:
    return ModelList(models=[_summary(served) for served in deps.registry.all()])


@router.get("/{name}", response_model=ModelDetail, summary="One model: schema, config, training and validation")
async def get_model(name: str, deps: Deps) -> ModelDetail:
    served = deps.registry.get(name)
    manifest = served.bundle.manifest
    return ModelDetail(
        **_summary(served).model_dump(),
        schema=SchemaOut.model_validate(served.bundle.schema.model_dump()),
        config=served.bundle.config.model_dump(),
        training=manifest.get("training", {}),
        validation=manifest.get("validation", {}),
        validation_rows=manifest.get("validation_rows"),
        data_sha256=manifest.get("data_sha256"),
        package_version=manifest.get("package_version"),
    )


@router.post(
    "/{name}/generate",
    response_model=GenerateResponse,
    summary="Generate synthetic sequences",
    responses={422: {"model": ErrorResponse, "description": "Invalid request or a limit exceeded"}},
)
async def generate(name: str, body: GenerateRequest, deps: Deps) -> GenerateResponse:
    served = deps.registry.get(name)  # this object, hence this version, serves the whole request
    plan = generation.plan(
        served.bundle, deps.settings, body.n_sequences, body.seq_len, body.seed, body.sampler, body.steps,
        max_sequences=deps.settings.max_sequences,
    )
    frame = await deps.pool.run(generation.generate_frame, served.bundle, plan)
    deps.metrics.rows.labels(name).inc(len(frame))
    return generation.response(name, served.version, served.bundle, plan, frame, body.layout)


@router.get(
    "/{name}/export.csv",
    summary="Stream sequences as a long-format CSV",
    response_class=StreamingResponse,
    responses={
        200: {"content": {"text/csv": {}}, "description": "sequence_id, step, [timestamp], features"},
        422: {"model": ErrorResponse, "description": "Invalid request or a limit exceeded"},
    },
)
async def export_csv(
    name: str,
    deps: Deps,
    n_sequences: Annotated[int, Query(ge=1, description="Rows = n_sequences x seq_len, at most TSSYNTH_MAX_EXPORT_ROWS")] = 1,
    seq_len: Annotated[int | None, Query(ge=2, le=100_000)] = None,
    seed: Annotated[int | None, Query(ge=0, le=2**63 - 1)] = None,
    sampler: Sampler | None = None,
    steps: Annotated[int | None, Query(ge=1)] = None,
) -> StreamingResponse:
    served = deps.registry.get(name)
    plan = generation.plan(served.bundle, deps.settings, n_sequences, seq_len, seed, sampler, steps, max_sequences=None)
    rows = deps.metrics.rows.labels(name)
    body = await generation.csv_export(deps.pool, served.bundle, plan, rows.inc)
    filename = f"{name}-v{served.version}-seed{plan.seed}.csv"
    return StreamingResponse(
        body,
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{filename}"', "X-Seed": str(plan.seed)},
    )


def _summary(served: ServedModel) -> ModelSummary:
    manifest = served.bundle.manifest
    return ModelSummary(
        name=served.name,
        version=served.version,
        versions=list(served.versions),
        created_at=manifest.get("created_at"),
        rows=manifest.get("rows"),
        seq_len=served.bundle.config.window.seq_len,
        features=served.bundle.schema.names(),
    )
