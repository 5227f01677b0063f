"""Per-feature KS/TVD diagnostics of a model's output against a reference table."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, File, Form, Query, UploadFile
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel

from app.auth import require_api_token
from app.errors import ApiError
from app.ks import run_ks
from app.schemas import ErrorResponse
from app.services import Services, services
from model_core.diagnostics import DiagnosticsReport, render_feature_png

router = APIRouter(prefix="/v1/models", tags=["diagnostics"], dependencies=[Depends(require_api_token)])
Deps = Annotated[Services, Depends(services)]


class KSResponse(BaseModel):
    model: str
    version: int
    reference: str
    synthetic: str
    seed: int | None
    report: DiagnosticsReport


@router.post(
    "/{name}/diagnostics/ks",
    response_model=KSResponse,
    summary="Compare generated (or uploaded) sequences with a reference table, feature by feature",
    responses={
        200: {"content": {"text/csv": {}, "image/png": {}}, "description": "JSON, CSV or a PNG plot"},
        404: {"model": ErrorResponse, "description": "Unknown model or dataset"},
        413: {"model": ErrorResponse, "description": "Upload over TSSYNTH_MAX_UPLOAD_BYTES"},
        422: {"model": ErrorResponse, "description": "Tables that do not match the model, or bad parameters"},
    },
)
async def ks_diagnostics(
    name: str,
    deps: Deps,
    reference: Annotated[UploadFile | None, File(description="Reference CSV (the real data)")] = None,
    reference_dataset: Annotated[str | None, Form(description="Or: a CSV file name in the datasets directory")] = None,
    synthetic: Annotated[UploadFile | None, File(description="Synthetic CSV; generated when absent")] = None,
    n_sequences: Annotated[int, Form(ge=1, description="Sequences to generate")] = 100,
    seed: Annotated[int | None, Form(ge=0, le=2**63 - 1, description="Generation seed; random when unset")] = None,
    format: Annotated[Literal["json", "csv", "png"], Query(description="Response format")] = "json",
    feature: Annotated[str | None, Query(description="The feature to plot (format=png)")] = None,
) -> Response:
    served = deps.registry.get(name)
    if format == "png" and feature not in served.bundle.schema.names():
        raise ApiError(
            422,
            "validation_error",
            "format=png needs feature=<name> of one of the model's features",
            {"features": served.bundle.schema.names()},
        )
    result = await run_ks(deps, served, reference, reference_dataset, synthetic, n_sequences, seed)
    headers = {"X-Seed": str(result.seed)} if result.seed is not None else {}
    if format == "csv":
        return Response(result.report.to_csv(), media_type="text/csv; charset=utf-8", headers=headers)
    if format == "png":
        diagnostic = result.report.feature(str(feature))
        png = await deps.pool.run(render_feature_png, result.reference, result.synthetic, diagnostic)
        return Response(png, media_type="image/png", headers=headers)
    body = KSResponse(
        model=name,
        version=served.version,
        reference=result.reference_source,
        synthetic=result.synthetic_source,
        seed=result.seed,
        report=result.report,
    )
    return JSONResponse(body.model_dump(mode="json"), headers=headers)
