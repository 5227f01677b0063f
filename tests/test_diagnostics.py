"""Each planted defect must be reported under its own label, and the numbers must be the real ones."""

from __future__ import annotations

import io
import json

import numpy as np
import pandas as pd
import pytest

from model_core.diagnostics import (
    ColumnMismatchError,
    DiagnosisThresholds,
    DiagnosticsReport,
    FeatureDiagnostic,
    diagnose,
    plot_cdfs,
    render_feature_png,
)
from model_core.simulator import simulate_plant

N = 4000


@pytest.fixture(scope="module")
def plant() -> pd.DataFrame:
    return simulate_plant(rows=1500, seed=5)


def _one_column(reference: np.ndarray, synthetic: np.ndarray) -> FeatureDiagnostic:
    report = diagnose(pd.DataFrame({"x": reference}), pd.DataFrame({"x": synthetic}))
    return report.feature("x")


def _normal(seed: int, loc: float = 0.0, scale: float = 1.0, n: int = N) -> np.ndarray:
    return np.random.default_rng(seed).normal(loc, scale, n)


def test_identical_tables_are_ok_everywhere(plant: pd.DataFrame) -> None:
    report = diagnose(plant, plant.copy())
    assert {f.label for f in report.features} == {"ok"}
    assert report.summary.ks_max == 0.0
    assert report.summary.tvd_mean == 0.0
    assert report.summary.acf_abs_error_mean == 0.0
    kinds = {f.name: f.kind for f in report.features}
    assert "timestamp" not in kinds
    assert (
        kinds["L_T1"] == "continuous" and kinds["S_PUMP1"] == "discrete" and kinds["PLANT_ID"] == "constant"
    )
    assert report.summary.n_reference == report.summary.n_synthetic == len(plant)


def test_independent_samples_of_one_distribution_are_ok() -> None:
    diagnostic = _one_column(_normal(1), _normal(2))
    assert diagnostic.label == "ok"
    assert diagnostic.ks_statistic is not None and diagnostic.ks_statistic < 0.05
    assert diagnostic.ks_pvalue is not None and diagnostic.ks_pvalue > 0.001


def test_mass_stacked_on_the_reference_max_is_a_boundary_pileup() -> None:
    reference = _normal(1)
    synthetic = _normal(2)
    synthetic[:200] = reference.max()  # 5 % of the rows clipped onto the edge
    diagnostic = _one_column(reference, synthetic)
    assert diagnostic.label == "boundary_pileup"
    assert diagnostic.boundary_share_reference == pytest.approx(2 / N)
    assert diagnostic.boundary_share_synthetic == pytest.approx(200 / N, abs=1e-9)


def test_moved_median_is_a_shift() -> None:
    diagnostic = _one_column(_normal(1), _normal(2, loc=0.6))
    assert diagnostic.label == "shift"
    assert diagnostic.median_shift == pytest.approx(0.6 / 1.349, abs=0.08)


def test_disjoint_samples_are_a_shift_not_a_tail_problem() -> None:
    # The largest gap is at the reference's edge, but the whole synthetic sample moved past it.
    diagnostic = _one_column(_normal(1), _normal(2, loc=5.0))
    assert diagnostic.ks_reference_quantile is not None and diagnostic.ks_reference_quantile >= 0.95
    assert diagnostic.label == "shift"


def test_extra_mass_beyond_the_upper_tail_is_a_tail_mismatch() -> None:
    synthetic = np.concatenate([_normal(2, n=N - 320), _normal(3, loc=4.0, scale=0.5, n=320)])
    diagnostic = _one_column(_normal(1), synthetic)
    assert diagnostic.label == "tail_mismatch"
    assert diagnostic.ks_reference_quantile is not None and diagnostic.ks_reference_quantile >= 0.95
    assert diagnostic.ks_statistic is not None and diagnostic.ks_statistic > 0.05


def test_wider_spread_is_a_scale_change() -> None:
    diagnostic = _one_column(_normal(1), _normal(2, scale=2.0))
    assert diagnostic.label == "scale"
    assert diagnostic.spread_ratio == pytest.approx(2.0, rel=0.1)


