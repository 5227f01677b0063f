"""Ingest: CSV/DataFrame -> a typed table (timestamp, gap-free segments, one kind per feature).

Kinds decide how each column is modelled: ``continuous`` by Gaussian diffusion, ``discrete`` by masked
(absorbing-state) diffusion over its categories, ``constant`` not modelled at all but restored exactly.

Missing-value policy: a run of at most ``data.max_fill_gap`` missing cells in a column is forward-filled
(a leading run is back-filled); a longer run is an error naming the column and row, because filling it
would invent a regime the plant never showed. An all-missing column is always an error.
"""

from __future__ import annotations

import csv
import io
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Literal

import numpy as np
import pandas as pd
from pandas.tseries.api import guess_datetime_format
from pydantic import BaseModel

from model_core.calendar import calendar_periods
from model_core.config import DataConfig
from model_core.couplings import Coupling, RangeCoupling, find_couplings, find_range_couplings

FeatureKind = Literal["continuous", "discrete", "constant"]

#: Columns with these name parts are tried as the timestamp when none is declared.
_TIMESTAMP_NAME = re.compile(r"date|time|timestamp|datetime|^ts$", re.IGNORECASE)
#: Non-feature columns that generated long-format tables carry.
SEQUENCE_COLUMNS = ("sequence_id", "step")
#: Formats pandas cannot guess (an hour without minutes), tried before slow per-element parsing.
_HOUR_ONLY_FORMATS = ("%d/%m/%y %H", "%m/%d/%y %H", "%d/%m/%Y %H", "%m/%d/%Y %H", "%Y-%m-%d %H")
#: Decimals kept when writing continuous values back (more is float noise, not information).
MAX_DECIMALS = 6
#: A step longer than this multiple of the median step starts a new segment.
GAP_FACTOR = 1.5
#: Share of rows that may repeat an earlier row's timestamp (a clock set back, a repeated hour when
#: daylight saving ends). Beyond it the file most likely holds several series interleaved.
MAX_REPEATED_TIMESTAMPS = 0.01
#: Field separators recognised in the header line when it has no comma.
_OTHER_SEPARATORS = (";", "\t", "|")


class DataError(ValueError):
    """Input data that cannot be used; the message names the problem (column, row)."""


class FeatureSpec(BaseModel):
    name: str
    kind: FeatureKind
    #: Discrete: the sorted category values. Constant: the single value.
    levels: list[float] | None = None
    #: Integer-valued columns are written back as integers (0/1 stays 0/1).
    is_integer: bool = False
    #: Decimals to round continuous values to on output (the precision seen in the data, capped).
    decimals: int = MAX_DECIMALS
    min: float | None = None
    max: float | None = None


class TableSchema(BaseModel):
    """What was learned about the table's layout: saved with every model as ``schema.json``."""

    timestamp_column: str | None = None
    #: Median step between rows in seconds (None without a timestamp).
    step_seconds: float | None = None
    start: str | None = None
    #: Cycles (seconds: a day, a week) the timestamps resolve and span, which the trend model reads as
    #: calendar features (see calendar.py). Empty without a timestamp.
    calendar_periods: list[float] = []
    features: list[FeatureSpec]
    dropped: list[str] = []
    #: Exact continuous/discrete couplings seen on every training row (see couplings.py).
    couplings: list[Coupling] = []
    #: Disjoint per-state value ranges seen on every training row, for continuous features without an
    #: exact coupling (see couplings.py). Empty in models saved before they existed.
    range_couplings: list[RangeCoupling] = []

    def names(self, kind: FeatureKind | None = None) -> list[str]:
        return [f.name for f in self.features if kind is None or f.kind == kind]

    def feature(self, name: str) -> FeatureSpec:
        for spec in self.features:
            if spec.name == name:
                return spec
        raise KeyError(name)

    @property
    def kinds(self) -> dict[str, str]:
        return {f.name: f.kind for f in self.features}


@dataclass
class PreparedTable:
    """A validated, numeric, gap-free table: features only, float64, in schema order."""

    schema: TableSchema
    values: pd.DataFrame
    #: Half-open row ranges [start, end) of the gap-free segments, each at least one window long.
    segments: list[tuple[int, int]]
    timestamps: pd.Series | None


