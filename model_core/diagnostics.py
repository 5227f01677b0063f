"""Feature-by-feature comparison of a synthetic table with its reference (the service's KS report).

A single fidelity number hides *how* a generator fails, and each failure has a different fix, so
every continuous feature gets a diagnosis label, checked in this order:

* ``boundary_pileup``: synthetic mass stacked exactly on the reference min/max (what clipping an
  unbounded output does);
* ``tail_mismatch``: the largest CDF gap sits in the outer 5 % of the reference (tails too heavy
  or too light while the bulk is fine);
* ``shift``: the median moved by a sizeable share of the reference spread;
* ``scale``: the spread (IQR) shrank or grew;
* ``ok``: none of the above.

Discrete features are compared by total-variation distance and by the share of values the
reference never showed; constant features by the share of values that differ from the constant.
Every feature also gets its lag-1 autocorrelation on both sides, because marginals can match
perfectly while the temporal dynamics are lost.
"""

from __future__ import annotations

import csv
import io
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, field_validator
from scipy.stats import ks_2samp

from model_core.schema import SEQUENCE_COLUMNS, ColumnMismatchError, FeatureKind, infer_kind

__all__ = [
    "ColumnMismatchError",
    "DiagnosisThresholds",
    "DiagnosticsReport",
    "DiagnosticsSummary",
    "FeatureDiagnostic",
    "diagnose",
    "plot_cdfs",
    "render_feature_png",
]

Label = Literal[
    "ok",
    "boundary_pileup",
    "tail_mismatch",
    "shift",
    "scale",
    "invalid_categories",
    "frequency_mismatch",
    "not_constant",
    "no_data",
]

#: Non-numeric columns with these name parts are timestamps, not features.
_TIME_NAME = re.compile(r"date|time", re.IGNORECASE)
_KINDS: tuple[FeatureKind, ...] = ("continuous", "discrete", "constant")
_WORST_COUNT = 5


@dataclass(frozen=True)
class DiagnosisThresholds:
    """When a difference becomes a label; defaults suit a few thousand rows per side."""

    #: Excess share of synthetic values exactly at the reference min/max (absolute).
    boundary_excess: float = 0.02
    #: Outer share of the reference distribution that counts as a tail, on each side.
    tail_quantile: float = 0.05
    #: KS statistic below which a tail-located gap is sampling noise, not a mismatch.
    tail_min_ks: float = 0.05
    #: Median shift, as a share of the reference IQR, that counts as a shift.
    shift_iqr_share: float = 0.25
    #: IQR ratio (synthetic / reference) outside [scale_low, scale_high] counts as a scale change.
    scale_low: float = 0.67
    scale_high: float = 1.5
    #: Total-variation distance above which a discrete feature's frequencies count as wrong.
    tvd: float = 0.1


class FeatureDiagnostic(BaseModel):
    """One feature's comparison; fields that do not apply to its kind are None."""

    name: str
    kind: FeatureKind
    label: Label
    #: The ranking distance: KS (continuous), TVD (discrete), mismatch share (constant).
    distance: float | None
    ks_statistic: float | None = None
    ks_pvalue: float | None = None
    #: Value where the two empirical CDFs are furthest apart.
    ks_location: float | None = None
    #: Reference ECDF level at ``ks_location`` (near 0 or 1: the gap is in a tail).
    ks_reference_quantile: float | None = None
    #: Share of values exactly at the reference min or max, per side.
    boundary_share_reference: float | None = None
    boundary_share_synthetic: float | None = None
    #: (synthetic median - reference median) / reference spread (IQR, or std when the IQR is 0).
    median_shift: float | None = None
    #: Synthetic spread / reference spread, measured the same way.
    spread_ratio: float | None = None
    tvd: float | None = None
    #: Share of synthetic values that are not reference categories (missing values included).
    invalid_share: float | None = None
    #: Constant features: share of synthetic values that differ from the constant.
    mismatch_share: float | None = None
    acf_reference: float | None = None
    acf_synthetic: float | None = None
    acf_abs_error: float | None = None

    @field_validator("*", mode="before")
    @classmethod
    def _finite_or_none(cls, value: Any) -> Any:
        """NaN/inf have no JSON form; None keeps the report valid JSON and round-trippable."""
        if isinstance(value, float | np.floating) and not math.isfinite(value):
            return None
        return float(value) if isinstance(value, np.floating) else value