def test_thresholds_decide_the_label() -> None:
    reference, synthetic = _normal(1), _normal(2, loc=0.6)
    lenient = DiagnosisThresholds(shift_iqr_share=1.0)
    report = diagnose(pd.DataFrame({"x": reference}), pd.DataFrame({"x": synthetic}), thresholds=lenient)
    assert report.feature("x").label == "ok"


def test_discrete_tvd_and_invalid_share_on_a_hand_computed_example() -> None:
    reference = pd.DataFrame({"mode": [0, 0, 1, 1, 2, 2, 2, 2]})
    synthetic = pd.DataFrame({"mode": [0, 1, 1, 1, 2, 3, 3, 2]})
    diagnostic = diagnose(reference, synthetic).feature("mode")
    # p = (.25, .25, .5, 0), q = (.125, .375, .25, .25) over categories (0, 1, 2, 3)
    assert diagnostic.kind == "discrete"
    assert diagnostic.tvd == pytest.approx(0.375)
    assert diagnostic.distance == pytest.approx(0.375)
    assert diagnostic.invalid_share == pytest.approx(0.25)
    assert diagnostic.label == "invalid_categories"


def test_discrete_frequencies_off_without_invalid_values() -> None:
    reference = pd.DataFrame({"mode": [0] * 50 + [1] * 50})
    synthetic = pd.DataFrame({"mode": [0] * 80 + [1] * 20})
    diagnostic = diagnose(reference, synthetic).feature("mode")
    assert diagnostic.tvd == pytest.approx(0.3)
    assert diagnostic.invalid_share == 0.0
    assert diagnostic.label == "frequency_mismatch"


def test_declared_kinds_override_inference() -> None:
    reference = pd.DataFrame({"mode": [0, 1, 2, 3] * 25})
    report = diagnose(reference, reference.copy(), kinds={"mode": "continuous"})
    assert report.feature("mode").kind == "continuous"
    with pytest.raises(ValueError, match="not features"):
        diagnose(reference, reference.copy(), kinds={"other": "discrete"})
    with pytest.raises(ValueError, match="must be one of"):
        diagnose(reference, reference.copy(), kinds={"mode": "categorical"})


def test_constant_reference_reports_the_mismatching_share() -> None:
    reference = pd.DataFrame({"tag": [7.0] * 10, "x": np.arange(10.0)})
    synthetic = pd.DataFrame({"tag": [7.0] * 8 + [7.5, np.nan], "x": np.arange(10.0)})
    diagnostic = diagnose(reference, synthetic).feature("tag")
    assert diagnostic.kind == "constant"
    assert diagnostic.mismatch_share == pytest.approx(0.2)
    assert diagnostic.label == "not_constant"
    assert diagnostic.acf_reference is None


def _sequences(seed: int, n_sequences: int = 200) -> pd.DataFrame:
    """Sequences (a, -a, a): perfectly anti-correlated inside, unrelated across the joins."""
    rng = np.random.default_rng(seed)
    amplitude = np.repeat(rng.normal(0, 1, n_sequences), 3)
    return pd.DataFrame(
        {
            "sequence_id": np.repeat(np.arange(n_sequences), 3),
            "step": np.tile(np.arange(3), n_sequences),
            "x": amplitude * np.tile([1.0, -1.0, 1.0], n_sequences),
        }
    )


def test_lag1_acf_is_computed_within_sequences() -> None:
    reference, synthetic = _sequences(1), _sequences(2)
    within = diagnose(reference, synthetic).feature("x")
    pooled = diagnose(reference.drop(columns="sequence_id"), synthetic.drop(columns="sequence_id")).feature(
        "x"
    )
    assert within.acf_synthetic == pytest.approx(-1.0)
    assert within.acf_reference == pytest.approx(-1.0)
    # Concatenated, a third of the pairs straddle two sequences and are uncorrelated.
    assert pooled.acf_synthetic is not None and -0.85 < pooled.acf_synthetic < -0.5
    # Row order does not matter once sequence_id and step say where each row belongs.
    shuffled = synthetic.sample(frac=1.0, random_state=0)
    assert diagnose(reference, shuffled).feature("x").acf_synthetic == pytest.approx(-1.0)