def read_csv(source: str | Path | IO[bytes] | bytes) -> pd.DataFrame:
    """Read a CSV, refusing what pandas would silently accept: repeated column names, an empty file."""
    if isinstance(source, (str, Path)):
        if not Path(source).is_file():
            raise DataError(f"file not found: {source}")
        raw = Path(source).read_bytes()
    elif isinstance(source, bytes):
        raw = source
    else:
        raw = source.read()
    first_line = raw[:65536].decode("utf-8", errors="replace").split("\n", 1)[0]
    separator = _separator(first_line)
    header = next(csv.reader(io.StringIO(first_line), delimiter=separator), [])
    header = [name.strip() for name in header]
    repeated = sorted({name for name in header if header.count(name) > 1})
    if repeated:
        raise DataError(f"duplicate column names: {repeated}")
    try:
        frame = pd.read_csv(io.BytesIO(raw), sep=separator, skipinitialspace=True)
    except pd.errors.EmptyDataError as exc:
        raise DataError("the CSV is empty (no header and no rows)") from exc
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise DataError(f"the CSV cannot be parsed: {exc}") from exc
    frame.columns = [str(c).strip() for c in frame.columns]
    if frame.empty:
        raise DataError("the CSV has a header but no rows")
    return frame


def _separator(header_line: str) -> str:
    """The comma, or else the separator the header uses (semicolon CSVs come from spreadsheets set to a
    decimal comma; tab and pipe from database exports)."""
    if "," in header_line:
        return ","
    counts = {candidate: header_line.count(candidate) for candidate in _OTHER_SEPARATORS}
    best = max(counts, key=lambda candidate: counts[candidate])
    return best if counts[best] else ","


def check_unique_columns(frame: pd.DataFrame) -> None:
    repeated = sorted({str(c) for c in frame.columns[frame.columns.duplicated()]})
    if repeated:
        raise DataError(f"duplicate column names: {repeated}")


def infer_kind(series: pd.Series, max_discrete_levels: int = 10) -> FeatureKind:
    """``constant`` if one value, ``discrete`` if integer-valued with few levels, else ``continuous``."""
    values = pd.to_numeric(series, errors="coerce").dropna().to_numpy(dtype=float)
    uniques = np.unique(values)
    if len(uniques) <= 1:
        return "constant"
    if len(uniques) <= max_discrete_levels and np.all(uniques == np.round(uniques)):
        return "discrete"
    return "continuous"


def detect_timestamp_column(frame: pd.DataFrame) -> str | None:
    for name in frame.columns:
        column = frame[name]
        if _TIMESTAMP_NAME.search(str(name)) and (
            not pd.api.types.is_numeric_dtype(column) or pd.api.types.is_datetime64_any_dtype(column)
        ):
            try:
                parse_timestamps(column)
            except DataError:
                continue
            return str(name)
    return None


def parse_timestamps(column: pd.Series) -> pd.Series:
    """Parse timestamps, choosing day-first or month-first by which gives the more regular series.

    Each reading is tried with the one format guessed from the first value (fast); per-element parsing
    is the fallback when no single format fits.
    """
    if pd.api.types.is_datetime64_any_dtype(column):
        return column
    first = column.dropna().astype(str)
    candidates = []
    if len(first):
        for dayfirst in (False, True):
            fmt = guess_datetime_format(first.iloc[0], dayfirst=dayfirst)
            if fmt is not None:
                candidates.append(_to_datetime(column, fmt))
    if not any(c is not None for c in candidates):
        candidates = [_to_datetime(column, fmt) for fmt in _HOUR_ONLY_FORMATS]
    if not any(c is not None for c in candidates):
        candidates = [_to_datetime(column, "mixed", dayfirst) for dayfirst in (False, True)]
    best: pd.Series | None = None
    best_score = -1.0
    for parsed in candidates:
        if parsed is None or parsed.isna().any():
            continue
        diffs = parsed.diff().dropna()
        score = float((diffs == diffs.median()).mean()) if len(diffs) else 1.0
        if score > best_score:
            best, best_score = parsed, score
    if best is None:
        raise DataError(f"column '{column.name}' does not parse as timestamps")
    return best


def _to_datetime(column: pd.Series, fmt: str, dayfirst: bool = False) -> pd.Series | None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            return pd.to_datetime(column, format=fmt, dayfirst=dayfirst)
    except (ValueError, TypeError, OverflowError):
        return None


