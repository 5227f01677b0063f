"""Every transform has an exact inverse on in-range data, keeps exact zeros and restores dtypes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from model_core.config import DataConfig, TransformConfig
from model_core.schema import DataError, infer_schema
from model_core.transforms import MODEL_SPACE_REACH, FittedTransforms

COMBINATIONS = [
    ("standard", "none"),
    ("standard", "clip"),
    ("standard", "sigmoid"),
    ("quantile", "sigmoid"),
]

# Sensor-like values: no NaN, no infinities, no subnormals (which no instrument reports).
finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False, allow_subnormal=False)


def _table(x: np.ndarray, zero_share: float = 0.0) -> pd.DataFrame:
    n = len(x)
    flow = np.where(np.arange(n) < int(zero_share * n), 0.0, np.abs(x) + 1.0)
    return pd.DataFrame({"x": x, "flow": flow, "state": (flow > 0).astype(int), "tag": np.full(n, 7)})


def _fit(frame: pd.DataFrame, normalization: str, bounds: str) -> FittedTransforms:
    schema = infer_schema(frame, DataConfig(continuous_columns=["x", "flow"], discrete_columns=["state"]))
    return FittedTransforms.fit(frame, schema, TransformConfig(normalization=normalization, bounds=bounds))


@pytest.mark.parametrize(("normalization", "bounds"), COMBINATIONS)
@settings(max_examples=30, deadline=None)
@given(x=arrays(np.float64, st.integers(20, 300), elements=finite, unique=True), zero_share=st.floats(0.1, 0.8))
def test_round_trip_is_exact(normalization, bounds, x, zero_share):
    frame = _table(x, zero_share)
    transforms = _fit(frame, normalization, bounds)
    continuous, discrete = transforms.transform(frame)
    back = transforms.inverse(continuous, discrete)
    for name in ("x", "flow"):
        original = frame[name].to_numpy()
        scale = np.maximum(np.abs(original), np.abs(original).max() * 1e-9 + 1e-12)
        assert np.all(np.abs(back[name].to_numpy() - original) <= 1e-6 * scale)
    if bounds != "none":  # zero is the flow's minimum: every bounded inverse gives it back exactly
        assert (back["flow"] == 0).mean() == (frame["flow"] == 0).mean()
    assert back["state"].dtype == np.int64 and back["state"].equals(frame["state"])
    assert back["tag"].dtype == np.int64 and (back["tag"] == 7).all()


@pytest.mark.parametrize(("normalization", "bounds"), COMBINATIONS)
def test_save_and_load_give_the_same_maps(tmp_path, normalization, bounds):
    rng = np.random.default_rng(0)
    frame = _table(rng.normal(size=500), 0.3)
    transforms = _fit(frame, normalization, bounds)
    transforms.save(tmp_path)
    loaded = FittedTransforms.load(tmp_path, transforms.schema)
    z = rng.normal(size=(100, 2)) * 3
    tokens = rng.integers(0, 2, size=(100, 1))
    pd.testing.assert_frame_equal(transforms.inverse(z, tokens), loaded.inverse(z, tokens))


def test_sigmoid_stays_in_range_without_edge_pileup():
    rng = np.random.default_rng(1)
    frame = _table(rng.uniform(0, 10, size=2000))
    wide = rng.normal(scale=1.5, size=(5000, 2))  # a model 50 % wider than the data
    tokens = np.zeros((5000, 1), dtype=int)
    clipped = _fit(frame, "standard", "clip").inverse(wide, tokens)["x"]
    squashed = _fit(frame, "standard", "sigmoid").inverse(wide, tokens)["x"]
    low, high = frame["x"].min(), frame["x"].max()
    for values in (clipped, squashed):
        assert values.between(low, high).all()
    at_edges = lambda v: ((v == low) | (v == high)).mean()  # noqa: E731
    assert at_edges(clipped) > 0.2
    assert at_edges(squashed) < at_edges(clipped) / 4


def test_quantile_inverse_is_bounded_by_construction():
    rng = np.random.default_rng(2)
    frame = _table(rng.exponential(size=1000), 0.4)
    back = _fit(frame, "quantile", "none").inverse(rng.normal(scale=10, size=(1000, 2)), np.zeros((1000, 1), int))
    assert back["x"].between(frame["x"].min(), frame["x"].max()).all()


def test_unseen_category_is_an_error_naming_the_column():
    frame = _table(np.linspace(0, 1, 50), 0.5)
    transforms = _fit(frame, "standard", "none")
    frame.loc[3, "state"] = 5
    with pytest.raises(DataError, match="'state'"):
        transforms.transform(frame)


def test_rounded_output_uses_the_data_precision():
    frame = _table(np.round(np.linspace(0, 1, 50), 2), 0.5)
    transforms = _fit(frame, "standard", "none")
    z, d = transforms.transform(frame)
    out = transforms.inverse(z + 1e-7, d, rounded=True)
    assert np.array_equal(out["x"].to_numpy(), frame["x"].to_numpy())


@pytest.mark.parametrize(("normalization", "bounds"), COMBINATIONS)
def test_model_intervals_are_exactly_the_model_values_whose_output_lies_inside(normalization, bounds):
    rng = np.random.default_rng(1)
    frame = _table(np.round(rng.normal(size=400), 3), 0.3)
    transforms = _fit(frame, normalization, bounds)
    # x in [-0.5, 0.8]; flow exactly 0 (its atom) in one row, strictly above it in the other.
    low = np.array([[-0.5, 0.0], [-np.inf, np.nextafter(0.0, 1.0)]])
    high = np.array([[0.8, 0.0], [np.inf, np.inf]])
    z_low, z_high = transforms.model_intervals(low, high)
    assert np.isneginf(z_low[1, 0]) and np.isposinf(z_high[1]).all()

    def output(z: np.ndarray) -> np.ndarray:
        return transforms.inverse(z, np.zeros((len(z), 1), dtype=np.int64), rounded=True)[["x", "flow"]].to_numpy()

    finite_low, finite_high = np.where(np.isfinite(z_low), z_low, -3.0), np.where(np.isfinite(z_high), z_high, 3.0)
    inside = output(np.concatenate([finite_low, finite_high, (finite_low + finite_high) / 2]))
    assert (inside >= np.tile(low, (3, 1))).all() and (inside <= np.tile(high, (3, 1))).all()
    # A hair beyond an end inside the model space's reach, the output is outside: the widest interval.
    lower_end, upper_end = np.abs(z_low) < MODEL_SPACE_REACH, np.abs(z_high) < MODEL_SPACE_REACH
    assert lower_end.sum() >= 2 and upper_end.sum() >= 2
    below, above = output(np.where(lower_end, z_low - 1e-6, 0.0)), output(np.where(upper_end, z_high + 1e-6, 0.0))
    assert (below[lower_end] < low[lower_end]).all() and (above[upper_end] > high[upper_end]).all()


def _plant(n: int = 3000) -> pd.DataFrame:
    """A tank that fills and empties at steady rates, a noisy AR(1) pressure and a pump's zero-inflated flow."""
    rng = np.random.default_rng(3)
    t = np.arange(n)
    tank = np.round(1.0 + 8.0 * np.abs((t / 37.0) % 2 - 1) + rng.normal(0, 0.01, n), 3)
    pressure = np.zeros(n)
    for i in range(1, n):
        pressure[i] = 0.9 * pressure[i - 1] + rng.normal()
    flow = np.where(rng.uniform(size=n) < 0.3, 0.0, rng.exponential(size=n))
    return pd.DataFrame({"tank": tank, "pressure": np.round(pressure, 4), "flow": np.round(flow, 4)})