def test_column_mismatch_lists_missing_and_extra() -> None:
    reference = pd.DataFrame({"a": [1.0, 2.0], "b": [1.0, 2.0], "c": [1.0, 2.0]})
    synthetic = pd.DataFrame({"a": [1.0, 2.0], "b": [1.0, 2.0], "d": [1.0, 2.0], "sequence_id": [0, 0]})
    with pytest.raises(ColumnMismatchError) as caught:
        diagnose(reference, synthetic)
    assert caught.value.missing == ["c"]
    assert caught.value.extra == ["d"]
    assert "'c'" in str(caught.value) and "'d'" in str(caught.value)
    assert isinstance(caught.value, ValueError)


def test_timestamp_column_is_not_a_feature() -> None:
    reference = pd.DataFrame({"t": np.arange(20), "x": np.linspace(0, 1, 20)})
    synthetic = pd.DataFrame({"t": np.arange(20) + 100, "x": np.linspace(0, 1, 20)})
    assert diagnose(reference, synthetic).feature("t").label == "shift"
    report = diagnose(reference, synthetic, timestamp_column="t")
    assert [f.name for f in report.features] == ["x"]


def test_summary_aggregates_and_ranks_the_worst(plant: pd.DataFrame) -> None:
    synthetic = plant.copy()
    synthetic["L_T2"] = synthetic["L_T2"] + 1.0
    synthetic["S_PUMP3"] = 1 - synthetic["S_PUMP3"]
    report = diagnose(plant, synthetic)
    summary = report.summary
    ks = [f.ks_statistic for f in report.features if f.kind == "continuous"]
    assert summary.ks_max == max(ks)
    assert summary.ks_mean == pytest.approx(np.mean(ks))
    assert summary.worst_features[:2] == sorted(
        ["L_T2", "S_PUMP3"], key=lambda n: -report.feature(n).distance
    )
    assert len(summary.worst_features) == 5


def test_json_round_trip_turns_non_finite_numbers_into_null(plant: pd.DataFrame) -> None:
    report = diagnose(plant, simulate_plant(rows=1500, seed=6))
    text = report.model_dump_json()
    assert DiagnosticsReport.model_validate_json(text) == report
    assert json.loads(text)["features"][-1]["acf_reference"] is None  # PLANT_ID: constant, no ACF
    assert FeatureDiagnostic(name="x", kind="continuous", label="ok", distance=float("inf")).distance is None


def test_csv_has_one_row_per_feature_with_the_report_values(plant: pd.DataFrame) -> None:
    report = diagnose(plant, simulate_plant(rows=1500, seed=6))
    table = pd.read_csv(io.StringIO(report.to_csv()))
    assert list(table["name"]) == [f.name for f in report.features]
    assert list(table.columns) == list(FeatureDiagnostic.model_fields)
    for row, feature in zip(table.itertuples(), report.features, strict=True):
        assert row.distance == feature.distance
        assert row.label == feature.label
        assert (
            pd.isna(row.ks_statistic) and feature.ks_statistic is None
        ) or row.ks_statistic == feature.ks_statistic


def test_plots_write_png_files(plant: pd.DataFrame, tmp_path) -> None:
    synthetic = simulate_plant(rows=1500, seed=6)
    report = diagnose(plant, synthetic)
    paths = plot_cdfs(plant, synthetic, report, tmp_path / "plots", features=["L_T1", "S_PUMP1", "PLANT_ID"])
    assert [p.name for p in paths] == ["L_T1.png", "S_PUMP1.png", "PLANT_ID.png"]
    for path in paths:
        assert path.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    png = render_feature_png(plant, synthetic, report.feature("F_PUMP1"))
    assert png.startswith(b"\x89PNG") and len(png) > 1000
    with pytest.raises(KeyError):
        plot_cdfs(plant, synthetic, report, tmp_path, features=["nope"])