class DiagnosticsSummary(BaseModel):
    n_reference: int
    n_synthetic: int
    n_continuous: int
    n_discrete: int
    n_constant: int
    ks_mean: float | None
    ks_max: float | None
    tvd_mean: float | None
    acf_abs_error_mean: float | None
    #: Up to five features with the largest ``distance``, worst first.
    worst_features: list[str]


class DiagnosticsReport(BaseModel):
    features: list[FeatureDiagnostic]
    summary: DiagnosticsSummary

    def feature(self, name: str) -> FeatureDiagnostic:
        for diagnostic in self.features:
            if diagnostic.name == name:
                return diagnostic
        raise KeyError(f"no feature '{name}' in the report")

    def to_csv(self) -> str:
        """One row per feature, every field a column; None is an empty cell."""
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=list(FeatureDiagnostic.model_fields), lineterminator="\n")
        writer.writeheader()
        for diagnostic in self.features:
            writer.writerow({k: "" if v is None else v for k, v in diagnostic.model_dump().items()})
        return buffer.getvalue()


def diagnose(
    reference: pd.DataFrame,
    synthetic: pd.DataFrame,
    kinds: dict[str, str] | None = None,
    timestamp_column: str | None = None,
    thresholds: DiagnosisThresholds = DiagnosisThresholds(),  # noqa: B008 - frozen, so sharing is safe
) -> DiagnosticsReport:
    """Compare every feature of ``synthetic`` with ``reference``; see the module docstring for labels."""
    for role, frame in (("reference", reference), ("synthetic", synthetic)):
        if len(frame) == 0:
            raise ValueError(f"the {role} table has no rows")
    names = _feature_columns(reference, timestamp_column)
    syn_names = _feature_columns(synthetic, timestamp_column)
    missing = [c for c in names if c not in syn_names]
    extra = [c for c in syn_names if c not in names]
    if missing or extra:
        raise ColumnMismatchError(missing=missing, extra=extra)
    if not names:
        raise ValueError("the tables have no feature columns")
    resolved = _resolve_kinds(reference, names, kinds)

    by_sequence = "sequence_id" in reference.columns and "sequence_id" in synthetic.columns
    ref_order, ref_pairs = _lag_pairs(reference, by_sequence)
    syn_order, syn_pairs = _lag_pairs(synthetic, by_sequence)
    features = []
    for name in names:
        ref = _numeric(reference[name], name, "reference")[ref_order]
        syn = _numeric(synthetic[name], name, "synthetic")[syn_order]
        kind = resolved[name]
        if kind == "continuous":
            fields = _continuous(ref, syn, thresholds)
        elif kind == "discrete":
            fields = _discrete(ref, syn, thresholds)
        else:
            fields = _constant(ref, syn)
        acf_ref, acf_syn = _lag1_acf(ref, ref_pairs), _lag1_acf(syn, syn_pairs)
        acf_error = abs(acf_ref - acf_syn) if acf_ref is not None and acf_syn is not None else None
        features.append(
            FeatureDiagnostic(
                name=name,
                kind=kind,
                acf_reference=acf_ref,
                acf_synthetic=acf_syn,
                acf_abs_error=acf_error,
                **fields,
            )
        )
    return DiagnosticsReport(features=features, summary=_summary(features, len(reference), len(synthetic)))