def infer_schema(frame: pd.DataFrame, config: DataConfig | None = None) -> TableSchema:
    """Learn the layout of a raw table (before any cleaning besides dropping columns)."""
    config = config or DataConfig()
    check_unique_columns(frame)
    frame = _drop_columns(frame, config)
    timestamp_column = _resolve_timestamp_column(frame, config)
    feature_frame = frame.drop(columns=[timestamp_column] if timestamp_column else [])
    feature_frame = _numeric_features(feature_frame, config)
    for forced in config.discrete_columns + config.continuous_columns:
        if forced not in feature_frame.columns:
            raise DataError(f"column '{forced}' named in the config is not in the data")
    features = [_feature_spec(str(name), feature_frame[name], config) for name in feature_frame.columns]
    if not features:
        raise DataError("the table has no feature columns")
    step_seconds = start = None
    periods: list[float] = []
    if timestamp_column:
        stamps = parse_timestamps(frame[timestamp_column]).sort_values()
        _check_repeated_timestamps(stamps, timestamp_column)
        diffs = stamps.diff().dropna().dt.total_seconds()
        diffs = diffs[diffs > 0]
        step_seconds = float(diffs.median()) if len(diffs) else None
        start = str(stamps.iloc[0])
        periods = calendar_periods(step_seconds, (stamps.iloc[-1] - stamps.iloc[0]).total_seconds())
    kinds = {f.name: f.kind for f in features}
    continuous = [n for n, k in kinds.items() if k == "continuous"]
    discrete = [n for n, k in kinds.items() if k == "discrete"]
    couplings = find_couplings(feature_frame, continuous, discrete)
    # A feature with an exact (atom) coupling already has its state agreement enforced.
    atom_coupled = {c.continuous for c in couplings}
    return TableSchema(
        timestamp_column=timestamp_column,
        step_seconds=step_seconds,
        start=start,
        calendar_periods=periods,
        features=features,
        dropped=list(config.drop_columns),
        couplings=couplings,
        range_couplings=find_range_couplings(
            feature_frame, [c for c in continuous if c not in atom_coupled], discrete
        ),
    )


def _check_repeated_timestamps(stamps: pd.Series, name: str) -> None:
    """A few repeated timestamps are kept in file order; many mean several series in one file."""
    repeated = stamps.duplicated()
    if repeated.mean() > MAX_REPEATED_TIMESTAMPS:
        example = stamps[repeated].iloc[0]
        raise DataError(
            f"{int(repeated.sum())} of {len(stamps)} rows repeat another row's timestamp in column '{name}' "
            f"(e.g. {example}); tssynth learns one series: if the file holds several (one per device or "
            "site), train one model per series"
        )


def prepare_table(
    frame: pd.DataFrame, config: DataConfig, seq_len: int, schema: TableSchema | None = None
) -> PreparedTable:
    """Validate, sort, fill and segment a raw table; infer its schema unless one is given."""
    schema = schema or infer_schema(frame, config)
    frame = _drop_columns(frame, config)
    expected = schema.names() + ([schema.timestamp_column] if schema.timestamp_column else [])
    check_columns(frame, expected)
    timestamps: pd.Series | None = None
    if schema.timestamp_column:
        timestamps = parse_timestamps(frame[schema.timestamp_column])
        order = np.argsort(timestamps.to_numpy(), kind="stable")
        frame = frame.iloc[order].reset_index(drop=True)
        timestamps = timestamps.iloc[order].reset_index(drop=True)
    values = _numeric_features(frame[schema.names()], config)
    values = _fill_missing(values, config.max_fill_gap)
    segments = _segments(timestamps, len(values), seq_len)
    return PreparedTable(schema=schema, values=values.astype(np.float64), segments=segments, timestamps=timestamps)


def check_columns(frame: pd.DataFrame, expected: list[str]) -> None:
    missing = [c for c in expected if c not in frame.columns]
    extra = [str(c) for c in frame.columns if c not in expected]
    if missing or extra:
        raise ColumnMismatchError(missing=missing, extra=extra)


class ColumnMismatchError(DataError):
    def __init__(self, missing: list[str], extra: list[str]):
        self.missing, self.extra = missing, extra
        parts = []
        if missing:
            parts.append(f"missing columns {missing}")
        if extra:
            parts.append(f"unexpected columns {extra}")
        super().__init__("column mismatch: " + "; ".join(parts))


def _drop_columns(frame: pd.DataFrame, config: DataConfig) -> pd.DataFrame:
    absent = [c for c in config.drop_columns if c not in frame.columns]
    if absent:
        raise DataError(f"columns to drop are not in the data: {absent}")
    return frame.drop(columns=config.drop_columns)


def _resolve_timestamp_column(frame: pd.DataFrame, config: DataConfig) -> str | None:
    if config.timestamp_column is None:
        return detect_timestamp_column(frame)
    if config.timestamp_column not in frame.columns:
        raise DataError(f"timestamp column '{config.timestamp_column}' is not in the data")
    parse_timestamps(frame[config.timestamp_column])
    return config.timestamp_column


