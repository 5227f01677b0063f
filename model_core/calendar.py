"""Calendar features: where each row sits in the day and the week, as (sin, cos) pairs.

Plants run on clocks. Demand peaks at the same hours every day, valves open on schedules, and a pump's
start often depends on the hour more than on anything else in the table. A trend model that sees only
the last C steps has to infer the hour from them, and a rollout soon loses it: BATADAL's synthetic days
did not come back to where they started as real days do (the mean |last - first| step of a 24-hour
window was up to 1.7 times the data's). With the phase as an input, the rollout knows which hour it is
at every step (docs/DECISIONS.md, "Stage 1 reads the time of day and week").

A cycle is used only where the timestamps can show it: at least ``MIN_STEPS_PER_CYCLE`` rows per cycle and
at least ``MIN_CYCLES`` cycles in the series. Timestamps are read as local wall-clock time (a zone-aware
column keeps its own local time), because schedules follow the local clock.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

DAY_SECONDS = 86_400.0
WEEK_SECONDS = 7 * DAY_SECONDS
MIN_STEPS_PER_CYCLE = 4
MIN_CYCLES = 2


def calendar_periods(step_seconds: float | None, span_seconds: float) -> list[float]:
    """The cycles (in seconds) that rows ``step_seconds`` apart over ``span_seconds`` can resolve."""
    if not step_seconds or step_seconds <= 0:
        return []
    return [
        period
        for period in (DAY_SECONDS, WEEK_SECONDS)
        if step_seconds * MIN_STEPS_PER_CYCLE <= period and span_seconds >= MIN_CYCLES * period
    ]


def epoch_seconds(timestamps: pd.Series) -> np.ndarray:
    """Wall-clock seconds since 1970-01-01 (float64), zone-aware stamps at their own local time."""
    stamps = pd.to_datetime(timestamps)
    if stamps.dt.tz is not None:
        stamps = stamps.dt.tz_localize(None)
    return np.asarray((stamps - pd.Timestamp(0)).dt.total_seconds(), dtype=np.float64)


def calendar_features(seconds: np.ndarray, periods: list[float]) -> np.ndarray:
    """``seconds`` [...] -> float32 [..., 2 * len(periods)]: (sin, cos) of the phase in each cycle.

    The phase is taken in float64 before the cast, so it stays exact for present-day epoch seconds.
    """
    seconds = np.asarray(seconds, dtype=np.float64)
    parts = []
    for period in periods:
        angle = 2.0 * np.pi * np.mod(seconds, period) / period
        parts += [np.sin(angle), np.cos(angle)]
    if not parts:
        return np.zeros((*seconds.shape, 0), dtype=np.float32)
    return np.stack(parts, axis=-1).astype(np.float32)
