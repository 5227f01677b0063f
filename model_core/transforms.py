"""Reversible maps between original units and the model's space, fitted on the training data.

Continuous features go to an unbounded, roughly standard-normal space:

* ``standard`` — z-score. With ``bounds='sigmoid'`` the z-score is taken of
  ``logit(eps + (1 - 2 eps) * (x - min) / (max - min))``, so the inverse is a sigmoid that can never leave
  the observed range and, unlike clipping, does not heap every overshoot onto the edges: only values the
  model puts beyond the ``eps`` margin land exactly on an edge, which is how a zero-inflated flow keeps its
  exact zeros.
* ``quantile`` — scikit-learn's ``QuantileTransformer`` to a normal distribution (as in TabDDPM). Its
  inverse is a piecewise-linear map onto the training quantiles, so it is bounded by construction and
  maps a whole interval of model space onto a repeated value (the zeros of a pump's flow), which keeps the
  exact share of zeros. ``bounds`` has nothing left to do there.

  Except for *ramps* (``linear_ramps``, ``ramping_features``): a feature that moves in long straight runs
  (a tank filling at a steady rate) is z-scored instead, and folded back into its range on the way out.
  The quantile map is steep where data are rare and flat where they are common, so it bends a straight
  run into an S; stage 1 learns the bent run, the residual it draws does not undo the bend, and mapped
  back the synthetic tank wobbles mid-range where the real one is straight (BATADAL's L_T1: second
  difference 1.8 times the real; docs/DECISIONS.md, "Default: ramps are mapped linearly").

Discrete features become category indices (``levels[index]`` restores the value and its integer dtype);
constant features are not modelled and are restored from the schema. Everything is saved as JSON + NPZ;
no pickle is ever written or read.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import norm
from sklearn.preprocessing import QuantileTransformer

from model_core.config import TransformConfig
from model_core.schema import DataError, TableSchema

#: Margin of the logit in sigmoid bounds: the edges map to logit(eps) = -/+ 6.9, a finite spike.
SIGMOID_EPS = 1e-3
#: A continuous feature is a ramp when the quantile map raises the ratio of its second to its first
#: difference by more than this factor (BATADAL's four ramping tanks 1.42-1.87, every other feature there
#: and in ETTh1 at most 1.13).
RAMP_BEND = 1.2
#: ... unless one value holds at least this share of the rows: an atom (a full tank, a flow's 0) needs the
#: quantile map, which gives it a whole interval of model space and so keeps its exact share.
ATOM_SHARE = 0.05
#: A continuous feature is read at a fixed resolution when it takes at most one distinct value per this
#: many rows (and at most ``MAX_LEVELS`` values): ETTh1's loads, 126-1,031 values in 17,420 rows, one
#: every 0.03-0.07. Generated values are then snapped to the nearest observed value (``levels``).
#: BATADAL's running plant (at most 2 rows per value) and the demo simulator are left alone; of BATADAL
#: only the flows of two rarely running pumps qualify (17 and 5 values).
ROWS_PER_LEVEL = 4
MAX_LEVELS = 10_000
#: Model-space values beyond -/+ this map to the edges of every feature's range (quantile: at most 5.2;
#: sigmoid bounds: a standardised logit, a few units).
MODEL_SPACE_REACH = 50.0


@dataclass
class FittedTransforms:
    schema: TableSchema
    normalization: str
    bounds: str
    #: Per continuous feature, in schema order: observed range and the z-score parameters.
    low: np.ndarray
    high: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    quantiles: np.ndarray | None = None
    references: np.ndarray | None = None
    #: Quantile normalisation only: per continuous feature, True where it is z-scored instead (a ramp).
    linear: np.ndarray | None = None
    #: Per continuous feature, its sorted observed values where it is read at a fixed resolution
    #: (``resolution_levels``), else None: output is snapped to them.
    levels: list[np.ndarray | None] | None = None
    _quantile: QuantileTransformer | None = field(default=None, repr=False)

    @property
    def continuous(self) -> list[str]:
        return self.schema.names("continuous")

    @property
    def discrete(self) -> list[str]:
        return self.schema.names("discrete")

    @property
    def n_categories(self) -> list[int]:
        return [len(self.schema.feature(name).levels or []) for name in self.discrete]

    # ---- fitting -------------------------------------------------------------------------------------
    @classmethod
    def fit(cls, values: pd.DataFrame, schema: TableSchema, config: TransformConfig) -> FittedTransforms:
        continuous = schema.names("continuous")
        x = values[continuous].to_numpy(dtype=np.float64)
        low = x.min(axis=0) if continuous else np.zeros(0)
        high = x.max(axis=0) if continuous else np.zeros(0)
        fitted = cls(
            schema=schema,
            normalization=config.normalization,
            bounds=config.bounds,
            low=low,
            high=high,
            mean=np.zeros(len(continuous)),
            std=np.ones(len(continuous)),
        )
        if config.normalization == "quantile" and continuous:
            quantile = QuantileTransformer(
                n_quantiles=min(config.n_quantiles, len(x)), output_distribution="normal", subsample=None
            )
            quantile.fit(x)
            fitted.quantiles, fitted.references = quantile.quantiles_, quantile.references_
            fitted._quantile = quantile
            if config.linear_ramps:
                linear = ramping_features(x, quantile.transform(x))
                fitted.linear = linear
                fitted.mean = np.where(linear, x.mean(axis=0), 0.0)
                fitted.std = np.where(linear & (x.std(axis=0) > 0), x.std(axis=0), 1.0)
        elif continuous:
            y = fitted._pre_standard(x)
            fitted.mean = y.mean(axis=0)
            fitted.std = np.where(y.std(axis=0) > 0, y.std(axis=0), 1.0)
        if config.snap_to_levels:
            fitted.levels = [resolution_levels(column) for column in x.T]
        return fitted

    # ---- forward -------------------------------------------------------------------------------------
    def transform(self, values: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """Original table -> (continuous model values [N, Dc] float64, discrete indices [N, Dd] int64)."""
        x = values[self.continuous].to_numpy(dtype=np.float64)
        if self.continuous:
            if self.normalization == "quantile":
                z = self._spread_atoms(x, self._quantile_transformer().transform(x))
                if self.linear is not None and self.linear.any():
                    z[:, self.linear] = (x[:, self.linear] - self.mean[self.linear]) / self.std[self.linear]
            else:
                z = (self._pre_standard(x) - self.mean) / self.std
        else:
            z = np.zeros((len(values), 0))
        indices = np.zeros((len(values), len(self.discrete)), dtype=np.int64)
        for j, name in enumerate(self.discrete):
            levels = np.asarray(self.schema.feature(name).levels)
            column = values[name].to_numpy(dtype=np.float64)
            index = np.clip(np.searchsorted(levels, column), 0, len(levels) - 1)
            invalid = levels[index] != column
            if invalid.any():
                row = int(np.flatnonzero(invalid)[0])
                raise DataError(
                    f"value {column[row]!r} in discrete column '{name}' (row {row + 1}) is not one of "
                    f"the categories seen in training {levels.tolist()}"
                )
            indices[:, j] = index
        return z, indices

    def _spread_atoms(self, x: np.ndarray, z: np.ndarray) -> np.ndarray:
        """Spread each repeated value over its whole quantile interval instead of one point.

        A value that fills quantile levels [lo, hi] (a flow's 0 in 27 % of the rows) would map to a single
        spike, whose blurred reconstruction spills across the edge of the interval and turns real flows
        into zeros. Drawing its level uniformly in [lo, hi] (a randomised probability integral transform,
        seeded so that training is reproducible) makes the model-space density smooth; the inverse maps
        the whole interval back to the exact value, so round trips stay exact. Rows must be in time
        order (as ``prepare_table`` leaves them).
        """
        assert self.quantiles is not None and self.references is not None
        rng = np.random.default_rng(0)
        z = z.copy()
        bound = float(norm.ppf(1 - 1e-7))
        for j in range(x.shape[1]):
            levels = self.quantiles[:, j]
            values, first, counts = np.unique(levels, return_index=True, return_counts=True)
            for value, start, count in zip(values, first, counts, strict=True):
                rows = x[:, j] == value
                if count < 2 or not rows.any():
                    continue
                low, high = self.references[start], self.references[start + count - 1]
                # One level per run of consecutive repeats: a pump that stays off stays put in model
                # space too, so the trend model still sees its persistence.
                run_id = np.cumsum(np.diff(rows.astype(np.int8), prepend=0) == 1)[rows]
                u = rng.uniform(low, high, size=int(run_id.max()))
                z[rows, j] = np.clip(norm.ppf(u[run_id - 1]), -bound, bound)
        return z

    def _pre_standard(self, x: np.ndarray) -> np.ndarray:
        if self.bounds != "sigmoid":
            return x
        span = np.where(self.high > self.low, self.high - self.low, 1.0)
        u = np.clip((x - self.low) / span, 0.0, 1.0)
        p = SIGMOID_EPS + (1 - 2 * SIGMOID_EPS) * u
        return np.log(p) - np.log1p(-p)

    # ---- inverse -------------------------------------------------------------------------------------
    def inverse(self, continuous: np.ndarray, discrete: np.ndarray, rounded: bool = False) -> pd.DataFrame:
        """Model space -> a table of every feature in schema order, original values and dtypes.

        ``continuous`` is [N, Dc] and ``discrete`` [N, Dd] (indices; out-of-range indices are an error,
        the samplers never produce them). ``rounded`` rounds continuous values to the precision seen in
        the data, for output.
        """
        n = len(continuous) if len(self.continuous) else len(discrete)
        columns: dict[str, np.ndarray] = {}
        if self.continuous:
            x = self._continuous_inverse(np.asarray(continuous, dtype=np.float64), rounded)
            for j, name in enumerate(self.continuous):
                spec = self.schema.feature(name)
                columns[name] = x[:, j].astype(np.int64) if rounded and spec.is_integer else x[:, j]
        for j, name in enumerate(self.discrete):
            spec = self.schema.feature(name)
            levels = np.asarray(spec.levels)
            value = levels[np.asarray(discrete[:, j], dtype=np.int64)]
            columns[name] = value.astype(np.int64) if spec.is_integer else value
        for spec in self.schema.features:
            if spec.kind == "constant":
                value = np.full(n, (spec.levels or [0.0])[0])
                columns[spec.name] = value.astype(np.int64) if spec.is_integer else value
        return pd.DataFrame({name: columns[name] for name in self.schema.names()})

    def _continuous_inverse(self, z: np.ndarray, rounded: bool, fold: bool = True) -> np.ndarray:
        """Continuous model values [N, Dc] -> original units [N, Dc] (float; rounded to each feature's
        precision when ``rounded``). ``fold`` False leaves a linearly mapped ramp unbounded (monotone)."""
        if self.normalization == "quantile":
            x = self._quantile_transformer().inverse_transform(z)
            if self.linear is not None and self.linear.any():
                ramp = z[:, self.linear] * self.std[self.linear] + self.mean[self.linear]
                if fold:
                    ramp = _fold_into(ramp, self.low[self.linear], self.high[self.linear])
                x[:, self.linear] = ramp
        else:
            x = self._post_standard(z * self.std + self.mean)
        if rounded:
            x = np.stack([np.round(x[:, j], self.schema.feature(name).decimals) for j, name in enumerate(self.continuous)], axis=1)
            for j, levels in enumerate(self.levels or []):
                if levels is not None:
                    x[:, j] = _nearest(levels, x[:, j])
        return x

    def model_intervals(self, low: np.ndarray, high: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The model-space image of intervals in original units: for ``low``/``high`` [K, Dc] (-/+inf
        where unbounded), the widest ``[z_low, z_high]`` [K, Dc] whose output (rounded, as generation
        writes it) lies in ``[low, high]``; an empty interval comes back with ``z_low > z_high``.

        Found by bisection on the inverse map, which is monotone in every feature for both
        normalisations (a ramp's before it is folded into its range: inside an interval of the range no
        value is folded); 60 halvings of a span of 2 * ``MODEL_SPACE_REACH`` are finer than float64.
        """
        low, high = np.asarray(low, dtype=np.float64), np.asarray(high, dtype=np.float64)
        shape = low.shape

        def first_z(target: np.ndarray, strictly_above: bool) -> np.ndarray:
            """Smallest z whose output is >= target (> target when ``strictly_above``)."""
            below, above = np.full(shape, -MODEL_SPACE_REACH), np.full(shape, MODEL_SPACE_REACH)
            for _ in range(60):
                middle = (below + above) / 2
                x = self._continuous_inverse(middle.reshape(-1, shape[-1]), rounded=True, fold=False).reshape(shape)
                reached = x > target if strictly_above else x >= target
                above, below = np.where(reached, middle, above), np.where(reached, below, middle)
            return above

        z_low = np.where(np.isfinite(low), first_z(low, strictly_above=False), -np.inf)
        z_high = np.where(np.isfinite(high), np.nextafter(first_z(high, strictly_above=True), -np.inf), np.inf)
        return z_low, z_high

    def _post_standard(self, y: np.ndarray) -> np.ndarray:
        if self.bounds == "none":
            return y
        if self.bounds == "clip":
            return self._snap_to_edges(np.clip(y, self.low, self.high))
        p = 1.0 / (1.0 + np.exp(-np.clip(y, -700, 700)))
        u = np.clip((p - SIGMOID_EPS) / (1 - 2 * SIGMOID_EPS), 0.0, 1.0)
        return self._snap_to_edges(self.low + u * (self.high - self.low))

    def _snap_to_edges(self, x: np.ndarray) -> np.ndarray:
        """Undo float round-off at the range's edges, so an edge value (a flow's exact 0) comes back exactly."""
        tolerance = 1e-9 * np.maximum(self.high - self.low, 1e-300)
        x = np.where(np.abs(x - self.low) <= tolerance, self.low, x)
        return np.where(np.abs(x - self.high) <= tolerance, self.high, x)

    def _quantile_transformer(self) -> QuantileTransformer:
        if self._quantile is None:
            assert self.quantiles is not None and self.references is not None
            quantile = QuantileTransformer(n_quantiles=len(self.references), output_distribution="normal")
            quantile.quantiles_ = self.quantiles
            quantile.references_ = self.references
            quantile.n_quantiles_ = len(self.references)
            quantile.n_features_in_ = self.quantiles.shape[1]
            self._quantile = quantile
        return self._quantile

    # ---- persistence ---------------------------------------------------------------------------------
    def save(self, directory: Path) -> None:
        meta = {"normalization": self.normalization, "bounds": self.bounds, "continuous": self.continuous}
        (directory / "transforms.json").write_text(json.dumps(meta, indent=2) + "\n")
        arrays = {"low": self.low, "high": self.high, "mean": self.mean, "std": self.std}
        if self.quantiles is not None and self.references is not None:
            arrays |= {"quantiles": self.quantiles, "references": self.references}
        if self.linear is not None:
            arrays |= {"linear": self.linear}
        if self.levels is not None:
            # Ragged: every feature's levels one after another, and how many each has (0: not snapped).
            counts = np.array([0 if levels is None else len(levels) for levels in self.levels], dtype=np.int64)
            values = [levels for levels in self.levels if levels is not None]
            arrays |= {"level_counts": counts, "level_values": np.concatenate(values) if values else np.zeros(0)}
        with open(directory / "transforms.npz", "wb") as handle:
            np.savez(handle, **arrays)  # type: ignore[arg-type]

    @classmethod
    def load(cls, directory: Path, schema: TableSchema) -> FittedTransforms:
        meta = json.loads((directory / "transforms.json").read_text())
        with np.load(directory / "transforms.npz", allow_pickle=False) as arrays:
            data = {key: arrays[key] for key in arrays.files}
        if meta["continuous"] != schema.names("continuous"):
            raise ValueError("transforms.json does not match schema.json (continuous features differ)")
        return cls(
            schema=schema,
            normalization=meta["normalization"],
            bounds=meta["bounds"],
            low=data["low"],
            high=data["high"],
            mean=data["mean"],
            std=data["std"],
            quantiles=data.get("quantiles"),
            references=data.get("references"),
            linear=data.get("linear"),  # absent in bundles from before ramps were mapped linearly
            levels=_split_levels(data.get("level_counts"), data.get("level_values")),  # absent before snapping
        )


def ramping_features(x: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Which continuous features [Dc] (rows ``x`` [N, Dc] in time order, their quantile map ``z``) are ramps:
    the map raises the ratio of the second to the first difference by more than ``RAMP_BEND``, and no value
    holds ``ATOM_SHARE`` of the rows.

    Why this test: the ratio measures how far a series is from moving in straight runs, and a map that
    bends straight runs raises it. Noise-like features (ETTh1's loads, a pressure) keep it, whatever their
    marginal; a tank that fills and empties at steady rates between rarely visited levels does not.
    """
    if len(x) < 4:
        return np.zeros(x.shape[1], dtype=bool)

    def roughness(values: np.ndarray) -> np.ndarray:
        step = np.diff(values, axis=0).std(axis=0)
        return np.diff(values, n=2, axis=0).std(axis=0) / np.where(step > 0, step, np.inf)

    data = roughness(x)
    bend = roughness(z) / np.where(data > 0, data, np.inf)
    top_share = np.array([np.unique(column, return_counts=True)[1].max() / len(column) for column in x.T])
    return (bend > RAMP_BEND) & (top_share < ATOM_SHARE)


def resolution_levels(column: np.ndarray) -> np.ndarray | None:
    """The sorted distinct values of a continuous feature read at a fixed resolution (at most one distinct
    value per ``ROWS_PER_LEVEL`` rows, and at most ``MAX_LEVELS``), else None.

    Why: a sensor that reports in steps of 0.067 never reads 5.81. Generated values rounded only to the
    data's decimals fall between its steps, and one feature of one row then tells synthetic data apart:
    ETTh1's rows at 0.452 (real rows of other periods: 0.109), its LULL alone at 0.424. Snapped to the
    observed values, 0.015, with the window scores unchanged (docs/DECISIONS.md).
    """
    levels = np.unique(column)
    if len(levels) > min(len(column) / ROWS_PER_LEVEL, MAX_LEVELS):
        return None
    return levels


def _nearest(levels: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Each value of ``x`` replaced by the nearest of the sorted ``levels`` (the lower one on a tie)."""
    if len(levels) == 1:
        return np.full_like(x, levels[0])
    upper = np.clip(np.searchsorted(levels, x), 1, len(levels) - 1)
    lower = upper - 1
    return np.where(x - levels[lower] <= levels[upper] - x, levels[lower], levels[upper])


def _split_levels(counts: np.ndarray | None, values: np.ndarray | None) -> list[np.ndarray | None] | None:
    """The inverse of the ragged save: per feature its levels, or None where it is not snapped."""
    if counts is None or values is None:
        return None
    ends = np.cumsum(counts)
    return [values[end - count : end] if count else None for count, end in zip(counts, ends, strict=True)]


def _fold_into(x: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """Reflect values beyond ``low``/``high`` back inside (then clip what is more than a range beyond).

    Why fold, not clip: a ramp that overshoots its edge by a little comes back a little inside it,
    so no mass piles up on the edge, and the map stays linear inside the range (a sigmoid would bend a
    ramp near its edges, where tanks turn).
    """
    folded = np.where(x < low, 2 * low - x, x)
    folded = np.where(folded > high, 2 * high - folded, folded)
    return np.clip(folded, low, high)