def _fit_plant(frame: pd.DataFrame, linear_ramps: bool = True) -> FittedTransforms:
    schema = infer_schema(frame, DataConfig(continuous_columns=list(frame.columns)))
    return FittedTransforms.fit(frame, schema, TransformConfig(normalization="quantile", linear_ramps=linear_ramps))


def _roughness(values: np.ndarray) -> float:
    return float(np.diff(values, n=2).std() / np.diff(values).std())


def test_a_ramp_is_mapped_linearly_and_noise_and_atoms_by_quantiles():
    frame = _plant()
    transforms = _fit_plant(frame)
    assert transforms.linear is not None and transforms.linear.tolist() == [True, False, False]
    z, _ = transforms.transform(frame)
    # The tank's straight runs stay straight in model space (its second difference is as small, relative to
    # its step, as in the data); by quantiles they bend.
    bent = _fit_plant(frame, linear_ramps=False).transform(frame)[0]
    assert _roughness(z[:, 0]) == pytest.approx(_roughness(frame["tank"].to_numpy()), rel=1e-6)
    assert _roughness(bent[:, 0]) > 2 * _roughness(z[:, 0])
    np.testing.assert_array_equal(z[:, 1:], bent[:, 1:])
    back = transforms.inverse(z, np.zeros((len(frame), 0), dtype=np.int64), rounded=True)
    pd.testing.assert_frame_equal(back, frame)


