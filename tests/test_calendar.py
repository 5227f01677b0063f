"""Calendar features: which cycles a table's timestamps can show, and the phase of each row in them."""

from __future__ import annotations

import numpy as np
import pandas as pd

from model_core.calendar import DAY_SECONDS, WEEK_SECONDS, calendar_features, calendar_periods, epoch_seconds
from model_core.config import TSSynthConfig
from model_core.generate import generate
from model_core.schema import infer_schema
from model_core.simulator import simulate_plant
from model_core.train import train


def test_cycles_are_used_only_where_the_timestamps_resolve_and_span_them():
    year = 365 * DAY_SECONDS
    assert calendar_periods(3600.0, year) == [DAY_SECONDS, WEEK_SECONDS]
    assert calendar_periods(86_400.0, year) == [WEEK_SECONDS]  # one row a day cannot show the hour
    assert calendar_periods(60.0, 3 * DAY_SECONDS) == [DAY_SECONDS]  # three days cannot show the week
    assert calendar_periods(3600.0, 1.5 * DAY_SECONDS) == []
    assert calendar_periods(None, year) == []


def test_features_are_the_phase_in_the_day_and_the_week():
    stamps = pd.Series(pd.to_datetime(["2024-01-01 06:00", "2024-01-08 06:00", "2024-01-01 18:00", "2024-01-02 06:00"]))
    features = calendar_features(epoch_seconds(stamps), [DAY_SECONDS, WEEK_SECONDS])
    assert features.shape == (4, 4) and features.dtype == np.float32
    day = features[:, :2]
    np.testing.assert_allclose(day[0], [1.0, 0.0], atol=1e-6)  # a quarter through the day
    np.testing.assert_allclose(day[2], [-1.0, 0.0], atol=1e-6)  # three quarters
    np.testing.assert_allclose(features[0], features[1], atol=1e-6)  # same hour, same weekday a week later
    np.testing.assert_allclose(day[0], day[3], atol=1e-6)  # the next day: same hour ...
    assert not np.allclose(features[0, 2:], features[3, 2:], atol=1e-3)  # ... another day of the week
    np.testing.assert_allclose((features**2).sum(axis=1), 2.0, atol=1e-5)


def test_zone_aware_timestamps_are_read_at_their_local_time():
    local = pd.Series(pd.to_datetime(["2024-03-05 06:00"]))
    aware = pd.Series(pd.to_datetime(["2024-03-05 06:00+02:00"]))
    periods = [DAY_SECONDS, WEEK_SECONDS]
    np.testing.assert_allclose(calendar_features(epoch_seconds(aware), periods), calendar_features(epoch_seconds(local), periods))


def test_the_schema_records_the_cycles_of_its_timestamps():
    frame = simulate_plant(rows=24 * 20, seed=0)  # hourly, 20 days
    assert infer_schema(frame).calendar_periods == [DAY_SECONDS, WEEK_SECONDS]
    assert infer_schema(frame.iloc[: 24 * 5]).calendar_periods == [DAY_SECONDS]
    assert infer_schema(frame.drop(columns=["timestamp"])).calendar_periods == []


def _scheduled_valve(days: int) -> pd.DataFrame:
    """A valve open 06:00-18:00 every day and a tank level that wanders on its own."""
    rng = np.random.default_rng(0)
    stamps = pd.date_range("2024-01-01", periods=24 * days, freq="h")
    level = np.cumsum(rng.normal(0.0, 0.1, len(stamps)))
    return pd.DataFrame(
        {"timestamp": stamps.strftime("%Y-%m-%d %H:%M:%S"), "valve": ((stamps.hour >= 6) & (stamps.hour < 18)).astype(int), "level": level}
    )


def _agreement_with_the_schedule(calendar: bool) -> float:
    # One step of context cannot tell where in its 12-hour run the valve is: only the clock can.
    overrides = {
        "trend": {"epochs": 30, "hidden_size": 16, "context_len": 1, "calendar": calendar},
        "training": {"max_steps": 20, "eval_every": 10, "batch_size": 32, "choose_strength": False},
        "diffusion": {"hidden_size": 16, "num_layers": 1, "timesteps": 20},
        "sampling": {"steps": 5},
    }
    bundle = train(_scheduled_valve(days=30), TSSynthConfig().with_overrides(overrides))
    synthetic = generate(bundle, 64, seq_len=24, seed=0)
    hour = pd.to_datetime(synthetic["timestamp"]).dt.hour
    return float((synthetic["valve"] == ((hour >= 6) & (hour < 18)).astype(int)).mean())


def test_rollouts_follow_the_daily_schedule_and_so_do_the_output_timestamps():
    with_calendar = _agreement_with_the_schedule(calendar=True)
    assert with_calendar > 0.95
    # Without the clock the switches drift away from the hours (and the timestamps say nothing).
    assert _agreement_with_the_schedule(calendar=False) < with_calendar - 0.15
