"""Statistical fidelity metrics of synthetic windows against real ones.

Everything here works on arrays shaped ``[windows, steps, features]`` in original units, because every
comparison of the benchmark (the model, the real-vs-real floors, the i.i.d. and VAR(1) baselines)
produces windows: one shape keeps the metrics blind to where a window came from, so the floor, the
baseline and the model are measured by literally the same code.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import ks_2samp
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

from model_core.diagnostics import DiagnosticsReport, diagnose

#: A flow column ``F_X`` and a state column ``S_X`` describe the same actuator X.
_FLOW_NAME = re.compile(r"^F_(.+)$")


def frame_to_windows(frame: pd.DataFrame, names: list[str]) -> np.ndarray:
    """A generated long-format table (sequence_id, step, features) as ``[n, L, D]``."""
    ordered = frame.sort_values(["sequence_id", "step"], kind="stable")
    n_sequences = ordered["sequence_id"].nunique()
    values = ordered[names].to_numpy(dtype=float)
    return values.reshape(n_sequences, len(values) // n_sequences, len(names))


def windows_to_frame(windows: np.ndarray, names: list[str]) -> pd.DataFrame:
    """The inverse of :func:`frame_to_windows`: what ``diagnose`` and the CDF plots read."""
    n, length, _ = windows.shape
    frame = pd.DataFrame(windows.reshape(n * length, -1), columns=names)
    frame.insert(0, "step", np.tile(np.arange(length), n))
    frame.insert(0, "sequence_id", np.repeat(np.arange(n), length))
    return frame


def marginal_metrics(
    real: np.ndarray, synthetic: np.ndarray, names: list[str], kinds: dict[str, str]
) -> tuple[dict[str, Any], DiagnosticsReport]:
    """KS (continuous), TVD and invalid share (discrete), exactness of constant columns.

    Delegates to the service's own ``diagnose`` so the benchmark and the service's KS report can never
    disagree on what "KS" means.
    """
    report = diagnose(windows_to_frame(real, names), windows_to_frame(synthetic, names), kinds=kinds)
    discrete = [f for f in report.features if f.kind == "discrete"]
    constant = [f for f in report.features if f.kind == "constant"]
    metrics = {
        "ks_mean": report.summary.ks_mean,
        "ks_max": report.summary.ks_max,
        "tvd_mean": report.summary.tvd_mean,
        # Every discrete feature has the same number of cells, so the mean share is the share of all cells.
        "invalid_share": _mean_or_none([f.invalid_share for f in discrete if f.invalid_share is not None]),
        "constant_columns": len(constant),
        "constant_exact": sum(f.mismatch_share == 0 for f in constant),
        "worst_features": report.summary.worst_features,
    }
    return metrics, report


#: Statistics of one window of one feature [n, L] -> [n], whose distributions over windows the benchmark
#: compares: the level, the spread and the pace of each window.
WINDOW_STATISTICS = {
    "mean": lambda w: w.mean(axis=1),
    "std": lambda w: w.std(axis=1),
    "step": lambda w: np.abs(np.diff(w, axis=1)).mean(axis=1),
}


def window_statistics_ks(
    real: np.ndarray, synthetic: np.ndarray, names: list[str], kinds: dict[str, str]
) -> dict[str, Any]:
    """KS distance between the real and the synthetic distribution of each window statistic (the window's
    mean, standard deviation and mean absolute step), per continuous feature not constant in the real data.

    Why: the marginal KS pools every step of every window, so it cannot see *how* a window moves. A
    synthetic tank whose steps are noisier than the real ramps, or whose daily mean wanders where the
    real one is held by its controller, has the marginal of the real tank (BATADAL: KS 0.013) and is
    still told apart window by window (docs/DECISIONS.md). Returns ``{"mean": {statistic: mean KS over
    the features}, "features": {feature: {statistic: KS}}}`` (``mean`` None without such features).
    """
    per_feature: dict[str, dict[str, float]] = {}
    for j, name in enumerate(names):
        if kinds[name] != "continuous" or np.ptp(real[..., j]) == 0:
            continue
        per_feature[name] = {
            key: float(ks_2samp(statistic(real[..., j]), statistic(synthetic[..., j])).statistic)
            for key, statistic in WINDOW_STATISTICS.items()
        }
    return {
        "mean": {key: _mean_or_none([ks[key] for ks in per_feature.values()]) for key in WINDOW_STATISTICS},
        "features": per_feature,
    }


def pooled_acf(windows: np.ndarray, max_lag: int) -> np.ndarray:
    """Autocorrelation at lags ``0..max_lag`` per feature, from (x_t, x_t+k) pairs inside windows.

    Pairs are pooled over all windows rather than averaged per window: a 24-step window in which a pump
    never switches has no defined autocorrelation, and per-window estimates from 24 points are biased.
    A pair never straddles two windows, which are unrelated draws. Undefined values (a feature without
    variation) are NaN. Returns ``[max_lag + 1, D]``.
    """
    _, length, n_features = windows.shape
    if max_lag >= length:
        raise ValueError(f"max_lag {max_lag} needs windows longer than {length} steps")
    out = np.full((max_lag + 1, n_features), np.nan)
    for lag in range(max_lag + 1):
        lead = windows[:, : length - lag, :].reshape(-1, n_features)
        lagged = windows[:, lag:, :].reshape(-1, n_features)
        out[lag] = _columnwise_pearson(lead, lagged)
    return out


def lag1_acf_error(real: np.ndarray, synthetic: np.ndarray) -> float | None:
    """Mean over features of |lag-1 autocorrelation real - synthetic|.

    Features constant in the real data have no autocorrelation and are skipped; a synthetic feature with
    no variation where the real one has some counts as autocorrelation 0 (it carries no dynamics).
    """
    acf_real = pooled_acf(real, 1)[1]
    acf_syn = np.nan_to_num(pooled_acf(synthetic, 1)[1], nan=0.0)
    defined = np.isfinite(acf_real)
    return _mean_or_none(list(np.abs(acf_real - acf_syn)[defined]))


def correlation_error(real: np.ndarray, synthetic: np.ndarray) -> float | None:
    """Mean |difference| of the off-diagonal Pearson correlations between features, over all steps.

    Constant real columns have no correlation and are left out; a synthetic column with no variation
    counts as uncorrelated (0), so a collapsed feature is penalised instead of silently skipped.
    """
    n_features = real.shape[-1]
    rows_real, rows_syn = real.reshape(-1, n_features), synthetic.reshape(-1, n_features)
    keep = np.ptp(rows_real, axis=0) > 0
    if keep.sum() < 2:
        return None
    corr_real = _correlation_matrix(rows_real[:, keep])
    corr_syn = np.nan_to_num(_correlation_matrix(rows_syn[:, keep]), nan=0.0)
    upper = np.triu_indices(int(keep.sum()), k=1)
    return float(np.mean(np.abs(corr_real - corr_syn)[upper]))


def closest_real_distance(
    real: np.ndarray,
    starts: np.ndarray,
    synthetic: np.ndarray,
    columns: list[int],
    rng: np.random.Generator,
    max_queries: int = 2000,
    natural_quantile: float = 0.05,
) -> dict[str, float]:
    """Does the generator copy real windows? Distance to the closest real window, against a real yardstick.

    Windows are compared as flat vectors of the given ``columns``, each scaled by its real standard
    deviation. The yardstick is how close real data comes to *itself from another period*: for real
    windows, the distance to the closest real window that does not overlap it in time (``starts`` differ
    by a window length or more). A generator that draws fresh sequences from the plant's process sits
    about as far from the real windows as that (``ratio`` near 1 or above) and has about
    ``natural_quantile`` of its windows closer than the yardstick's ``natural_quantile`` quantile
    (``copy_share``); one that replays its training data has ``ratio`` well below 1 and ``copy_share``
    near 1.
    """
    length = real.shape[1]
    scale = real[:, :, columns].reshape(-1, len(columns)).std(axis=0)
    scale = np.where(scale > 0, scale, 1.0)

    def flat(windows: np.ndarray) -> np.ndarray:
        return (windows[:, :, columns] / scale).reshape(len(windows), -1).astype(np.float32)

    reference = flat(real)
    queries = rng.choice(len(real), size=min(max_queries, len(real)), replace=False)
    natural = _closest_distances(reference[queries], reference, np.abs(starts[queries][:, None] - starts[None]) < length)
    picks = rng.choice(len(synthetic), size=min(max_queries, len(synthetic)), replace=False)
    closest = _closest_distances(flat(synthetic[picks]), reference, None)
    threshold = float(np.quantile(natural, natural_quantile))
    return {
        "synthetic_median": float(np.median(closest)),
        "real_median": float(np.median(natural)),
        "ratio": float(np.median(closest) / max(np.median(natural), 1e-12)),
        "copy_share": float(np.mean(closest < threshold)),
        "natural_quantile": natural_quantile,
    }


def row_relations(
    real_fit: np.ndarray,
    real_test: np.ndarray,
    judged: dict[str, np.ndarray],
    names: list[str],
    kinds: dict[str, str],
    rng: np.random.Generator,
    max_rows: int = 10_000,
) -> dict[str, Any]:
    """How far rows lie from the relations that tie the real features of one time step together.

    Rows ``[n, D]``: ``real_fit`` teaches; ``real_test`` (other periods of the series) and each set of
    ``judged`` rows (synthetic rows, real rows of yet other periods as the floor) are judged. For each
    continuous feature, a gradient-boosted regressor learns it from the other non-constant features of the
    same row; its error on ``real_test`` (``real_error``) and on each judged set is given in units of the
    feature's real standard deviation, with their ``ratio``. A ratio far above 1 means those rows break a
    relation the real ones keep. Per judged set, a row classifier (gradient boosting on single rows: real
    vs judged, tested on ``real_test`` and judged rows it has not seen) gives ``row_gap`` = |accuracy - 0.5|.
    Every set is judged by the same regressors, learnt once.

    Why: a physical plant's readings of one instant are tied (a pump's flow follows from its head, a
    junction's pressure from the tank levels and pump states), and a detector trained on synthetic data
    learns whatever the rows do. The window classifier of the discriminative score hardly sees such a
    cue: BATADAL's synthetic rows broke relations the real ones hold to 0.1-3 % of a feature's std by
    4-30 times, and single rows were told apart at 0.26 (real rows of other periods: 0.02), while the
    window score moved within its spread when they were repaired (docs/DECISIONS.md).
    """
    columns = [j for j in range(real_fit.shape[1]) if np.ptp(real_fit[:, j]) > 0]

    def subsample(rows: np.ndarray) -> np.ndarray:
        return rows[rng.choice(len(rows), size=min(max_rows, len(rows)), replace=False)]

    def rms(error: np.ndarray, spread: float) -> float:
        return float(np.sqrt(np.mean(error**2))) / spread

    fit, test = subsample(real_fit), subsample(real_test)
    sides = {label: subsample(rows) for label, rows in judged.items()}
    real_error: dict[str, float] = {}
    errors: dict[str, dict[str, dict[str, float]]] = {label: {} for label in sides}
    for j in columns:
        others = [k for k in columns if k != j]
        if kinds[names[j]] != "continuous" or not others:
            continue
        model = HistGradientBoostingRegressor(max_iter=200, random_state=0).fit(fit[:, others], fit[:, j])
        spread = float(fit[:, j].std())
        real_error[names[j]] = rms(model.predict(test[:, others]) - test[:, j], spread)
        for label, rows in sides.items():
            error = rms(model.predict(rows[:, others]) - rows[:, j], spread)
            errors[label][names[j]] = {"error": error, "ratio": error / max(real_error[names[j]], 1e-12)}
    result: dict[str, Any] = {"real_error": real_error, "rows": {"fit": len(fit), "test": len(test)}}
    for label, rows in sides.items():
        half = len(rows) // 2
        n = min(len(fit), len(test), half)
        train_rows = np.concatenate([fit[:n], rows[:n]])[:, columns]
        test_rows = np.concatenate([test[:n], rows[half : half + n]])[:, columns]
        labels = np.r_[np.ones(n), np.zeros(n)]
        classifier = HistGradientBoostingClassifier(max_iter=200, random_state=0).fit(train_rows, labels)
        gap = float(abs(classifier.score(test_rows, labels) - 0.5))
        result[label] = {"features": errors[label], "row_gap": gap, "rows": len(rows)}
    return result


def _closest_distances(queries: np.ndarray, reference: np.ndarray, excluded: np.ndarray | None) -> np.ndarray:
    """Euclidean distance from each query to its closest reference row, ignoring ``excluded`` pairs."""
    reference_norms = (reference * reference).sum(axis=1)
    out = np.empty(len(queries))
    for start in range(0, len(queries), 512):
        block = queries[start : start + 512]
        squared = (block * block).sum(axis=1)[:, None] + reference_norms[None] - 2.0 * block @ reference.T
        if excluded is not None:
            squared[excluded[start : start + 512]] = np.inf
        out[start : start + 512] = np.sqrt(np.maximum(squared.min(axis=1), 0.0))
    return out


def flow_state_pairs(names: list[str], real: np.ndarray) -> list[tuple[str, str]]:
    """(flow, state) column pairs named ``F_X`` / ``S_X`` whose state actually switches in the real data."""
    index = {name: i for i, name in enumerate(names)}
    pairs = []
    for name in names:
        match = _FLOW_NAME.match(name)
        state = f"S_{match.group(1)}" if match else None
        if state in index and np.ptp(real[..., index[state]]) > 0:
            pairs.append((name, state))
    return pairs


def flow_state_agreement(
    windows: np.ndarray, names: list[str], pairs: list[tuple[str, str]]
) -> dict[str, Any] | None:
    """Share of time steps where a flow is exactly 0 if and only if its state is 0, per pair and overall.

    The joint constraint of a pump: it moves no water when off and some when on. Marginals can be
    perfect while this is broken at every step, so it is measured on its own.
    """
    if not pairs:
        return None
    index = {name: i for i, name in enumerate(names)}
    per_pair = {}
    for flow, state in pairs:
        agree = (windows[..., index[flow]] == 0) == (windows[..., index[state]] == 0)
        per_pair[f"{flow}/{state}"] = float(agree.mean())
    return {"mean": float(np.mean(list(per_pair.values()))), "pairs": per_pair}


def _columnwise_pearson(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a - a.mean(axis=0)
    b = b - b.mean(axis=0)
    denominator = np.sqrt((a * a).sum(axis=0) * (b * b).sum(axis=0))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, (a * b).sum(axis=0) / denominator, np.nan)


def _correlation_matrix(rows: np.ndarray) -> np.ndarray:
    """Pearson correlations with NaN (not a warning and a garbage value) for columns without variation."""
    centred = rows - rows.mean(axis=0)
    norms = np.sqrt((centred * centred).sum(axis=0))
    with np.errstate(invalid="ignore", divide="ignore"):
        unit = np.where(norms > 0, centred / norms, np.nan)
    return unit.T @ unit


def _mean_or_none(values: list[float]) -> float | None:
    return float(np.mean(values)) if len(values) else None
