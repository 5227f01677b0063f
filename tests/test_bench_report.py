"""The benchmark page's bookkeeping: target verdicts and carried-over ablations."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

# bench/ is a folder of scripts, not an installed package (see test_bench_metrics.py).
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import quality, speed  # noqa: E402


def _metrics(ks: float, disc: float) -> dict:
    return {
        "ks_mean": ks,
        "tvd_mean": None,
        "acf_lag1_error": 0.01,
        "correlation_error": 0.02,
        "discriminative": {"mean": disc, "std": 0.01},
        "predictive": {"mean": 0.12, "std": 0.0},
    }


def test_targets_give_a_verdict_per_bound_and_name_the_metrics_a_baseline_wins():
    data = {"results": {"model": _metrics(0.03, 0.04), "iid": _metrics(0.002, 0.5), "var1": _metrics(0.2, 0.3)}}
    data["results"]["model"]["predictive"] = {"mean": 0.125, "std": 0.0}
    text = "\n".join(quality._targets("etth1", data))
    assert "| discriminative score | <= 0.05 | 0.040 ± 0.010 | met |" in text
    assert "| predictive score | <= 0.121 | 0.125 ± 0.000 | **missed** |" in text
    # The model's predictive 0.125 loses to both baselines' 0.12; KS loses to i.i.d.'s 0.002 only.
    assert "| better than i.i.d. marginals (baseline) | every metric | 3/5 (not: ks_mean, predictive) |" in text
    assert "| better than VAR(1) (baseline) | every metric | 4/5 (not: predictive) | **missed** |" in text
    data["results"]["model"]["predictive"] = {"mean": 0.1, "std": 0.0}
    assert "| better than VAR(1) (baseline) | every metric | 5/5 | met |" in "\n".join(quality._targets("etth1", data))
    assert quality._targets("demo", {"results": {"model": _metrics(0.03, 0.04)}}) == []


def test_a_default_only_run_keeps_the_last_ablations_with_the_default_they_compared_to():
    previous = {
        "results": {"model": _metrics(0.05, 0.4)},
        "train_seconds": 300.0,
        "generate_seconds": 30.0,
        "ablations": {"trend off": {**_metrics(0.07, 0.5), "train_seconds": 290.0}},
        "ablation_runs": 2,
        "run": {"command": "bench/quality.py --ablations", "finished_at": "then"},
    }
    current: dict = {"results": {"model": _metrics(0.03, 0.3)}}
    quality._carry_ablations(previous, current)
    assert current["ablations"]["trend off"]["ks_mean"] == 0.07
    assert current["ablations"]["default"]["ks_mean"] == 0.05  # the old default, not the new model
    assert current["ablations_run"]["finished_at"] == "then"
    untouched: dict = {"results": {}}
    quality._carry_ablations({"results": {}}, untouched)
    assert "ablations" not in untouched


def test_the_ablation_default_row_uses_the_variants_protocol():
    default = {"discriminative": {"mean": 0.036, "std": 0.013, "runs": [0.015, 0.035, 0.032, 0.043, 0.054]}}
    cut = quality._first_runs(default, 2)
    assert cut["discriminative"]["runs"] == [0.015, 0.035]
    assert abs(cut["discriminative"]["mean"] - 0.025) < 1e-12 and abs(cut["discriminative"]["std"] - 0.01) < 1e-12
    assert default["discriminative"]["mean"] == 0.036  # the input is not changed


def test_an_ablation_that_would_retrain_the_default_itself_is_skipped():
    with_calendar = SimpleNamespace(schema=SimpleNamespace(calendar_periods={"day": 24}))
    no_calendar = SimpleNamespace(schema=SimpleNamespace(calendar_periods={}))
    continuous_only = {"a": "continuous", "b": "continuous"}
    with_states = {"a": "continuous", "pump": "discrete"}
    for overrides in ({"trend": {"discrete_states": False}}, {"trend": {"state_lead": False}}):
        assert quality._same_as_default(overrides, continuous_only, with_calendar)  # no states to read
        assert not quality._same_as_default(overrides, with_states, with_calendar)
    calendar_off = {"trend": {"calendar": False}}
    assert quality._same_as_default(calendar_off, with_states, no_calendar)
    assert not quality._same_as_default(calendar_off, with_states, with_calendar)
    assert not quality._same_as_default({"trend": {"enabled": False}}, continuous_only, no_calendar)


def test_the_ablation_table_shows_the_unseen_test_score_where_a_run_measured_it():
    model = {**_metrics(0.02, 0.2), "flow_state_agreement": None}
    model["discriminative"] = {"mean": 0.2, "std": 0.0, "runs": [0.2, 0.2]}
    model["discriminative_unseen"] = {"mean": 0.1, "std": 0.02, "runs": [0.08, 0.12, 0.5]}
    data = {
        "results": {"model": model},
        "train_seconds": 500.0,
        "generate_seconds": 10.0,
        "ablation_runs": 2,
        "ablation_workers": 2,
        "ablations": {
            "trend off": {**_metrics(0.05, 0.4), "train_seconds": 300.0, "generate_seconds": 9.0},
        },
    }
    text = "\n".join(quality._ablation_lines("batadal", data))
    assert "| disc | disc, unseen test | pred |" in text
    assert "| **default** | 0.020 | - | 0.010 | 0.020 | 0.200 ± 0.000 | 0.100 ± 0.020 | 0.120 ± 0.000 |" in text
    assert "| trend off | 0.050 | - | 0.010 | 0.020 | 0.400 ± 0.010 | - | 0.120 ± 0.000 |" in text  # an older row
    assert "trained 2 at a time" in text


def test_the_dataset_line_says_at_which_strength_the_model_sampled_and_why():
    chosen = {"strength": 0.1, "strength_choice": {"candidates": [0.1, 1.0], "discrimination_gaps": [0.2451, 0.3447]}}
    assert quality._strength(chosen) == ", strength 0.1, chosen by training: one classifier run scored 0.245 at 0.1, 0.345 at 1"
    assert quality._strength({"strength": 1.0, "strength_choice": None}) == ", strength 1"
    assert quality._strength({}) == ""  # results recorded before the strength was


def test_the_speed_table_says_which_strength_training_chose_and_what_the_choice_took():
    engine = {"strength": 0.1, "strength_choice": {"seconds": 71.9, "reserved_seconds": 83.4}}
    assert speed._strength_rows(engine) == [
        ["sampling.strength chosen by training", "0.1"],
        ["strength choice (within the training time)", "72 s, 83 s reserved"],
    ]
    assert speed._strength_rows({"strength": 0.1}) == []  # a run from before the choice was recorded


def test_a_reference_added_since_the_last_run_is_the_only_one_recomputed():
    settings = {"scores": {"runs": 5}, "seq_len": 24, "max_windows": 10_000}
    previous = {
        "settings": settings,
        "datasets": {"demo": {"results": {"model": {}, "iid": {"ks_mean": 0.002}, "var1": {"ks_mean": 0.2}}}},
    }
    reused = quality._previous_references(previous, "demo", settings)
    assert reused == {"iid": {"ks_mean": 0.002}, "var1": {"ks_mean": 0.2}}  # run_dataset computes the rest
    assert quality._previous_references(previous, "demo", {**settings, "seq_len": 48}) is None


def test_a_dataset_run_before_a_reference_existed_shows_it_as_a_dash():
    model = {**_metrics(0.03, 0.16), "discriminative_unseen": {"mean": 0.05, "std": 0.02}, "worst_features": ["a"]}
    data = {
        "source": "x.csv",
        "rows": 100,
        "features": {"continuous": 1, "discrete": 0, "constant": 0},
        "real_windows": 77,
        "train_seconds": 1.0,
        "synthetic_windows": 77,
        "generate_seconds": 1.0,
        "sampler": {"name": "ddim", "steps": 25},
        "real_flow_state_agreement": None,
        "figures": {"sequences": "s.png", "acf": "a.png", "cdf": []},
        "results": {"model": model, "iid": _metrics(0.002, 0.5)},  # no floors, no VAR(1): an older run
    }
    text = "\n".join(quality._render_dataset("demo", data))
    assert "| discriminative score ↓ | 0.160 ± 0.010 | - | - | - | 0.500 ± 0.010 | - |" in text
    assert "| discriminative score, real test stretches unseen ↓ | 0.050 ± 0.020 | - | - | - | - | - |" in text
    assert "| KS of window mean absolute steps ↓ | - | - | - | - | - | - |" in text


def test_the_page_names_the_window_statistics_furthest_from_the_real_ones_beside_the_floor():
    def window_ks(features: dict) -> dict:
        return {"window_ks": {"mean": {"mean": 0.1, "std": 0.2, "step": 0.3}, "features": features}}

    model = window_ks({"tank": {"mean": 0.2, "std": 0.1, "step": 0.4}, "flow": {"mean": 0.05, "std": 0.3, "step": 0.0}})
    floor = window_ks({"tank": {"mean": 0.03, "std": 0.02, "step": 0.01}, "flow": {"mean": 0.1, "std": 0.04, "step": 0.0}})
    line = quality._worst_window_statistics({"model": model, "real_unseen_stretches": floor}, n=3)[0]
    assert line.endswith("tank mean |step| 0.400 (0.010), flow std 0.300 (0.040), tank mean 0.200 (0.030).")
    without_floor = quality._worst_window_statistics({"model": model}, n=1)[0]
    assert without_floor.endswith("tank mean |step| 0.400 (-).")
    assert quality._worst_window_statistics({"model": {}}) == []  # a run from before the window statistics
    assert quality._cell(model, "window_ks.step") == "0.300" and quality._cell({}, "window_ks.step") == "-"