def _feature_columns(frame: pd.DataFrame, timestamp_column: str | None) -> list[str]:
    skip = set(SEQUENCE_COLUMNS) | ({timestamp_column} if timestamp_column else set())
    out = []
    for name in frame.columns:
        column = frame[name]
        is_time = pd.api.types.is_datetime64_any_dtype(column) or (
            not pd.api.types.is_numeric_dtype(column) and _TIME_NAME.search(str(name)) is not None
        )
        if str(name) not in skip and not is_time:
            out.append(str(name))
    return out


def _resolve_kinds(
    reference: pd.DataFrame, names: list[str], kinds: dict[str, str] | None
) -> dict[str, FeatureKind]:
    """Declared kinds win, except that a single-valued reference column can only be compared as constant."""
    kinds = kinds or {}
    unknown = sorted(set(kinds) - set(names))
    if unknown:
        raise ValueError(f"kinds given for columns that are not features: {unknown}")
    resolved: dict[str, FeatureKind] = {}
    for name in names:
        inferred = infer_kind(reference[name])
        declared = kinds.get(name, inferred)
        if declared not in _KINDS:
            raise ValueError(f"kind of '{name}' must be one of {list(_KINDS)}, got '{declared}'")
        resolved[name] = "constant" if inferred == "constant" else declared
    return resolved


def _numeric(column: pd.Series, name: str, role: str) -> np.ndarray:
    try:
        return pd.to_numeric(column).to_numpy(dtype=float)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"column '{name}' of the {role} table is not numeric") from exc


def _lag_pairs(frame: pd.DataFrame, by_sequence: bool) -> tuple[np.ndarray, np.ndarray]:
    """Row order, and which consecutive rows form a (x_t, x_t+1) pair.

    Pairs never straddle two sequences: the last step of one generated sequence and the first of
    the next are unrelated, and pooling them would dilute the autocorrelation.
    """
    n = len(frame)
    if not by_sequence:
        return np.arange(n), np.ones(max(n - 1, 0), dtype=bool)
    sequence = pd.factorize(frame["sequence_id"])[0]
    step = frame["step"].to_numpy() if "step" in frame.columns else np.zeros(n)
    order = np.lexsort((step, sequence))  # by sequence, then step; stable, so row order breaks ties
    sequence = sequence[order]
    return order, sequence[1:] == sequence[:-1]


def _lag1_acf(values: np.ndarray, pairs: np.ndarray) -> float | None:
    """Pearson correlation of the (x_t, x_t+1) pairs; None when it is undefined (no variation)."""
    lead, lag = values[:-1][pairs], values[1:][pairs]
    keep = np.isfinite(lead) & np.isfinite(lag)
    lead, lag = lead[keep], lag[keep]
    if len(lead) < 2 or np.ptp(lead) == 0 or np.ptp(lag) == 0:
        return None
    return float(np.corrcoef(lead, lag)[0, 1])


def _continuous(ref: np.ndarray, syn: np.ndarray, thresholds: DiagnosisThresholds) -> dict[str, Any]:
    ref, syn = np.sort(ref[np.isfinite(ref)]), np.sort(syn[np.isfinite(syn)])
    if len(ref) == 0 or len(syn) == 0:
        return {"label": "no_data", "distance": None}
    result = ks_2samp(ref, syn)
    statistic, location = float(result.statistic), float(result.statistic_location)
    ref_quantile = np.searchsorted(ref, location, side="right") / len(ref)
    low, high = ref[0], ref[-1]
    tolerance = 1e-9 * (high - low)
    share_ref, share_syn = _edge_share(ref, low, high, tolerance), _edge_share(syn, low, high, tolerance)
    spread_ref, spread_syn = _spread(ref, syn)
    shift = (np.median(syn) - np.median(ref)) / spread_ref
    ratio = spread_syn / spread_ref
    # The synthetic CDF must be on the same side of its median at that point: a shift big enough to
    # carry the whole synthetic sample past the reference's edge is still a shift, not a tail problem.
    syn_level = np.searchsorted(syn, location, side="right") / len(syn)
    in_tail = (ref_quantile <= thresholds.tail_quantile and syn_level <= 0.5) or (
        ref_quantile >= 1.0 - thresholds.tail_quantile and syn_level >= 0.5
    )
    label: Label = "ok"
    if share_syn - share_ref > thresholds.boundary_excess:
        label = "boundary_pileup"
    elif in_tail and statistic > thresholds.tail_min_ks:
        label = "tail_mismatch"
    elif abs(shift) > thresholds.shift_iqr_share:
        label = "shift"
    elif not thresholds.scale_low <= ratio <= thresholds.scale_high:
        label = "scale"
    return {
        "label": label,
        "distance": statistic,
        "ks_statistic": statistic,
        "ks_pvalue": float(result.pvalue),
        "ks_location": location,
        "ks_reference_quantile": float(ref_quantile),
        "boundary_share_reference": share_ref,
        "boundary_share_synthetic": share_syn,
        "median_shift": float(shift),
        "spread_ratio": float(ratio),
    }


