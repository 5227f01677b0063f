"""The KS diagnostics request: gather both tables, check them against the model, diagnose.

The reference is always supplied by the caller (it is the real data the model is judged
against); the synthetic side is either generated right here or uploaded, e.g. a file exported
earlier, so that an old export can be judged against new data.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
from fastapi import UploadFile

from app import generation
from app.registry import ServedModel
from app.services import Services
from app.uploads import check_against_schema, load_table
from model_core.diagnostics import DiagnosticsReport, diagnose
from model_core.schema import DataError


@dataclass(frozen=True)
class KSResult:
    report: DiagnosticsReport
    reference: pd.DataFrame
    synthetic: pd.DataFrame
    reference_source: str
    synthetic_source: str
    #: The generation seed (None when the synthetic table was uploaded).
    seed: int | None


async def run_ks(
    deps: Services,
    served: ServedModel,
    reference_file: UploadFile | None,
    reference_dataset: str | None,
    synthetic_file: UploadFile | None,
    n_sequences: int,
    seed: int | None,
) -> KSResult:
    schema = served.bundle.schema
    raw, _, reference_source = await load_table(deps.pool, deps.settings, "reference", reference_file, reference_dataset)
    reference = check_against_schema(raw, schema, "reference")
    if synthetic_file is not None:
        raw, _, synthetic_source = await load_table(deps.pool, deps.settings, "synthetic", synthetic_file, None)
        synthetic, used_seed = check_against_schema(raw, schema, "synthetic"), None
    else:
        plan = generation.plan(
            served.bundle, deps.settings, n_sequences, None, seed, None, None, max_sequences=deps.settings.max_sequences
        )
        synthetic = await deps.pool.run(generation.generate_frame, served.bundle, plan)
        deps.metrics.rows.labels(served.name).inc(len(synthetic))
        synthetic_source, used_seed = f"generated:{plan.n_sequences}x{plan.seq_len}", plan.seed
    try:
        report = await deps.pool.run(
            diagnose, reference, synthetic, kinds=schema.kinds, timestamp_column=schema.timestamp_column
        )
    except ValueError as exc:  # the tables are the caller's: anything diagnose refuses is bad input
        raise DataError(str(exc)) from exc
    return KSResult(report, reference, synthetic, reference_source, synthetic_source, used_seed)
