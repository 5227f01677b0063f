"""Fast checks of the benchmark's metric functions: each on data whose right answer is known."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

# bench/ is a folder of scripts, not an installed package: make the repo root importable however pytest
# was started (``python -m pytest`` adds it, a bare ``pytest`` does not).
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.baselines import (  # noqa: E402
    STRETCH_WINDOWS,
    fit_var1,
    iid_sample,
    snap_to_support,
    stretch_labels,
    time_halves,
    unseen_stretches,
)
from bench.giveaway import feature_groups, split_rows_by_stretch, subsets, window_view  # noqa: E402
from bench.metrics import (  # noqa: E402
    closest_real_distance,
    correlation_error,
    flow_state_agreement,
    flow_state_pairs,
    lag1_acf_error,
    pooled_acf,
    row_relations,
    window_statistics_ks,
)
from bench.scores import ScoreSettings, discriminative_score, predictive_score  # noqa: E402
from model_core.discriminator import split_sides  # noqa: E402

FAST = ScoreSettings(disc_iterations=200, pred_iterations=60, batch_size=64, runs=2, seed=0)


def _ar1_windows(n: int, length: int, n_features: int, phi: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = np.zeros((n, length, n_features))
    x[:, 0] = rng.standard_normal((n, n_features))
    for t in range(1, length):
        x[:, t] = phi * x[:, t - 1] + np.sqrt(1 - phi**2) * rng.standard_normal((n, n_features))
    return x


def test_discriminative_score_near_zero_for_the_same_distribution():
    real = _ar1_windows(300, 8, 8, 0.8, seed=1)
    twin = _ar1_windows(300, 8, 8, 0.8, seed=2)
    assert discriminative_score(real, twin, FAST)["mean"] < 0.1


def test_discriminative_score_high_for_very_different_data():
    real = _ar1_windows(300, 8, 8, 0.8, seed=1)
    shifted = _ar1_windows(300, 8, 8, 0.8, seed=2) + np.ptp(real)  # outside the real range altogether
    result = discriminative_score(real, shifted, FAST)
    assert result["mean"] > 0.3
    assert len(result["runs"]) == FAST.runs


def test_predictive_score_runs_and_drops_constant_columns():
    real = _ar1_windows(200, 8, 3, 0.8, seed=1)
    real = np.concatenate([real, np.full(real.shape[:2] + (1,), 5.0)], axis=-1)  # constant last column
    result = predictive_score(real, _ar1_windows(200, 8, 4, 0.8, seed=2), FAST)
    assert 0.0 < result["mean"] < 1.0 and result["std"] >= 0.0
    assert predictive_score(real[..., :1], real[..., :1], FAST)["mean"] is None  # nothing to predict from


def test_acf_and_correlation_errors_are_zero_for_identical_data():
    windows = _ar1_windows(200, 24, 3, 0.7, seed=0)
    windows = np.concatenate([windows, np.ones(windows.shape[:2] + (1,))], axis=-1)  # a constant column
    assert lag1_acf_error(windows, windows) == pytest.approx(0.0)
    assert correlation_error(windows, windows) == pytest.approx(0.0)
    acf = pooled_acf(windows, 5)
    assert acf[0, :3] == pytest.approx(1.0) and np.isnan(acf[:, 3]).all()
    assert acf[1, 0] == pytest.approx(0.7, abs=0.05)


def test_correlation_error_penalises_a_collapsed_synthetic_column():
    windows = _ar1_windows(200, 24, 2, 0.7, seed=0)
    windows[..., 1] = windows[..., 0] + 0.1 * windows[..., 1]  # strongly correlated pair
    collapsed = windows.copy()
    collapsed[..., 1] = 0.0
    assert correlation_error(windows, collapsed) > 0.9


def test_var1_fit_recovers_a_known_coefficient():
    rng = np.random.default_rng(0)
    coef = np.array([[0.8, 0.1], [0.0, 0.5]])
    series = np.zeros((20_000, 2))
    for t in range(1, len(series)):
        series[t] = np.array([1.0, -0.5]) + series[t - 1] @ coef + 0.3 * rng.standard_normal(2)
    model = fit_var1(series, [(0, 10_000), (10_000, 20_000)])
    assert model.coef == pytest.approx(coef, abs=0.02)
    assert model.intercept == pytest.approx([1.0, -0.5], abs=0.05)
    noise_cov = model.noise_factor.T @ model.noise_factor
    assert noise_cov == pytest.approx(0.09 * np.eye(2), abs=0.01)
    windows = model.simulate(series[:5], 24, rng)
    assert windows.shape == (5, 24, 2) and np.array_equal(windows[:, 0], series[:5])


def test_snap_to_support_rounds_categories_and_clips_ranges():
    series = np.array([[0.0, 1.0], [1.0, 3.0], [0.0, 2.0]])
    windows = np.array([[[0.7, 5.0], [-3.0, 0.0]]])
    snapped = snap_to_support(windows, series, ["discrete", "continuous"])
    assert snapped.tolist() == [[[1.0, 3.0], [0.0, 1.0]]]


def test_iid_sample_draws_each_column_from_its_own_values():
    series = np.array([[1.0, 10.0], [2.0, 20.0], [3.0, 30.0]])
    sample = iid_sample(series, 50, 6, np.random.default_rng(0))
    assert sample.shape == (50, 6, 2)
    assert set(np.unique(sample[..., 0])) <= {1.0, 2.0, 3.0}
    assert set(np.unique(sample[..., 1])) <= {10.0, 20.0, 30.0}


def test_time_halves_keep_windows_inside_each_half():
    starts = np.arange(0, 17)
    windows = np.zeros((17, 4, 1))
    first, second = time_halves(starts, windows, n_rows=20)
    assert len(first) == 7 and len(second) == 7  # starts 0..6 end by row 10; starts 10..16 begin there


def test_stretch_labels_leave_out_windows_across_two_stretches():
    length = 4
    rows = STRETCH_WINDOWS * length  # 28 rows per stretch
    labels = stretch_labels(np.array([0, rows - length, rows - length + 1, rows - 1, rows, 2 * rows + 3]), length)
    assert labels.tolist() == [0, 0, -1, -1, 1, 2]


def test_unseen_stretches_share_no_stretch_and_lose_only_the_crossing_windows():
    length = 4
    starts = np.arange(0, 20 * STRETCH_WINDOWS * length - length + 1)
    windows = starts[:, None, None] + np.arange(length)[None, :, None].astype(float)  # each window its rows
    seen, seen_labels, unseen, unseen_labels = unseen_stretches(starts, windows, np.random.default_rng(0))
    assert set(seen_labels) & set(unseen_labels) == set()
    assert len(set(seen_labels)) == len(set(unseen_labels)) == 10
    assert len(seen) + len(unseen) == (stretch_labels(starts, length) >= 0).sum()
    # No row of an unseen window is in a seen one.
    assert set(seen.ravel().tolist()).isdisjoint(unseen.ravel().tolist())


def test_a_side_split_by_stretch_has_no_test_stretch_among_its_training_windows():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(10), 30)
    labels[::7] = -1  # windows across two stretches
    real = labels[:, None, None].astype(float) * np.ones((1, 5, 2))  # each window holds its stretch label
    synthetic = rng.standard_normal((500, 5, 2))
    real_train, real_test, syn_train, syn_test = split_sides(real, synthetic, rng, labels, None)
    train_labels, test_labels = set(real_train[:, 0, 0]), set(real_test[:, 0, 0])
    assert train_labels.isdisjoint(test_labels) and -1.0 not in train_labels | test_labels
    assert len(test_labels) == 2  # 20 % of the 10 stretches
    assert len(real_train) == len(syn_train) and len(real_test) == len(syn_test)  # chance is exactly 0.5
    # Without labels, both sides are split at random (the published protocol), 80/20 of equal counts.
    real_train, real_test, syn_train, syn_test = split_sides(real, synthetic, rng, None, None)
    assert (len(real_train), len(real_test)) == (len(syn_train), len(syn_test)) == (240, 60)
    with pytest.raises(ValueError, match="two stretches"):
        split_sides(real, synthetic, rng, np.zeros(len(real), dtype=int), None)


def test_window_statistics_ks_sees_steps_that_the_window_level_and_spread_hide():
    rng = np.random.default_rng(0)
    phase = rng.uniform(0, 2 * np.pi, size=(400, 1))
    ramps = np.sin(phase + np.linspace(0, np.pi, 24))  # smooth windows
    constant, state = np.ones_like(ramps), (ramps > 0).astype(float)
    real = np.stack([ramps, constant, state], axis=-1)
    # The same values in each window, in a random order: each window keeps its mean and std, but jumps.
    shuffled = np.take_along_axis(ramps, rng.permuted(np.tile(np.arange(24), (400, 1)), axis=1), axis=1)
    synthetic = np.stack([shuffled, constant, state], axis=-1)
    kinds = {"ramp": "continuous", "flat": "continuous", "pump": "discrete"}
    result = window_statistics_ks(real, synthetic, ["ramp", "flat", "pump"], kinds)
    assert list(result["features"]) == ["ramp"]  # constant and discrete features are left out
    # (up to the rounding of a sum in another order)
    assert result["features"]["ramp"]["mean"] < 0.01 and result["features"]["ramp"]["std"] < 0.01
    assert result["features"]["ramp"]["step"] > 0.9
    assert window_statistics_ks(real, real, ["ramp", "flat", "pump"], kinds)["mean"] == {"mean": 0, "std": 0, "step": 0}
    only_states = window_statistics_ks(real[..., 2:], synthetic[..., 2:], ["pump"], {"pump": "discrete"})
    assert only_states == {"mean": {"mean": None, "std": None, "step": None}, "features": {}}


def test_flow_state_agreement_on_a_hand_made_example():
    names = ["F_PU1", "S_PU1", "F_PU2", "S_PU2", "F_V9", "S_PU3"]
    real = np.array([[[5.0, 1, 0.0, 0, 1.0, 1], [0.0, 0, 0.0, 0, 2.0, 0]]])
    # S_PU2 never switches in the real data, F_V9 has no state, S_PU3 has no flow: one pair only.
    pairs = flow_state_pairs(names, real)
    assert pairs == [("F_PU1", "S_PU1")]
    synthetic = np.zeros((1, 4, 6))
    synthetic[0, :, 0] = [5.0, 0.0, 0.0, 3.0]  # flow
    synthetic[0, :, 1] = [1, 0, 1, 0]  # state: agrees, agrees, on without flow, flow while off
    result = flow_state_agreement(synthetic, names, pairs)
    assert result == {"mean": 0.5, "pairs": {"F_PU1/S_PU1": 0.5}}
    assert flow_state_agreement(synthetic, names, []) is None


def test_closest_real_distance_tells_copies_from_fresh_draws():
    real = _ar1_windows(600, 12, 3, 0.9, seed=1)
    starts = np.arange(len(real)) * 12  # non-overlapping windows: every other window is "another period"
    rng = np.random.default_rng(0)
    fresh = closest_real_distance(real, starts, _ar1_windows(400, 12, 3, 0.9, seed=2), [0, 1, 2], rng)
    noisy_copies = real[rng.choice(len(real), 400)] + 0.01 * rng.standard_normal((400, 12, 3))
    copied = closest_real_distance(real, starts, noisy_copies, [0, 1, 2], rng)
    assert 0.8 < fresh["ratio"] < 1.25 and fresh["copy_share"] < 0.15
    assert copied["ratio"] < 0.05 and copied["copy_share"] > 0.95


def test_closest_real_distance_ignores_overlapping_real_windows():
    # Stride-1 windows of a ramp: the window shifted by one step is 1 away in every cell, the closest
    # window of another period (a whole window length away) is 10 away in every cell.
    real = (np.arange(400)[:, None] + np.arange(10)[None])[:, :, None].astype(float)
    scale = real.std()
    result = closest_real_distance(real, np.arange(400), real[::3], [0], np.random.default_rng(0))
    assert result["real_median"] == pytest.approx(10 * np.sqrt(10) / scale, rel=1e-3)  # float32 distances
    assert result["synthetic_median"] < 1e-3 and result["copy_share"] == 1.0  # exact copies are flagged


def test_giveaway_groups_features_by_name_prefix_and_skips_constants():
    names = ["L_T1", "L_T2", "F_PU1", "S_PU1", "P_J1", "OT", "PLANT_ID"]
    kinds = dict.fromkeys(names, "continuous") | {"S_PU1": "discrete", "PLANT_ID": "constant"}
    groups = feature_groups(names, kinds)
    assert groups == {"L": [0, 1], "F": [2], "S": [3], "P": [4], "OT": [5]}
    chosen = subsets(groups)
    assert chosen["all"] == [0, 1, 2, 3, 4, 5]
    assert chosen["L + P"] == [0, 1, 4] and chosen["all but L"] == [2, 3, 4, 5]
    # 5 groups: all, each group, each pair, each group left out.
    assert len(chosen) == 1 + 5 + 10 + 5


def test_giveaway_steps_view_reads_the_steps_between_values():
    ramps = np.arange(10.0).reshape(1, 5, 2)  # two features, each rising by 2 per step
    assert window_view(ramps, steps=False) is ramps
    steps = window_view(ramps, steps=True)
    assert steps.shape == (1, 4, 2) and np.all(steps == 2.0)


def _tied_rows(rng: np.random.Generator, n: int, noise: float) -> np.ndarray:
    """Rows of (a, b, a * b + noise, constant): the third feature follows from the first two."""
    a, b = rng.uniform(0, 1, n), rng.uniform(1, 2, n)
    return np.stack([a, b, a * b + noise * rng.normal(size=n), np.full(n, 3.0)], axis=1)


def test_row_relations_flag_synthetic_rows_that_break_a_relation_the_real_rows_keep():
    names = ["a", "b", "product", "tag"]
    kinds = dict.fromkeys(names, "continuous") | {"tag": "constant"}
    rng = np.random.default_rng(0)
    fit, test = _tied_rows(rng, 3000, 0.0), _tied_rows(rng, 3000, 0.0)
    judged = {"faithful": _tied_rows(rng, 3000, 0.0), "broken": _tied_rows(rng, 3000, 0.1)}
    result = row_relations(fit, test, judged, names, kinds, rng)
    faithful, broken = result["faithful"], result["broken"]
    assert set(result["real_error"]) == set(faithful["features"]) == {"a", "b", "product"}  # constants skipped
    assert result["real_error"]["product"] < 0.05  # the relation holds in real rows the model did not see
    assert faithful["features"]["product"]["ratio"] < 2
    assert broken["features"]["product"]["ratio"] > 5
    assert broken["features"]["product"]["error"] > 0.1  # noise of 0.1 against a spread of about 0.4
    # Rows off the relation are told apart one at a time; rows on it are not.
    assert faithful["row_gap"] < 0.1 < broken["row_gap"]


def test_giveaway_rows_split_by_stretch_keeps_whole_stretches_on_one_side():
    values = np.arange(1000.0)[:, None]
    parts = split_rows_by_stretch(values, 10, np.random.default_rng(0))
    assert sum(len(part) for part in parts) == 1000
    stretches = [set((part[:, 0] // 70).astype(int)) for part in parts]  # 15 stretches of 70 rows
    assert [len(s) for s in stretches] == [7, 4, 4]
    assert not (stretches[0] & stretches[1] or stretches[0] & stretches[2] or stretches[1] & stretches[2])