def _edge_share(values: np.ndarray, low: float, high: float, tolerance: float) -> float:
    return float(np.mean((np.abs(values - low) <= tolerance) | (np.abs(values - high) <= tolerance)))


def _spread(ref: np.ndarray, syn: np.ndarray) -> tuple[float, float]:
    """IQR of both sides; std of both when the reference IQR is 0 (e.g. a mostly-off pump's flow)."""
    iqr_ref = float(np.subtract(*np.percentile(ref, [75, 25])))
    if iqr_ref > 0:
        return iqr_ref, float(np.subtract(*np.percentile(syn, [75, 25])))
    return float(np.std(ref)), float(np.std(syn))


def _discrete(ref: np.ndarray, syn: np.ndarray, thresholds: DiagnosisThresholds) -> dict[str, Any]:
    ref = ref[~np.isnan(ref)]
    if len(ref) == 0 or len(syn) == 0:
        return {"label": "no_data", "distance": None}
    categories, ref_counts = np.unique(ref, return_counts=True)
    syn_missing = np.isnan(syn)
    syn_values, syn_counts = np.unique(syn[~syn_missing], return_counts=True)
    support = np.union1d(categories, syn_values)
    p = np.zeros(len(support))
    q = np.zeros(len(support))
    p[np.searchsorted(support, categories)] = ref_counts / len(ref)
    q[np.searchsorted(support, syn_values)] = syn_counts / len(syn)
    # Missing synthetic values are one more category the reference never has.
    tvd = 0.5 * (np.abs(p - q).sum() + syn_missing.mean())
    invalid = (np.count_nonzero(~np.isin(syn[~syn_missing], categories)) + syn_missing.sum()) / len(syn)
    label: Label = "ok"
    if invalid > 0:
        label = "invalid_categories"
    elif tvd > thresholds.tvd:
        label = "frequency_mismatch"
    return {"label": label, "distance": float(tvd), "tvd": float(tvd), "invalid_share": float(invalid)}


def _constant(ref: np.ndarray, syn: np.ndarray) -> dict[str, Any]:
    present = ref[~np.isnan(ref)]
    if len(present) == 0 or len(syn) == 0:
        return {"label": "no_data", "distance": None}
    mismatch = float(np.mean(syn != present[0]))  # NaN != value, so missing values count as mismatches
    return {
        "label": "ok" if mismatch == 0 else "not_constant",
        "distance": mismatch,
        "mismatch_share": mismatch,
    }


