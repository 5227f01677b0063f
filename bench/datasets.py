"""The benchmark datasets, and their real series cut into windows the way the model sees them.

The shared datasets live outside the repository (``../shared/data``, never copied in); a dataset whose
file is absent is reported as unavailable instead of failing the whole run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from model_core.schema import TableSchema, read_csv
from model_core.simulator import simulate_plant

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
NAMES = ("demo", "batadal", "etth1")
#: A step longer than this multiple of the median step splits the series (the engine's rule).
_GAP_FACTOR = 1.5


class DatasetUnavailable(RuntimeError):
    """The dataset's file is not there; the message says where it was looked for."""


@dataclass(frozen=True)
class BenchDataset:
    name: str
    frame: pd.DataFrame
    #: The only config overrides the benchmark's "default config" gets for this dataset.
    data_overrides: dict[str, Any] = field(default_factory=dict)
    source: str = ""
    #: strftime format of the timestamp column: known per dataset, so no guessing of day-first dates.
    timestamp_format: str | None = None


def load_dataset(name: str, shared_data: Path = SHARED_DATA) -> BenchDataset:
    if name == "demo":
        return BenchDataset("demo", simulate_plant(), {}, "model_core.simulator.simulate_plant()")
    files = {
        "batadal": (
            shared_data / "batadal" / "BATADAL_dataset03.csv",
            "DATETIME",
            "%d/%m/%y %H",
            ["ATT_FLAG"],
        ),
        "etth1": (shared_data / "etth1" / "ETTh1.csv", "date", "%Y-%m-%d %H:%M:%S", []),
    }
    if name not in files:
        raise ValueError(f"unknown dataset '{name}'; choose from {list(NAMES)}")
    path, timestamp, fmt, drop = files[name]
    if not path.is_file():
        raise DatasetUnavailable(f"{name}: {path} not found (the shared data folder is absent)")
    overrides = {"data": {"timestamp_column": timestamp, "drop_columns": drop}}
    return BenchDataset(name, read_csv(path), overrides, f"../{path.relative_to(REPO_ROOT.parent)}", fmt)


@dataclass(frozen=True)
class RealSeries:
    """The table as the model learned it: features in schema order, sorted by time, short gaps filled."""

    values: np.ndarray
    segments: list[tuple[int, int]]
    names: list[str]

    def windows(self, length: int) -> tuple[np.ndarray, np.ndarray]:
        """Every stride-1 window that stays inside one segment, and the row each one starts at."""
        starts = np.concatenate([np.arange(a, b - length + 1) for a, b in self.segments if b - a >= length])
        return self.values[starts[:, None] + np.arange(length)], starts


def real_series(dataset: BenchDataset, schema: TableSchema) -> RealSeries:
    frame = dataset.frame.drop(columns=dataset.data_overrides.get("data", {}).get("drop_columns", []))
    segments = [(0, len(frame))]
    if schema.timestamp_column:
        stamps = pd.to_datetime(frame[schema.timestamp_column], format=dataset.timestamp_format)
        order = np.argsort(stamps.to_numpy(), kind="stable")
        frame = frame.iloc[order]
        steps = np.diff(stamps.to_numpy()[order]).astype("timedelta64[s]").astype(float)
        cuts = np.flatnonzero(steps > _GAP_FACTOR * np.median(steps)) + 1
        bounds = [0, *cuts.tolist(), len(frame)]
        segments = list(zip(bounds[:-1], bounds[1:], strict=True))
    values = frame[schema.names()].apply(pd.to_numeric).ffill().bfill().to_numpy(dtype=float)
    return RealSeries(values=values, segments=segments, names=schema.names())
