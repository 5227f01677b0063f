"""Tables that arrive with a request: an uploaded CSV or the name of a server-side dataset.

Dataset names are plain file names inside the datasets directory (no separators, no leading dot),
so a request can never read a file outside it.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
from fastapi import UploadFile

from app.errors import ApiError, limit_exceeded
from app.pool import WorkerPool
from app.settings import Settings
from model_core.schema import SEQUENCE_COLUMNS, DataError, TableSchema, read_csv

_DATASET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


async def read_upload(file: UploadFile, max_bytes: int) -> bytes:
    content = await file.read(max_bytes + 1)
    if len(content) > max_bytes:
        raise limit_exceeded("max_upload_bytes", len(content), max_bytes, status=413)
    return content


def dataset_path(settings: Settings, name: str) -> Path:
    path = settings.datasets_dir / name
    if not _DATASET_NAME.match(name) or not path.is_file():
        raise ApiError(404, "dataset_not_found", f"no dataset named '{name}'", {"available": datasets(settings)})
    return path.resolve()


def datasets(settings: Settings) -> list[str]:
    folder = settings.datasets_dir
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if p.is_file() and _DATASET_NAME.match(p.name))


async def load_table(
    pool: WorkerPool, settings: Settings, role: str, file: UploadFile | None, dataset: str | None
) -> tuple[pd.DataFrame, bytes | None, str]:
    """(table, the uploaded bytes or None, a description of the source) from exactly one of the two."""
    if file is not None and dataset is not None:
        raise ApiError(422, "validation_error", f"give the {role} table as an upload or as a dataset name, not both")
    if file is None and dataset is None:
        raise ApiError(422, "validation_error", f"give the {role} table as an uploaded CSV or as a dataset name")
    if file is not None:
        content = await read_upload(file, settings.max_upload_bytes)
        source = f"upload:{file.filename or 'data.csv'}"
    else:
        assert dataset is not None
        content = dataset_path(settings, dataset).read_bytes()
        source = f"dataset:{dataset}"
    try:
        frame = await pool.run(read_csv, content)
    except DataError as exc:
        raise DataError(f"{role} CSV: {exc}") from exc
    return frame, content if file is not None else None, source


def check_against_schema(frame: pd.DataFrame, schema: TableSchema, role: str) -> pd.DataFrame:
    """The table's features, checked against the model's: same columns, numeric cells.

    Sequence ids, steps, the timestamp and columns the model was told to drop may be present
    (a generated export or the training file itself); dropped columns are removed.
    """
    features = schema.names()
    allowed = {*features, *SEQUENCE_COLUMNS, *schema.dropped}
    if schema.timestamp_column:
        allowed.add(schema.timestamp_column)
    missing = [name for name in features if name not in frame.columns]
    extra = [str(name) for name in frame.columns if name not in allowed]
    if missing or extra:
        raise ApiError(
            422,
            "column_mismatch",
            f"{role} CSV does not match the model's features: missing {missing}, unexpected {extra}",
            {"table": role, "missing": missing, "extra": extra},
        )
    for name in features:
        column = frame[name]
        bad = pd.to_numeric(column, errors="coerce").isna() & column.notna()
        if bad.any():
            row = int(bad.to_numpy().nonzero()[0][0])
            raise ApiError(
                422,
                "invalid_data",
                f"{role} CSV: non-numeric value {column.iloc[row]!r} in column '{name}' at row {row + 1} "
                "(1-based, after the header)",
                {"table": role, "column": name, "row": row + 1},
            )
    return frame.drop(columns=[c for c in schema.dropped if c in frame.columns])
