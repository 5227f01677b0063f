"""Request and response models of the HTTP API (what OpenAPI documents and clients rely on).

Kept apart from the engine's own models: the wire format is a promise to clients and changes only
with a new API version, while the engine's internals may change freely behind it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from app.jobstore import Job, JobState
from model_core.couplings import Coupling, RangeCoupling

Sampler = Literal["ddpm", "ddim"]
Layout = Literal["nested", "records"]
Scalar = float | int | str


class ErrorDetail(BaseModel):
    code: str = Field(examples=["model_not_found"])
    message: str = Field(examples=["no model named 'pump'"])
    details: Any = None


class ErrorResponse(BaseModel):
    error: ErrorDetail


class Health(BaseModel):
    status: str = Field(examples=["ok"])


class Readiness(BaseModel):
    status: str = Field(examples=["ready"])
    models: list[str] = Field(examples=[["demo"]])


class FeatureOut(BaseModel):
    name: str = Field(examples=["S_PUMP1"])
    kind: Literal["continuous", "discrete", "constant"]
    levels: list[float] | None = Field(None, description="Categories (discrete) or the value (constant).")
    is_integer: bool
    min: float | None
    max: float | None


class SchemaOut(BaseModel):
    timestamp_column: str | None
    step_seconds: float | None
    start: str | None
    calendar_periods: list[float] = Field(
        default_factory=list,
        description="Cycles in seconds (a day: 86400, a week: 604800) the trend model reads the time of, where "
        "the timestamps resolve and span them; generated timestamps keep each sequence's place in them.",
    )
    features: list[FeatureOut]
    dropped: list[str]
    couplings: list[Coupling] = Field(
        default_factory=list,
        description="Enforced on every generated row: `continuous` equals `atom` exactly when `discrete` is in "
        "`atom_states` (a pump's flow is 0 exactly when it is off).",
    )
    range_couplings: list[RangeCoupling] = Field(
        default_factory=list,
        description="Enforced on every generated row: while `discrete` is `states[i]`, `continuous` lies in "
        "`[lows[i], highs[i]]` (a pressure's range per pump state).",
    )


class ModelSummary(BaseModel):
    name: str = Field(examples=["demo"])
    version: int = Field(description="The version being served (the newest that loads); 0 = unversioned bundle.")
    versions: list[int] = Field(description="Every version found on disk.")
    created_at: str | None = Field(examples=["2025-01-01T12:00:00+00:00"])
    rows: int | None = Field(None, description="Rows of the training data.")
    seq_len: int = Field(description="Training window length: the default length of generated sequences.")
    features: list[str]


class ModelDetail(ModelSummary):
    schema_: SchemaOut = Field(alias="schema")
    config: dict[str, Any]
    training: dict[str, Any] = Field(description="Training summary: device, seconds, losses, steps.")
    validation: dict[str, Any] = Field(description="Diagnostics of generated windows vs the held-out rows.")
    validation_rows: int | None = Field(
        None, description="Rows held out for validation (0: the diagnostics compare with training rows; null: not recorded)."
    )
    data_sha256: str | None
    package_version: str | None

    model_config = ConfigDict(populate_by_name=True)


class ModelList(BaseModel):
    models: list[ModelSummary]


class GenerateRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"n_sequences": 2, "seq_len": 4, "seed": 7, "layout": "nested"}]},
    )

    n_sequences: int = Field(1, ge=1, description="Number of sequences (at most TSSYNTH_MAX_SEQUENCES).")
    seq_len: int | None = Field(None, ge=2, le=100_000, description="Steps per sequence; default: the model's window.")
    seed: int | None = Field(None, ge=0, le=2**63 - 1, description="Same seed, same model: same output. Random if unset.")
    sampler: Sampler | None = Field(None, description="Default: the model's configured sampler.")
    steps: int | None = Field(None, ge=1, description="DDIM steps; default: the model's configured steps.")
    layout: Layout = Field(
        "nested", description="nested: data[sequence][step][feature]; records: one object per row."
    )


class GenerateResponse(BaseModel):
    model: str
    version: int
    seed: int = Field(description="The seed used: pass it back to reproduce this response.")
    n_sequences: int
    seq_len: int
    sampler: Sampler
    steps: int | None = Field(description="DDIM steps used (None for DDPM, which runs every timestep).")
    layout: Layout
    features: list[str]
    timestamps: list[list[str]] | None = Field(
        None,
        description="nested layout: the synthetic timestamps of each sequence's steps. Each sequence starts in "
        "the training data's first week (or day) at the time of week (or day) it was generated at.",
    )
    data: list[list[list[float | int]]] | list[dict[str, Scalar]]


class JobOut(BaseModel):
    id: str
    url: str
    model: str
    state: JobState
    source: str
    overrides: dict[str, Any]
    created_at: str
    started_at: str | None
    finished_at: str | None
    stage: str | None = Field(description="prepare | trend | diffusion | validate")
    step: int | None
    total: int | None
    loss: float | None
    eta_seconds: float | None
    error: str | None
    version: int | None = Field(description="Model version this job produced (succeeded jobs).")
    cancel_requested: bool

    @classmethod
    def of(cls, job: Job, url: str) -> JobOut:
        return cls(
            id=job.id,
            url=url,
            model=job.model,
            state=job.state,
            source=job.source,
            overrides=job.overrides,
            created_at=_iso(job.created_at),
            started_at=_iso(job.started_at) if job.started_at is not None else None,
            finished_at=_iso(job.finished_at) if job.finished_at is not None else None,
            stage=job.stage,
            step=job.step,
            total=job.total,
            loss=job.loss,
            eta_seconds=job.eta_seconds,
            error=job.error,
            version=job.version,
            cancel_requested=job.cancel_requested,
        )


class JobList(BaseModel):
    jobs: list[JobOut]


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds")