def _summary(features: list[FeatureDiagnostic], n_reference: int, n_synthetic: int) -> DiagnosticsSummary:
    ks = [f.distance for f in features if f.kind == "continuous" and f.distance is not None]
    tvd = [f.distance for f in features if f.kind == "discrete" and f.distance is not None]
    acf = [f.acf_abs_error for f in features if f.acf_abs_error is not None]
    ranked = sorted((f for f in features if f.distance is not None), key=lambda f: -(f.distance or 0.0))
    return DiagnosticsSummary(
        n_reference=n_reference,
        n_synthetic=n_synthetic,
        n_continuous=sum(f.kind == "continuous" for f in features),
        n_discrete=sum(f.kind == "discrete" for f in features),
        n_constant=sum(f.kind == "constant" for f in features),
        ks_mean=_mean(ks),
        ks_max=max(ks) if ks else None,
        tvd_mean=_mean(tvd),
        acf_abs_error_mean=_mean(acf),
        worst_features=[f.name for f in ranked[:_WORST_COUNT]],
    )


def _mean(values: Sequence[float]) -> float | None:
    return float(np.mean(values)) if values else None


def render_feature_png(
    reference: pd.DataFrame, synthetic: pd.DataFrame, diagnostic: FeatureDiagnostic
) -> bytes:
    """One feature's overlay as PNG bytes: step ECDFs (continuous) or category frequencies (otherwise)."""
    # Imported here: matplotlib costs ~0.5 s to import and only plots need it. Figure (not pyplot)
    # renders through Agg without touching global backend state, so it is safe inside the service.
    from matplotlib.figure import Figure

    name = diagnostic.name
    ref = _numeric(reference[name], name, "reference")
    syn = _numeric(synthetic[name], name, "synthetic")
    ref, syn = ref[np.isfinite(ref)], syn[np.isfinite(syn)]
    figure = Figure(figsize=(6.4, 4.0), dpi=100)
    axes = figure.subplots()
    if diagnostic.kind == "continuous":
        for values, label, colour in ((ref, "reference", "tab:blue"), (syn, "synthetic", "tab:orange")):
            ordered = np.sort(values)
            axes.step(
                ordered,
                np.arange(1, len(ordered) + 1) / max(len(ordered), 1),
                where="post",
                label=label,
                color=colour,
            )
        if diagnostic.ks_location is not None:
            axes.axvline(diagnostic.ks_location, color="grey", linestyle=":", linewidth=1)
        axes.set_ylabel("empirical CDF")
        headline = f"KS={_fmt(diagnostic.ks_statistic)}"
    else:
        support = np.union1d(np.unique(ref), np.unique(syn))
        positions = np.arange(len(support))
        for offset, values, label, colour in (
            (-0.2, ref, "reference", "tab:blue"),
            (0.2, syn, "synthetic", "tab:orange"),
        ):
            share = np.array([np.mean(values == level) if len(values) else 0.0 for level in support])
            axes.bar(positions + offset, share, width=0.4, label=label, color=colour)
        axes.set_xticks(positions, [f"{level:g}" for level in support])
        axes.set_ylabel("share of rows")
        headline = (
            f"TVD={_fmt(diagnostic.tvd)}"
            if diagnostic.kind == "discrete"
            else f"mismatch={_fmt(diagnostic.mismatch_share)}"
        )
    axes.set_xlabel(name)
    axes.set_title(f"{name} ({diagnostic.kind}): {headline}, {diagnostic.label}")
    axes.legend(loc="best")
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def plot_cdfs(
    reference: pd.DataFrame,
    synthetic: pd.DataFrame,
    report: DiagnosticsReport,
    out_dir: str | Path,
    features: list[str] | None = None,
) -> list[Path]:
    """Write one PNG per feature (all of the report's by default) into ``out_dir``; return the paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    chosen = [report.feature(name) for name in features] if features is not None else report.features
    paths: list[Path] = []
    for index, diagnostic in enumerate(chosen):
        stem = re.sub(r"[^A-Za-z0-9_.-]", "_", diagnostic.name)
        path = out / f"{stem}.png"
        if path in paths:  # two names that sanitise alike must not overwrite each other
            path = out / f"{stem}_{index}.png"
        path.write_bytes(render_feature_png(reference, synthetic, diagnostic))
        paths.append(path)
    return paths


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"