def test_a_ramp_beyond_its_range_folds_back_inside_without_piling_on_the_edges():
    frame = _plant()
    transforms = _fit_plant(frame)
    rng = np.random.default_rng(4)
    wide = rng.normal(scale=1.5, size=(5000, 3))  # a model 50 % wider than the data
    tank = transforms.inverse(wide, np.zeros((5000, 0), dtype=np.int64))["tank"]
    low, high = frame["tank"].min(), frame["tank"].max()
    assert tank.between(low, high).all()
    assert ((tank == low) | (tank == high)).mean() < 0.001
    # Inside the range the map is linear: equal steps in model space are equal steps in data units.
    inside = transforms.inverse(np.array([[-0.5, 0, 0], [0.0, 0, 0], [0.5, 0, 0]]), np.zeros((3, 0), dtype=np.int64))["tank"]
    assert inside[1] - inside[0] == pytest.approx(inside[2] - inside[1])


def test_ramp_intervals_and_saved_maps_keep_the_linear_features(tmp_path):
    frame = _plant()
    transforms = _fit_plant(frame)
    low, high = np.array([[2.0, -np.inf, 0.0]]), np.array([[7.5, np.inf, np.inf]])
    z_low, z_high = transforms.model_intervals(low, high)
    out = transforms.inverse(np.concatenate([z_low, z_high]).clip(-3, 3), np.zeros((2, 0), dtype=np.int64), rounded=True)
    assert out["tank"].tolist() == [2.0, 7.5]
    transforms.save(tmp_path)
    loaded = FittedTransforms.load(tmp_path, transforms.schema)
    assert loaded.linear is not None and loaded.linear.tolist() == [True, False, False]
    z = np.random.default_rng(5).normal(size=(100, 3)) * 3
    tokens = np.zeros((100, 0), dtype=np.int64)
    pd.testing.assert_frame_equal(transforms.inverse(z, tokens), loaded.inverse(z, tokens))


def _stepped_table(rng: np.random.Generator, n: int = 2000) -> pd.DataFrame:
    """A sensor that reports in steps of 0.067 (three decimals, ~60 levels) beside a fine-grained one."""
    stepped = np.round(0.067 * rng.integers(0, 60, n), 3)
    return pd.DataFrame({"x": rng.normal(size=n), "flow": stepped, "state": rng.integers(0, 2, n), "tag": np.full(n, 7)})


@pytest.mark.parametrize(("normalization", "bounds"), COMBINATIONS)
def test_a_stepped_feature_is_generated_on_its_observed_values_only(normalization, bounds):
    rng = np.random.default_rng(0)
    frame = _stepped_table(rng)
    transforms = _fit(frame, normalization, bounds)
    assert transforms.levels is not None and transforms.levels[0] is None  # x: a value per row, not snapped
    observed = np.unique(frame["flow"])
    assert np.array_equal(transforms.levels[1], observed)
    z = rng.normal(size=(5000, 2)) * 2
    tokens = rng.integers(0, 2, size=(5000, 1))
    out = transforms.inverse(z, tokens, rounded=True)
    assert np.isin(out["flow"], observed).all()
    raw = transforms.inverse(z, tokens)  # unrounded (model-space checks): no snapping either
    assert not np.isin(raw["flow"], observed).all()
    # Snapping moves a value to the nearest observed one: within the observed range, never more than half
    # the widest gap; beyond it (bounds 'none'), to the edge.
    inside = np.clip(np.round(raw["flow"], 3), observed.min(), observed.max())
    assert np.abs(out["flow"] - inside).max() <= np.diff(observed).max() / 2 + 1e-9
    assert len(np.unique(out["x"])) > 4000  # the fine-grained feature keeps its values


def test_snapping_levels_survive_save_and_load_and_can_be_turned_off(tmp_path):
    rng = np.random.default_rng(1)
    frame = _stepped_table(rng)
    schema = infer_schema(frame, DataConfig(continuous_columns=["x", "flow"], discrete_columns=["state"]))
    transforms = FittedTransforms.fit(frame, schema, TransformConfig())
    transforms.save(tmp_path)
    loaded = FittedTransforms.load(tmp_path, schema)
    assert loaded.levels is not None and loaded.levels[0] is None
    assert np.array_equal(loaded.levels[1], transforms.levels[1])
    z, tokens = rng.normal(size=(300, 2)), rng.integers(0, 2, size=(300, 1))
    pd.testing.assert_frame_equal(transforms.inverse(z, tokens, rounded=True), loaded.inverse(z, tokens, rounded=True))
    off = FittedTransforms.fit(frame, schema, TransformConfig(snap_to_levels=False))
    assert off.levels is None
    assert not np.isin(off.inverse(z, tokens, rounded=True)["flow"], np.unique(frame["flow"])).all()