def _numeric_features(frame: pd.DataFrame, config: DataConfig) -> pd.DataFrame:
    """Every feature as float; a non-numeric cell is an error naming its row and column."""
    out = {}
    for name in frame.columns:
        column = frame[name]
        if pd.api.types.is_bool_dtype(column):
            column = column.astype(float)
        numeric = pd.to_numeric(column, errors="coerce")
        bad = numeric.isna() & column.notna()
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            if bad.all():
                categories = sorted({str(v) for v in column.dropna()})
                if 2 <= len(categories) <= config.max_discrete_levels:
                    raise DataError(
                        f"column '{name}' holds text categories {categories}; tssynth reads numbers only: encode "
                        "them as integers (e.g. 0/1 for off/on), which it models as discrete states, or list the "
                        "column in data.drop_columns"
                    )
                raise DataError(
                    f"column '{name}' is not numeric (e.g. {column.iloc[row]!r}); "
                    "declare it as data.timestamp_column or list it in data.drop_columns"
                )
            raise DataError(
                f"non-numeric value {column.iloc[row]!r} in column '{name}' at row {row + 1} (1-based, after the header)"
            )
        if np.isinf(numeric.to_numpy(dtype=float)).any():
            row = int(np.flatnonzero(np.isinf(numeric.to_numpy(dtype=float)))[0])
            raise DataError(f"infinite value in column '{name}' at row {row + 1}")
        if numeric.isna().all():
            raise DataError(f"column '{name}' has no values (all missing)")
        out[str(name)] = numeric.astype(float)
    return pd.DataFrame(out, index=frame.index)


def _feature_spec(name: str, column: pd.Series, config: DataConfig) -> FeatureSpec:
    values = column.dropna().to_numpy(dtype=float)
    kind = infer_kind(column, config.max_discrete_levels)
    if name in config.discrete_columns:
        kind = "discrete" if len(np.unique(values)) > 1 else "constant"
    elif name in config.continuous_columns:
        kind = "continuous" if len(np.unique(values)) > 1 else "constant"
    if kind == "discrete" and len(np.unique(values)) > 256:
        raise DataError(f"column '{name}' forced discrete has {len(np.unique(values))} levels (at most 256)")
    is_integer = bool(np.all(values == np.round(values)))
    levels = [float(v) for v in np.unique(values)] if kind in ("discrete", "constant") else None
    return FeatureSpec(
        name=name,
        kind=kind,
        levels=levels,
        is_integer=is_integer,
        decimals=0 if is_integer else _decimals(values),
        min=float(values.min()),
        max=float(values.max()),
    )


def _decimals(values: np.ndarray) -> int:
    """The fewest decimals (up to MAX_DECIMALS) that reproduce every value."""
    for decimals in range(MAX_DECIMALS + 1):
        if np.allclose(np.round(values, decimals), values, rtol=0, atol=1e-12 * max(1.0, np.abs(values).max())):
            return decimals
    return MAX_DECIMALS


def _fill_missing(values: pd.DataFrame, max_fill_gap: int) -> pd.DataFrame:
    for name in values.columns:
        missing = values[name].isna().to_numpy()
        if not missing.any():
            continue
        run_start, longest = _longest_run(missing)
        if longest > max_fill_gap:
            raise DataError(
                f"column '{name}' has {longest} missing values in a row starting at row {run_start + 1}; "
                f"at most data.max_fill_gap={max_fill_gap} are filled"
            )
    return values.ffill().bfill()


def _longest_run(mask: np.ndarray) -> tuple[int, int]:
    best_start, best_len, start = 0, 0, -1
    for i, flag in enumerate(mask):
        if flag and start < 0:
            start = i
        if (not flag or i == len(mask) - 1) and start >= 0:
            end = i + 1 if flag else i
            if end - start > best_len:
                best_start, best_len = start, end - start
            start = -1
    return best_start, best_len


def _segments(timestamps: pd.Series | None, n_rows: int, seq_len: int) -> list[tuple[int, int]]:
    bounds = [0, n_rows]
    if timestamps is not None and n_rows > 1:
        seconds = timestamps.diff().dt.total_seconds().to_numpy()[1:]
        positive = seconds[seconds > 0]
        median = float(np.median(positive)) if len(positive) else 0.0
        breaks = (np.flatnonzero(seconds > GAP_FACTOR * median) + 1).tolist() if median > 0 else []
        bounds = [0, *breaks, n_rows]
    segments = [(a, b) for a, b in zip(bounds[:-1], bounds[1:], strict=True) if b - a >= seq_len]
    if not segments:
        longest = max(b - a for a, b in zip(bounds[:-1], bounds[1:], strict=True))
        raise DataError(
            f"not enough rows for one window: the longest gap-free stretch has {longest} rows, "
            f"window.seq_len is {seq_len}"
        )
    return segments
